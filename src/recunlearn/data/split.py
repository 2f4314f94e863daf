"""Raw frames per split -> `Dataset`: joint id maps, then the shipped split or a seeded per-user split."""
from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import pandas as pd

from .interactions import DataError, Dataset, IdMap, Interactions

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
ACCEPTED_SPLITS = ({"all"}, {"train", "test"}, {"train", "valid", "test"})
DEFAULT_RATIOS = (0.8, 0.1, 0.1)


def make_dataset(frames: Mapping[str, pd.DataFrame], name: str, *, seed: int = 0, valid_ratio: float = 0.1,
                 ratios: tuple[float, float, float] = DEFAULT_RATIOS, on_duplicate: str = "error") -> Dataset:
    """Build a Dataset from frames with `user`, `item` columns keyed by split.

    - {"train", "valid", "test"}: used as given;
    - {"train", "test"}: a seeded `valid_ratio` of each user's training interactions becomes the validation set;
    - {"all"}: each user's interactions are split train/valid/test by `ratios` (8:1:1) with a seed.
    Ids are mapped jointly over all frames (sorted original ids); pairs shared by two splits are an error.
    """
    keys = set(frames)
    if keys not in ACCEPTED_SPLITS:
        raise DataError(f"{name}: splits {sorted(keys)} are not one of "
                        f"{[sorted(accepted) for accepted in ACCEPTED_SPLITS]}")
    user_ids, item_ids = build_id_maps(frames)
    sets = {split: to_interactions(frame, user_ids, item_ids, on_duplicate=on_duplicate)
            for split, frame in frames.items()}
    _check_disjoint(sets, name, user_ids, item_ids)
    if keys == {"all"}:
        sets = split_per_user(sets["all"], ratios, seed)
    elif keys == {"train", "test"}:
        sets["train"], sets["valid"] = carve_validation(sets["train"], valid_ratio, seed)
    dataset = Dataset(name, sets["train"], sets["valid"], sets["test"], user_ids, item_ids)
    _report_users_without_train(dataset)
    return dataset


def build_id_maps(frames: Mapping[str, pd.DataFrame]) -> tuple[IdMap, IdMap]:
    """One IdMap for users and one for items over every frame: the sorted ids that occur somewhere."""
    return _id_map(frames, "user"), _id_map(frames, "item")


def _id_map(frames: Mapping[str, pd.DataFrame], column: str) -> IdMap:
    columns = [frame[column] for frame in frames.values()]
    if len({c.dtype.kind in "iu" for c in columns}) > 1:  # integer ids in one file, text in another
        columns = [c.astype(str) for c in columns]
    values = pd.concat(columns, ignore_index=True)
    try:
        labels = np.sort(pd.unique(values.to_numpy()))
    except TypeError:
        raise DataError(f"{column} ids mix numbers and text; use one kind of id in every file") from None
    return IdMap(labels)


def to_interactions(frame: pd.DataFrame, user_ids: IdMap, item_ids: IdMap, *,
                    on_duplicate: str = "error") -> Interactions:
    """Map a frame's original ids to indices of the given id maps (every id must be known)."""
    users = _indices(frame["user"], user_ids, "user")
    items = _indices(frame["item"], item_ids, "item")
    return Interactions.from_arrays(users, items, len(user_ids), len(item_ids), on_duplicate=on_duplicate)


def _indices(values: pd.Series, ids: IdMap, kind: str) -> np.ndarray:
    index = pd.Index(ids.labels)
    if index.dtype.kind not in "iu":  # text labels: every frame's ids were compared as text
        values = values.astype(str)
    positions = index.get_indexer(values.to_numpy())
    if (positions < 0).any():
        unknown = values.tolist()[int(np.flatnonzero(positions < 0)[0])]
        raise DataError(f"unknown {kind} {unknown!r}: not in the id map")
    return positions.astype(np.int64)


def split_per_user(data: Interactions, ratios: tuple[float, float, float] = DEFAULT_RATIOS,
                   seed: int = 0) -> dict[str, Interactions]:
    """Split each user's interactions train/valid/test by `ratios`, at random with `seed`.

    Per user with n interactions: floor(ratio * n) go to test and to valid; a user too small for that still
    gives one to test, then one to valid, as long as one stays in train (the RecBole rule).
    """
    if len(ratios) != 3 or min(ratios) < 0 or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, not {ratios}")
    rank, size = _random_rank_per_user(data, seed)
    n_test = _holdout_counts(size, ratios[2], remaining=size)
    n_valid = _holdout_counts(size, ratios[1], remaining=size - n_test)
    in_test = rank < n_test
    in_valid = ~in_test & (rank < n_test + n_valid)
    return {"train": data.select(~in_test & ~in_valid), "valid": data.select(in_valid), "test": data.select(in_test)}


def carve_validation(train: Interactions, valid_ratio: float = 0.1, seed: int = 0) -> tuple[Interactions, Interactions]:
    """Move a seeded `valid_ratio` of each user's training interactions to a validation set.

    A user keeps at least one training interaction; floor(ratio * n) move, or one when that is zero and n > 1.
    """
    if not 0 <= valid_ratio < 1:
        raise ValueError(f"valid_ratio must be in [0, 1), not {valid_ratio}")
    rank, size = _random_rank_per_user(train, seed)
    in_valid = rank < _holdout_counts(size, valid_ratio, remaining=size)
    return train.select(~in_valid), train.select(in_valid)


def _random_rank_per_user(data: Interactions, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """For each pair, a random rank among its user's pairs, and that user's number of pairs.

    Pairs are in canonical (user, item) order, so the result depends on the set and the seed only.
    """
    noise = np.random.default_rng(seed).random(len(data))
    order = np.argsort(data.users + noise)  # one float key sorts by user, then at random within each user
    degree = data.user_degree()
    group_start = (np.cumsum(degree) - degree)[data.users[order]]
    rank = np.empty(len(data), dtype=np.int64)
    rank[order] = np.arange(len(data)) - group_start
    return rank, degree[data.users]


def _holdout_counts(size: np.ndarray, ratio: float, remaining: np.ndarray) -> np.ndarray:
    """How many of each user's pairs to hold out: floor(ratio * size), at least 1 if ratio > 0,
    never leaving `remaining` below 1."""
    count = np.floor(ratio * size + 1e-9).astype(np.int64)
    if ratio > 0:
        count = np.maximum(count, 1)
    return np.clip(count, 0, np.maximum(remaining - 1, 0))


def _check_disjoint(sets: Mapping[str, Interactions], name: str, user_ids: IdMap, item_ids: IdMap) -> None:
    present = [split for split in (*SPLITS, "all") if split in sets]
    for n, first in enumerate(present):
        for second in present[n + 1:]:
            shared = np.intersect1d(sets[first].keys, sets[second].keys, assume_unique=True)
            if shared.size:
                user, item = divmod(int(shared[0]), sets[first].n_items)
                user_label, item_label = user_ids.label([user]).tolist()[0], item_ids.label([item]).tolist()[0]
                raise DataError(f"{name}: {shared.size} (user, item) pairs are in both {first} and {second}, "
                                f"first (user {user_label!r}, item {item_label!r}); splits must not overlap")


def require_splits(dataset: Dataset, splits: tuple[str, ...] = SPLITS, source: str | None = None) -> None:
    """A DataError naming `source` (default: the dataset's name) and the empty splits among `splits`: training
    on an empty split, or ranking for one, gives nothing but NaN metrics."""
    empty = [split for split in splits if len(getattr(dataset, split)) == 0]
    if not empty:
        return
    counts = ", ".join(f"{len(getattr(dataset, split))} {split}" for split in SPLITS)
    raise DataError(f"{source or dataset.name}: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} "
                    f"empty ({counts} interactions); add interactions (one file is split 8:1:1 per user, so a user "
                    "needs 3 to appear in every split) or pass --data a folder with non-empty train, valid and "
                    "test files")


def users_without_train(dataset: Dataset) -> np.ndarray:
    """Indices of users that have valid or test interactions but none in train (cold users)."""
    return np.flatnonzero(dataset.train.user_degree() == 0)


def _report_users_without_train(dataset: Dataset) -> None:
    cold = users_without_train(dataset)
    if cold.size:
        log.warning("%s: %d users have no training interactions (e.g. %s); they can be evaluated but not learnt",
                    dataset.name, cold.size, dataset.user_ids.label(cold[:3]).tolist())
