"""Shared fixtures of the unlearning tests: a small generated dataset whose structure is known."""
from __future__ import annotations

import pytest

from recunlearn.data.interactions import Dataset
from generated import taste_groups

N_USERS, N_ITEMS = 60, 40


def synthetic_dataset(seed: int = 0) -> Dataset:
    """Two taste groups (users 0-29 like items 0-19, the rest items 20-39), split 8:1:1 per pair."""
    return taste_groups(N_USERS, N_ITEMS, 12, seed, "synthetic")


@pytest.fixture(scope="session")
def synthetic():
    """The generator `synthetic_dataset(seed=0)`, for tests that need one or several such datasets."""
    return synthetic_dataset


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A model cache of the test's own (`pytestmark = pytest.mark.usefixtures("private_cache")`)."""
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def trained_lightgcn(synthetic):
    """(LightGCN trained on `synthetic()`, the data): the model must be cloned before anything changes it."""
    from recunlearn.train.config import RunConfig
    from recunlearn.train.trainer import Trainer

    data = synthetic()
    run = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 16},
                                    "train": {"epochs": 30, "batch_size": 128, "lr": 0.02, "patience": 30}})
    model, _ = Trainer(run, progress=False).fit(data)
    return model, data


@pytest.fixture(scope="session")
def memorising_lightgcn(synthetic):
    """(LightGCN that scores its training edges well above held-out ones, the data): trained long, without
    L2 or early stopping, as a real model memorises the edges a request asks it to forget."""
    from recunlearn.train.config import RunConfig
    from recunlearn.train.trainer import Trainer

    data = synthetic()
    run = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 32, "reg": 0.0},
                                    "train": {"epochs": 100, "batch_size": 128, "lr": 0.05}})
    model, _ = Trainer(run, progress=False, validate=False).fit(data)
    return model, data


@pytest.fixture(scope="session")
def ie_config():
    """`ie_config(**overrides)`: an UnlearnRec config sized for the 60 x 40 synthetic graph (seconds, not minutes)."""
    from recunlearn.unlearn.unlearnrec import IEConfig

    def make(**overrides):
        small = dict(epochs=4, sim_every=2, select_every=2, batch_size=128, lr=0.05, preserve_batch_ref=64,
                     contrast_nodes=32, probe_rho=0.05)
        return IEConfig(**{**small, **overrides})
    return make
