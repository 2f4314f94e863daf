"""A small OpenAI-compatible chat-completions server over a local model, so that the `http` backend can be
served from this machine (and tested against a real process):

    python -m recunlearn.unlearn.cragru.server --model smollm2 --port 8000
    recunlearn unlearn ... --method cragru --set backend=http --set url=http://127.0.0.1:8000/v1

It answers POST /v1/chat/completions (messages, max_tokens, temperature, seed; with `logprobs` and
`top_logprobs`, the first answer token's top log-probabilities) and GET /v1/models. `--echo` serves a
deterministic responder instead of a model: it scores the candidates listed in the prompt by their position
(JSON) and answers "Yes" with log-probability log(0.9), for tests of the protocol without a model.
"""
from __future__ import annotations

import argparse
import math
import re
import time

from pydantic import BaseModel

from .backends import DEFAULT_MODEL

_CANDIDATE = re.compile(r"^([\w.\-]+): ", re.MULTILINE)


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    model: str = DEFAULT_MODEL
    messages: list[Message]
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0
    logprobs: bool = False
    top_logprobs: int = 0


def create_app(model: str = DEFAULT_MODEL, echo: bool = False, threads: int | None = None):
    from fastapi import FastAPI

    local = None
    if not echo:
        from .backends import LocalBackend
        local = LocalBackend(model, threads)
    app = FastAPI(title="recunlearn chat completions")

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": "echo" if echo else model, "object": "model"}]}

    @app.post("/v1/chat/completions")
    def complete(body: ChatRequest) -> dict:
        messages = [m.model_dump() for m in body.messages]
        logprobs = None
        if body.logprobs:
            top = _top_logprobs(local, messages, max(body.top_logprobs, 1))
            text = top[0]["token"]
            logprobs = {"content": [{"token": text, "logprob": top[0]["logprob"], "top_logprobs": top}]}
        elif echo:
            ids = _CANDIDATE.findall(messages[-1]["content"])
            text = "{" + ", ".join(f'"{i}": {100 - n}' for n, i in enumerate(ids)) + "}"
        else:
            text = local.chat(messages, body.max_tokens, body.temperature, body.seed)
        return {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": body.model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                  "logprobs": logprobs, "finish_reason": "stop"}]}

    return app


def _top_logprobs(local, messages: list[dict], k: int) -> list[dict]:
    if local is None:
        return [{"token": "Yes", "logprob": math.log(0.9)}, {"token": "No", "logprob": math.log(0.1)}][:max(k, 1)]
    import torch

    ids = local.tokenizer(local.render(messages), return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = local.lm(input_ids=ids).logits[0, -1]
    values, tokens = torch.log_softmax(logits.float(), -1).topk(k)
    return [{"token": local.tokenizer.decode([t]), "logprob": float(v)} for v, t in zip(values, tokens.tolist())]


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model folder, .gguf file, or smollm2")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--echo", action="store_true", help="serve the deterministic test responder")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.model, args.echo, args.threads), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
