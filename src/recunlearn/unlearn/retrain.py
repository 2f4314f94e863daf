"""Retrain (exact, the gold reference): the same backbone and settings, with early stopping, trained from
scratch on the residual data with an independent seed; cached by the residual data's content hash, the
run config and the code version."""
from __future__ import annotations

from pydantic import Field

from ..config import StrictConfig
from ..data.interactions import Dataset, Interactions
from ..train.cache import train_cached
from .base import UnlearnResult, Unlearner


class RetrainConfig(StrictConfig):
    seed: int | None = Field(None, description="training seed; default: the original run's seed + 1, so that the "
                                               "reference is an independent retrain, never the original's twin")


class Retrain(Unlearner):
    name = "retrain"
    adapts_to_withdrawals = True      # training reads the data's withdrawn feature rows as withdrawn
    kind = "exact"
    config_class = RetrainConfig
    needs_run = True

    def training_seed(self) -> int:
        return self.run.train.seed + 1 if self.config.seed is None else self.config.seed

    def _unlearn(self, edges: Interactions, residual: Dataset) -> UnlearnResult:
        train = self.run.train.model_copy(update={"seed": self.training_seed()})
        run = self.run.model_copy(update={"train": train})
        model, meta, cached = train_cached(run, residual, self.cache_dir, self.progress)
        metrics = meta["metrics"]
        result = self._result(model, residual, edges, model, cached=cached, seed=train.seed,
                              best_epoch=metrics["best_epoch"], epochs_run=metrics["epochs_run"],
                              seconds_to_best=metrics["seconds_to_best"], timing_reused=cached)
        # The epochs alone: early stopping's validation passes and the final evaluation are left out; a cache
        # hit reports the epochs recorded when the entry was trained.
        result.seconds["total"] = metrics["train_seconds"]
        return result
