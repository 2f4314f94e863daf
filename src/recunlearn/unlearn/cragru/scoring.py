"""Generation: turn a language model's answers into one score per candidate.

- `generate` (as in the paper): the model answers with a JSON object {candidate id: score}. An answer that
  does not score every candidate is asked again (sampled, with another seed) up to `max_retries` times; after
  that the candidates keep the base model's order and the failure is counted.
- `likelihood`: a candidate's score is the model's log-probability of answering "Yes" to "would this user
  enjoy it?"; it cannot fail to parse.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from .cache import AnswerCache, answer_key

MODES = ("likelihood", "generate")
RETRY_TEMPERATURE = 0.7
# "id": score pairs, quoted or not, anywhere in a (possibly broken or truncated) answer
_PAIR = re.compile(r"[\"']?([\w.\-]+)[\"']?\s*[:=]\s*[\"']?(-?\d+(?:\.\d+)?)")


def parse_scores(answer: str, ids: list[str]) -> dict[str, float]:
    """The scores an answer gives to the candidate ids (unknown ids and repeats after the first ignored).

    A well-formed JSON object is read as such; anything else (text around it, a truncated object, single
    quotes) is scanned for `id: number` pairs. An empty or scoreless answer gives an empty mapping."""
    wanted = set(ids)
    pairs: list[tuple[str, object]] = []
    start, end = answer.find("{"), answer.rfind("}")
    if 0 <= start < end:
        try:
            parsed = json.loads(answer[start:end + 1])
            if isinstance(parsed, dict):
                pairs = [(str(k).strip(), v) for k, v in parsed.items()]
        except ValueError:
            pairs = []
    if not pairs:
        pairs = _PAIR.findall(answer)
    scores: dict[str, float] = {}
    for key, value in pairs:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if key in wanted and key not in scores and np.isfinite(number):
            scores[key] = number
    return scores


@dataclass
class Scored:
    scores: np.ndarray      # one per candidate, higher is better
    attempts: int           # model calls made (cached answers included)
    failed: bool            # generate: no complete answer, base order kept
    coverage: float         # share of candidates the best answer scored


def generate_scores(backend, cache: AnswerCache, messages: list[dict], ids: list[str], *, max_retries: int,
                    max_tokens: int) -> Scored:
    """Scores from JSON answers; the base order (the candidates' given order) when every attempt fails."""
    best = 0.0
    for attempt in range(max_retries + 1):
        temperature = 0.0 if attempt == 0 else RETRY_TEMPERATURE   # a greedy retry would repeat itself
        payload = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature, "seed": attempt}
        key = answer_key(backend.model_id, "generate", payload)
        answer = cache.get(key)
        if answer is None:
            answer = backend.chat(messages, max_tokens=max_tokens, temperature=temperature, seed=attempt)
            cache.put(key, answer)
        found = parse_scores(answer, ids)
        best = max(best, len(found) / len(ids))
        if len(found) == len(ids):
            return Scored(np.array([found[i] for i in ids], dtype=np.float64), attempt + 1, False, 1.0)
    fallback = -np.arange(len(ids), dtype=np.float64)   # the base model's order
    return Scored(fallback, max_retries + 1, True, best)


def likelihood_scores(backend, cache: AnswerCache, conversations: list[list[dict]]) -> Scored:
    key = answer_key(backend.model_id, "likelihood", conversations)
    scores = cache.get(key)
    if scores is None:
        scores = [float(s) for s in backend.positive_logprobs(conversations)]
        cache.put(key, scores)
    return Scored(np.asarray(scores, dtype=np.float64), 1, False, 1.0)


def final_order(scores: np.ndarray) -> np.ndarray:
    """Positions of the candidates best first; equal scores keep the base model's order."""
    return np.argsort(-np.asarray(scores), kind="stable")
