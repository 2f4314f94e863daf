"""Retrain (exact, the gold reference): the same backbone and settings, with early stopping, trained
from scratch on the residual data; cached by the residual data's content hash and the run config."""
from __future__ import annotations

import time

from ..data.interactions import Interactions
from ..train.cache import train_cached
from ..train.config import RunConfig
from .base import UnlearnResult, Unlearner


class Retrain(Unlearner):
    name = "retrain"
    kind = "exact"

    def __init__(self, run: RunConfig, cache_dir=None, progress: bool = True):
        super().__init__()
        self.run, self.cache_dir, self.progress = run, cache_dir, progress

    def unlearn(self, edges: Interactions) -> UnlearnResult:
        residual = self._residual(edges)
        start = time.perf_counter()
        model, meta, cached = train_cached(self.run, residual, self.cache_dir, self.progress)
        # A cache hit reports the training time recorded when the reference was first trained.
        seconds = meta["metrics"]["seconds"] if cached else time.perf_counter() - start
        self.state = UnlearnResult(model, residual, self.state.forgotten.union(edges), {"total": seconds},
                                   self.kind, report={"cached": cached, "best_epoch": meta["metrics"]["best_epoch"]})
        return self.state
