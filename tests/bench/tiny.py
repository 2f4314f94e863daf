"""The harness tests' data: a tiny generated dataset, a loader for it, and a small suite over it."""
from __future__ import annotations

from recunlearn.bench.suite import Suite
from recunlearn.data.interactions import Dataset
from generated import taste_groups

N_USERS, N_ITEMS = 48, 36


def tiny_dataset(seed: int = 0) -> Dataset:
    return taste_groups(N_USERS, N_ITEMS, 10, seed, "tiny")


def tiny_loader(name, data_config) -> Dataset:
    assert name == "tiny", name
    return tiny_dataset()


def tiny_suite(**changes) -> Suite:
    """Retrain, fine-tune and suppress on the tiny graph: 2 seeds, a random and an adversarial request,
    3 noise-floor retrains and a stream of 4 requests; a few epochs of a small LightGCN."""
    spec = {"name": "tiny", "datasets": ["tiny"], "backbones": ["lightgcn"],
            "requests": ["random:0.05", "adversarial:1.0"], "seeds": [0, 1],
            "methods": [{"name": "finetune"}], "model": {"dim": 8, "layers": 2},
            "train": {"epochs": 6, "batch_size": 128, "lr": 0.05, "patience": 6},
            "streams": [{"request": "random:0.05", "parts": 4, "methods": ["finetune"], "seeds": [0]}],
            "audit": {"ks": [10, 20]}, **changes}
    return Suite.model_validate(spec)
