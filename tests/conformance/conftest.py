"""Fixtures of the conformance suite: a small trained model on generated data, and spies on what a method
reads (the test split) and trains on (the positives drawn through `data.sampling.bpr_epoch`)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recunlearn.data.interactions import Dataset, Interactions
from generated import taste_groups
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer

N_USERS, N_ITEMS = 50, 30

# Settings that keep a method to seconds on the tiny graph; a method absent here runs with its defaults.
FAST_SETTINGS: dict[str, dict] = {
    "finetune": {"epochs": 1},
    "gradient-ascent": {"steps": 3},
    "sisa": {"shards": 3},        # early stopping (the default) is fast here: shards of ~130 edges
    "receraser": {"shards": 3},   # as sisa; the aggregator stops early on validation too
    "unlearnrec": {"epochs": 2, "sim_every": 1, "batch_size": 128},
    "cragru": {"n_candidates": 3, "history_limit": 2},   # the real default LLM (SmolLM2-135M), short prompts
}

RUN = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 16},
                                "train": {"epochs": 15, "batch_size": 128, "lr": 0.02, "patience": 15}})


def generated_dataset(seed: int = 0) -> Dataset:
    """The taste groups, with a feature modality (the item's group, plus noise) for multi-modal backbones."""
    data = taste_groups(N_USERS, N_ITEMS, 10, seed)
    rng = np.random.default_rng(seed)
    group = (np.arange(N_ITEMS) >= N_ITEMS // 2).astype(np.float32)
    features = np.stack([group, 1 - group], axis=1) + 0.1 * rng.standard_normal((N_ITEMS, 2)).astype(np.float32)
    return replace(data, modalities={"image": features.astype(np.float32)})


@pytest.fixture(scope="session")
def trained():
    data = generated_dataset()
    model, _ = Trainer(RUN, progress=False).fit(data)
    return model, data


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def positives_drawn(batch_spy):
    """Every (user, positive) pair any training loop draws while the fixture is active."""
    return batch_spy()


class TripwireInteractions(Interactions):
    """An interaction set that records every attribute read of it (its arrays, `contains`, `hash`, ...)."""

    reads: list[str] = []

    def __getattribute__(self, name):
        if not name.startswith("__"):
            TripwireInteractions.reads.append(name)
        return object.__getattribute__(self, name)
