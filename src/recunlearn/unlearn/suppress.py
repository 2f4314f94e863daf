"""Suppress (a control, not unlearning): the original model, parameters unchanged, with the forgotten pairs
masked at serving time. A forgetting measure that this control passes does not show forgetting."""
from __future__ import annotations

import torch

from ..data.interactions import Dataset, Interactions
from ..eval.scorer import Scorer
from ..models.base import Recommender
from .base import UnlearnResult, Unlearner

# What a masked pair scores: below any real score, but finite, so that attacks and AUCs stay defined.
SUPPRESSED_SCORE = -1e4


class SuppressedScorer:
    """`base`'s scores with the `hidden` pairs set to SUPPRESSED_SCORE."""

    def __init__(self, base: Scorer, hidden: Interactions):
        self.base, self.hidden = base, hidden
        self.n_users, self.n_items = base.n_users, base.n_items
        self._rows = hidden.to_csr()

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        scores = self.base.score_users(users).clone()
        rows = self._rows[users.numpy()]
        positions = torch.repeat_interleave(torch.arange(len(users)), torch.from_numpy(rows.indptr).diff())
        scores[positions, torch.from_numpy(rows.indices).long()] = SUPPRESSED_SCORE
        return scores

    @torch.no_grad()
    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        scores = self.base.score_pairs(users, items).clone()
        hidden = torch.from_numpy(self.hidden.contains(users.numpy(), items.numpy()))
        return scores.masked_fill(hidden, SUPPRESSED_SCORE)


class Suppress(Unlearner):
    name = "suppress"
    kind = "control"
    has_model = False

    def _unlearn(self, edges: Interactions, residual: Dataset) -> UnlearnResult:
        forgotten = self.state.forgotten.union(edges)
        return UnlearnResult(SuppressedScorer(self.original, forgotten), residual, forgotten, {}, self.kind)

    def _restore(self, original: Recommender, current, residual: Dataset, forgotten: Interactions) -> UnlearnResult:
        return UnlearnResult(SuppressedScorer(original, forgotten), residual, forgotten, {}, self.kind)
