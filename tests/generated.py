"""Small generated datasets whose structure is known, shared by the tests."""
from __future__ import annotations

import numpy as np

from recunlearn.data.interactions import Dataset, IdMap, Interactions


def taste_groups(n_users: int, n_items: int, per_user: int, seed: int = 0, name: str = "generated") -> Dataset:
    """Two taste groups (the first half of the users like the first half of the items, the rest the rest),
    `per_user` distinct items each, split 8:1:1 per pair."""
    rng = np.random.default_rng(seed)
    pairs = []
    for user in range(n_users):
        pool = np.arange(n_items // 2) if user < n_users // 2 else np.arange(n_items // 2, n_items)
        pairs += [(user, item) for item in rng.choice(pool, size=per_user, replace=False)]
    pairs = np.array(pairs)
    split = rng.random(len(pairs))
    parts = [pairs[split < 0.8], pairs[(split >= 0.8) & (split < 0.9)], pairs[split >= 0.9]]
    train, valid, test = (Interactions.from_arrays(p[:, 0], p[:, 1], n_users, n_items) for p in parts)
    return Dataset(name, train, valid, test, IdMap(np.arange(n_users)), IdMap(np.arange(n_items)))
