"""The Scorer protocol: what evaluation, the forgetting audit and serving need from anything that scores.

An embedding model, a shard ensemble or an LLM re-ranker is a Scorer as long as it answers these two calls.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Scorer(Protocol):
    n_users: int
    n_items: int

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        """Scores [len(users), n_items] for a batch of user indices (LongTensor); a fresh tensor each call."""

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores [len(users)] for (user, item) pairs."""


class EmbeddingScorer:
    """Dot-product scorer over fixed final embeddings (every GNN backbone here scores this way)."""

    def __init__(self, user_emb: torch.Tensor, item_emb: torch.Tensor):
        self.user_emb = user_emb.detach()
        self.item_emb = item_emb.detach()
        self.n_users, self.n_items = user_emb.shape[0], item_emb.shape[0]

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb[users] @ self.item_emb.T

    @torch.no_grad()
    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user_emb[users] * self.item_emb[items]).sum(-1)
