"""A scikit-learn style façade over one backbone: `fit(data) -> self`, `save(dir)`, `load(dir)`, `recommend`.

The Recommender modules know nothing about trainers, checkpoints or evaluation; this is the level where
those meet. An Estimator is also a Scorer (it delegates to its fitted model).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data.interactions import Dataset
from .eval.ranking import topk_items
from .models.base import Recommender
from .models.registry import model_config
from .train.checkpoint import load_checkpoint, save_checkpoint
from .train.config import DataConfig, RunConfig, TrainConfig
from .train.trainer import Trainer


class Estimator:
    """`Estimator("lightgcn", train={"epochs": 50}, dim=64).fit(data).recommend([0, 1], k=10)`."""

    def __init__(self, model: str = "lightgcn", train: TrainConfig | dict | None = None, progress: bool = False,
                 **model_params):
        self.model_name, self.model_params = model, model_params
        self.train_config = train if isinstance(train, TrainConfig) else TrainConfig.model_validate(train or {})
        self.progress = progress
        self.model_: Recommender | None = None
        self.run_: RunConfig | None = None
        self.data_: Dataset | None = None

    def fit(self, data: Dataset) -> "Estimator":
        """Train on `data.train` with early stopping on `data.valid`; returns self."""
        run = RunConfig(data=DataConfig(name=data.name), model=model_config(self.model_name, self.model_params),
                        train=self.train_config)
        self.model_, self.result_ = Trainer(run, progress=self.progress).fit(data)
        self.run_, self.data_ = run, data
        return self

    def save(self, path: str | Path) -> Path:
        """A self-describing checkpoint folder (config + weights + data hash), see train.checkpoint."""
        self._require_fitted()
        return save_checkpoint(path, self.model_, self.run_, self.data_)

    @classmethod
    def load(cls, path: str | Path, data: Dataset | None = None) -> "Estimator":
        model, run, data, _ = load_checkpoint(path, data)
        self = cls(run.model.name, run.train, **run.model.model_dump(exclude={"name"}))
        self.model_, self.run_, self.data_ = model, run, data
        return self

    def recommend(self, users, k: int = 10, exclude_seen: bool = True) -> np.ndarray:
        """Top-k item indices per user; `exclude_seen` masks what the model saw (train ∪ valid)."""
        self._require_fitted()
        exclude = self.data_.train.union(self.data_.valid) if exclude_seen else None
        return topk_items(self.model_, np.asarray(users, dtype=np.int64), k, exclude).numpy()

    # the Scorer protocol
    @property
    def n_users(self) -> int:
        return self._require_fitted().n_users

    @property
    def n_items(self) -> int:
        return self._require_fitted().n_items

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self._require_fitted().score_users(users)

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self._require_fitted().score_pairs(users, items)

    def _require_fitted(self) -> Recommender:
        if self.model_ is None:
            raise RuntimeError("this Estimator is not fitted: call fit(data) or Estimator.load(path) first")
        return self.model_
