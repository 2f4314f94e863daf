"""Retrain (exact, the gold reference): the same backbone and settings, with early stopping, trained
from scratch on the residual data; cached by the residual data's content hash and the run config."""
from __future__ import annotations

import time

from ..data.interactions import Dataset, Interactions
from ..models.base import Recommender
from ..train.cache import train_cached
from ..train.config import RunConfig
from .base import UnlearnResult, Unlearner


class Retrain(Unlearner):
    name = "retrain"
    kind = "exact"

    def __init__(self, run: RunConfig, cache_dir=None, progress: bool = True):
        super().__init__()
        self.run, self.cache_dir, self.progress = run, cache_dir, progress

    def prepare(self, model: Recommender, dataset: Dataset) -> "Retrain":
        self.state = UnlearnResult(model, dataset, Interactions.empty(dataset.n_users, dataset.n_items), {}, self.kind)
        return self

    def unlearn(self, edges: Interactions) -> UnlearnResult:
        self._check_request(edges)
        residual = self.state.dataset.with_train(self.state.dataset.train.subtract(edges))
        start = time.perf_counter()
        model, meta, cached = train_cached(self.run, residual, self.cache_dir, self.progress)
        # A cache hit reports the training time recorded when the reference was first trained.
        seconds = meta["metrics"]["seconds"] if cached else time.perf_counter() - start
        self.state = UnlearnResult(model, residual, self.state.forgotten.union(edges), {"total": seconds},
                                   self.kind, report={"cached": cached, "best_epoch": meta["metrics"]["best_epoch"]})
        return self.state
