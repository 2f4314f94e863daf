"""What evaluation needs from a model: scores for users over all items, and for given pairs."""
from __future__ import annotations

from typing import Protocol

import torch


class Scorer(Protocol):
    n_users: int
    n_items: int

    def score(self, users: torch.Tensor) -> torch.Tensor:
        """Scores [len(users), n_items] for a batch of user indices (LongTensor)."""

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores [len(users)] for (user, item) pairs."""


class EmbeddingScorer:
    """Dot-product scorer over fixed final embeddings (every GNN backbone here scores this way)."""

    def __init__(self, user_emb: torch.Tensor, item_emb: torch.Tensor):
        self.user_emb = user_emb.detach()
        self.item_emb = item_emb.detach()
        self.n_users, self.n_items = user_emb.shape[0], item_emb.shape[0]

    @torch.no_grad()
    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb[users] @ self.item_emb.T

    @torch.no_grad()
    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user_emb[users] * self.item_emb[items]).sum(-1)
