"""Immutable interaction sets with a content hash, id maps, and the split bundle `Dataset`."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp


class DataError(ValueError):
    """Input data is malformed or inconsistent; the message names the file, line or id at fault."""


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.int64)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Interactions:
    """A set of (user, item) index pairs over a fixed id space. Never mutated: operations return new sets.

    Pairs are unique and kept in (user, item) order, so equal sets have equal arrays and equal hashes.
    """

    users: np.ndarray
    items: np.ndarray
    n_users: int
    n_items: int

    @classmethod
    def from_arrays(cls, users, items, n_users: int, n_items: int, *, on_duplicate: str = "error") -> "Interactions":
        users = np.asarray(users, dtype=np.int64).ravel()
        items = np.asarray(items, dtype=np.int64).ravel()
        if users.shape != items.shape:
            raise DataError(f"users and items differ in length ({users.size} vs {items.size})")
        for name, arr, n in (("user", users, n_users), ("item", items, n_items)):
            if arr.size and (arr.min() < 0 or arr.max() >= n):
                bad = arr[(arr < 0) | (arr >= n)][0]
                raise DataError(f"{name} index {bad} is outside 0..{n - 1}")
        key = users * n_items + items
        order = np.argsort(key, kind="stable")
        key = key[order]
        dup = np.flatnonzero(key[1:] == key[:-1])
        if dup.size:
            if on_duplicate == "error":
                u, i = divmod(int(key[dup[0]]), n_items)
                raise DataError(f"{dup.size} duplicate (user, item) pairs, first ({u}, {i}); "
                                "remove the repeats (from Python, on_duplicate='drop' keeps one of each)")
            if on_duplicate != "drop":
                raise ValueError("on_duplicate must be 'error' or 'drop'")
            keep = np.ones(key.size, dtype=bool)
            keep[dup + 1] = False
            key = key[keep]
        return cls(_frozen(key // n_items), _frozen(key % n_items), int(n_users), int(n_items))

    @classmethod
    def empty(cls, n_users: int, n_items: int) -> "Interactions":
        return cls.from_arrays([], [], n_users, n_items)

    def __len__(self) -> int:
        return int(self.users.size)

    @cached_property
    def keys(self) -> np.ndarray:
        """Sorted unique int64 keys user * n_items + item, for fast set operations."""
        return self.users * self.n_items + self.items

    @cached_property
    def hash(self) -> str:
        h = hashlib.sha256()
        h.update(np.array([self.n_users, self.n_items], dtype=np.int64).tobytes())
        h.update(self.users.tobytes())
        h.update(self.items.tobytes())
        return h.hexdigest()[:16]

    def to_csr(self) -> sp.csr_matrix:
        data = np.ones(len(self), dtype=np.float32)
        return sp.csr_matrix((data, (self.users, self.items)), shape=(self.n_users, self.n_items))

    def user_degree(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.n_users)

    def item_degree(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.n_items)

    def contains(self, users, items) -> np.ndarray:
        """Boolean mask: which of the given pairs are in this set."""
        q = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        pos = np.searchsorted(self.keys, q)
        pos = np.minimum(pos, max(len(self) - 1, 0))
        return (self.keys[pos] == q) if len(self) else np.zeros(q.shape, dtype=bool)

    def subtract(self, other: "Interactions") -> "Interactions":
        """This set without the pairs of `other` (pairs of `other` not present are ignored)."""
        self._check_space(other)
        keep = ~np.isin(self.keys, other.keys, assume_unique=True)
        return Interactions(_frozen(self.users[keep]), _frozen(self.items[keep]), self.n_users, self.n_items)

    def union(self, other: "Interactions") -> "Interactions":
        self._check_space(other)
        return Interactions.from_arrays(np.concatenate([self.users, other.users]),
                                        np.concatenate([self.items, other.items]),
                                        self.n_users, self.n_items, on_duplicate="drop")

    def select(self, mask: np.ndarray) -> "Interactions":
        return Interactions(_frozen(self.users[mask]), _frozen(self.items[mask]), self.n_users, self.n_items)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"user": self.users, "item": self.items})

    def _check_space(self, other: "Interactions") -> None:
        if (other.n_users, other.n_items) != (self.n_users, self.n_items):
            raise DataError(f"id spaces differ: {self.n_users}x{self.n_items} vs {other.n_users}x{other.n_items}")


@dataclass(frozen=True, eq=False)
class IdMap:
    """Original ids (labels, as strings or ints from the file) <-> contiguous indices 0..n-1."""

    labels: np.ndarray

    @cached_property
    def _index(self) -> dict:
        return {label: i for i, label in enumerate(self.labels.tolist())}

    def __len__(self) -> int:
        return int(self.labels.size)

    def index(self, labels, kind: str = "id") -> np.ndarray:
        """Indices of the given original ids; an unknown id is an error that names it."""
        out = np.empty(len(labels), dtype=np.int64)
        lookup = self._index
        for n, label in enumerate(labels):
            _check_id(label, kind)
            idx = lookup.get(label)
            if idx is None:
                idx = lookup.get(_coerce(label, self.labels))
            if idx is None:
                raise DataError(f"unknown {kind} {label!r}: not in this dataset "
                                f"({len(self)} known, e.g. {self.labels[:3].tolist()})")
            out[n] = idx
        return out

    def label(self, indices) -> np.ndarray:
        return self.labels[np.asarray(indices, dtype=np.int64)]


def _check_id(label, kind: str) -> None:
    """An id is a string or an integer. A bool or a fractional number would match the integer it equals or
    truncates to (True is 1, int(5.7) is 5): another user's data, silently."""
    integral = isinstance(label, (int, np.integer)) or (isinstance(label, (float, np.floating))
                                                         and float(label).is_integer())
    if isinstance(label, (bool, np.bool_)) or not (integral or isinstance(label, str)):
        raise DataError(f"{kind} {label!r} is not an id: ids are strings or whole numbers, as in the data file")


def _coerce(label, labels: np.ndarray):
    """Match '42' to 42 and 42 to '42' so that ids typed on a command line find their item."""
    try:
        return int(label) if labels.dtype.kind in "iu" else str(label)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, eq=False)
class Dataset:
    """One dataset with its train / valid / test split over shared id maps, plus side information."""

    name: str
    train: Interactions
    valid: Interactions
    test: Interactions
    user_ids: IdMap
    item_ids: IdMap
    user_info: pd.DataFrame | None = None      # indexed by user index
    item_info: pd.DataFrame | None = None      # indexed by item index (title, genres, ...)
    modalities: dict = field(default_factory=dict)  # name -> float32 array [n_items, dim]
    # name -> sorted item indices whose features of that modality may no longer be used (a modality constraint)
    withdrawn: dict = field(default_factory=dict)
    original_train: Interactions | None = None      # the shipped training set, when `train` was edited
    shipped_hash: str = ""                           # the shipped dataset's hash, once valid/test were edited

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items

    @cached_property
    def hash(self) -> str:
        """Content hash of all three splits: caches of derived artefacts are keyed by it, never by name."""
        h = hashlib.sha256("/".join((self.train.hash, self.valid.hash, self.test.hash)).encode())
        # A withdrawal changes what a model may read, so it changes the hash (and every cache keyed by it);
        # data without one keeps the hash it always had.
        for name in sorted(self.withdrawn):
            h.update(f"/withdrawn:{name}:".encode() + np.asarray(self.withdrawn[name], np.int64).tobytes())
        return h.hexdigest()[:16]

    @cached_property
    def content_hash(self) -> str:
        """Hash of the item features a model may read (each modality, withdrawn rows zeroed)."""
        h = hashlib.sha256()
        for name in sorted(self.modalities):
            features = self.features(name)
            h.update(f"{name}:{features.shape}".encode() + features.tobytes())
        return h.hexdigest()[:16]

    def features(self, name: str) -> np.ndarray:
        """Modality `name` as a model may read it: the withdrawn rows are zeros."""
        if name not in self.modalities:
            known = ", ".join(sorted(self.modalities)) or "none"
            raise DataError(f"dataset {self.name!r} has no {name!r} features (modalities: {known})")
        items = self.withdrawn.get(name)
        if items is None or not len(items):
            return self.modalities[name]
        out = np.array(self.modalities[name], dtype=np.float32)
        out[items] = 0.0
        out.flags.writeable = False
        return out

    def with_withdrawn(self, name: str, items) -> "Dataset":
        """The same dataset where the features of modality `name` may no longer be used for `items`."""
        self.features(name)   # the modality must exist
        items = np.union1d(self.withdrawn.get(name, np.empty(0, np.int64)), np.asarray(items, np.int64))
        if items.size and (items[0] < 0 or items[-1] >= self.n_items):
            raise DataError(f"withdrawn item index outside 0..{self.n_items - 1}")
        return replace(self, withdrawn={**self.withdrawn, name: _frozen(items)})

    @cached_property
    def origin_hash(self) -> str:
        """Hash of the dataset as loaded, before any edit of its training set (deletions, injections)."""
        if self.shipped_hash:
            return self.shipped_hash
        if self.original_train is None and not self.withdrawn:
            return self.hash
        return replace(self, train=self.original_train or self.train, original_train=None, withdrawn={}).hash

    def with_train(self, train: Interactions) -> "Dataset":
        """The same dataset with another training set (e.g. the residual after a deletion)."""
        self.train._check_space(train)
        return replace(self, train=train, original_train=self.original_train or self.train)

    def with_held_out(self, valid: Interactions, test: Interactions) -> "Dataset":
        """The same dataset with other validation and test sets (e.g. after a user's full erasure, which removes
        their held-out interactions too); it keeps its origin: the dataset as shipped."""
        for split in (valid, test):
            self.train._check_space(split)
        return replace(self, valid=valid, test=test, shipped_hash=self.origin_hash)

    def train_edits(self) -> tuple[Interactions, Interactions]:
        """(added, removed) pairs of the current training set relative to the shipped one."""
        base = self.original_train or self.train
        return self.train.subtract(base), base.subtract(self.train)

    def stats(self) -> dict:
        n = len(self.train) + len(self.valid) + len(self.test)
        return {"dataset": self.name, "users": self.n_users, "items": self.n_items, "train": len(self.train),
                "valid": len(self.valid), "test": len(self.test), "interactions": n,
                "density": round(n / max(self.n_users * self.n_items, 1), 6)}
