"""Helpers shared by the tests of the shard methods (SISA, RecEraser)."""
from __future__ import annotations

import numpy as np
import torch

from recunlearn.data.interactions import Interactions
from recunlearn.train.config import RunConfig

# The backbone each shard trains in the shard tests: seconds on the generated graphs.
SHARD_RUN = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 16},
                                      "train": {"epochs": 6, "batch_size": 64, "lr": 0.02, "patience": 2}})
SHARDS = 4


def identical(a: dict | None, b: dict | None) -> bool:
    """Two state dicts (or None) with the same keys and bit-identical tensors."""
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def from_shards(method, data, shards: tuple[int, ...], per_shard: int) -> Interactions:
    """A request of `per_shard` edges from each of `shards` (and none from the other shards)."""
    rng = np.random.default_rng(7)
    picked = []
    for shard in shards:
        edges = method.shard_edges(shard, data.train)
        mask = np.zeros(len(edges), dtype=bool)
        mask[rng.choice(len(edges), size=per_shard, replace=False)] = True
        picked.append(edges.select(mask))
    request = picked[0]
    for part in picked[1:]:
        request = request.union(part)
    return request
