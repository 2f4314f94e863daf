"""Vectorised BPR triple sampling: every training edge once per epoch, negatives uniform over non-edges."""
from __future__ import annotations

import numpy as np

from .interactions import Interactions


def sample_negatives(train: Interactions, users: np.ndarray, rng: np.random.Generator,
                     max_rounds: int = 20) -> np.ndarray:
    """Uniform items that `users` did not interact with in `train`, by vectorised rejection.

    A user who has interacted with every item cannot get a true negative; after `max_rounds` such
    leftovers keep a random item (this never happens on real data, where degrees are far below n_items).
    """
    neg = rng.integers(0, train.n_items, size=users.size)
    # Only the draws that clashed are checked again: a draw that missed the user's items stays a miss.
    clash = np.flatnonzero(train.contains(users, neg))
    for _ in range(max_rounds):
        if clash.size == 0:
            break
        neg[clash] = rng.integers(0, train.n_items, size=clash.size)
        clash = clash[train.contains(users[clash], neg[clash])]
    return neg


def bpr_epoch(train: Interactions, rng: np.random.Generator, batch_size: int, edges: int | None = None):
    """Yield (users, pos, neg) int64 arrays covering a shuffled pass over the training edges; `edges`: only
    the pass's first `edges` (part of an epoch), whose negatives alone are drawn."""
    order = rng.permutation(len(train))
    if edges is not None:
        order = order[:edges]
    users, pos = train.users[order], train.items[order]
    neg = sample_negatives(train, users, rng)
    for start in range(0, len(order), batch_size):
        sl = slice(start, start + batch_size)
        yield users[sl], pos[sl], neg[sl]
