"""Fixtures of the conformance suite: a small trained model on generated data, and spies on what a method
reads (the test split) and trains on (the positives drawn through `data.sampling.bpr_epoch`)."""
from __future__ import annotations

import numpy as np
import pytest

from recunlearn.data.interactions import Dataset, IdMap, Interactions
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer

N_USERS, N_ITEMS = 50, 30

# Settings that keep a method to seconds on the tiny graph; a method absent here runs with its defaults.
FAST_SETTINGS: dict[str, dict] = {
    "finetune": {"epochs": 1},
    "unlearnrec": {"epochs": 2, "sim_every": 1, "batch_size": 128},
}

RUN = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 16},
                                "train": {"epochs": 15, "batch_size": 128, "lr": 0.02, "patience": 15}})


def generated_dataset(seed: int = 0) -> Dataset:
    """Random pairs with a block structure (two tastes), split 8:1:1 per pair."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, N_USERS, 900)
    items = (rng.integers(0, N_ITEMS // 2, 900) + (users >= N_USERS // 2) * (N_ITEMS // 2)) % N_ITEMS
    pairs = Interactions.from_arrays(users, items, N_USERS, N_ITEMS, on_duplicate="drop")
    part = rng.random(len(pairs))
    train, valid, test = (pairs.select(m) for m in (part < 0.8, (part >= 0.8) & (part < 0.9), part >= 0.9))
    return Dataset("generated", train, valid, test, IdMap(np.arange(N_USERS)), IdMap(np.arange(N_ITEMS)))


@pytest.fixture(scope="session")
def trained():
    data = generated_dataset()
    model, _ = Trainer(RUN, progress=False).fit(data)
    return model, data


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def positives_drawn(monkeypatch):
    """Every (user, positive) pair any training loop draws while the fixture is active."""
    from recunlearn.data import sampling
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = sampling.bpr_epoch

    def spy(train, rng, batch_size):
        for users, pos, neg in real(train, rng, batch_size):
            seen.append((users.copy(), pos.copy()))
            yield users, pos, neg

    monkeypatch.setattr(sampling, "bpr_epoch", spy)
    return seen


class TripwireInteractions(Interactions):
    """An interaction set that records every attribute read of it (its arrays, `contains`, `hash`, ...)."""

    reads: list[str] = []

    def __getattribute__(self, name):
        if not name.startswith("__"):
            TripwireInteractions.reads.append(name)
        return object.__getattribute__(self, name)
