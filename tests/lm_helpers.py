"""Reference scores for the CRAGRU language-model tests: one full forward pass per conversation, to compare
with the backend's shared-prefix batching."""
from __future__ import annotations

import torch


def full_pass_positive_logprobs(lm, conversations) -> list[float]:
    """Each conversation's log-probability of the positive answer against the others, from a full pass."""
    scores = []
    for conversation in conversations:
        ids = lm.tokenizer(lm.render(conversation), return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            logprobs = torch.log_softmax(lm.lm(input_ids=ids).logits[0, -1].float(), -1)[lm.answer_ids]
        scores.append(float(logprobs[0] - torch.logsumexp(logprobs, 0)))
    return scores
