"""Subjects of erasures (a user, an item, or user-item pairs, in the dataset's original ids) and how the
service tells whether the served data knows them.

A `SubjectResolver` is any callable `resolver(subject) -> unknown`, returning the subject's ids (or pairs)
that the data does not know, as given; an empty list means every one is known. `serve` and the worker plug
in `dataset_resolver(dataset)` for the dataset of the model they serve; tests plug in small fakes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Union

if TYPE_CHECKING:
    from ..data.interactions import Dataset

SubjectKind = Literal["user", "item", "pairs"]
SUBJECT_KINDS: tuple[str, ...] = ("user", "item", "pairs")
Pair = tuple[str, str]


@dataclass(frozen=True)
class Subject:
    """What an erasure names: `ids` holds one user or item id, or the (user, item) pairs, as given."""

    kind: SubjectKind
    ids: tuple[Union[str, Pair], ...]

    def describe(self, ids: list) -> str:
        """`ids` of this subject in words, for messages: user '7', pair ('7', '50'), ..."""
        noun = "pair" if self.kind == "pairs" else self.kind
        shown = ", ".join(f"{noun} {tuple(i) if self.kind == 'pairs' else i!r}" for i in ids[:5])
        return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


SubjectResolver = Callable[[Subject], list]


def dataset_resolver(dataset: "Dataset") -> SubjectResolver:
    """A resolver for `dataset`'s id maps: a user or item is known when the dataset has its id; a pair when
    it is one of the dataset's interactions (in any split, or erased from the training set earlier)."""
    import numpy as np

    from ..data.interactions import DataError

    def index(ids, label) -> int | None:
        try:
            return int(ids.index([label])[0])
        except DataError:
            return None

    splits = [s for s in (dataset.train, dataset.valid, dataset.test, dataset.original_train) if s is not None]

    def resolve(subject: Subject) -> list:
        if subject.kind != "pairs":
            ids = dataset.user_ids if subject.kind == "user" else dataset.item_ids
            return [label for label in subject.ids if index(ids, label) is None]
        users = [index(dataset.user_ids, user) for user, _ in subject.ids]
        items = [index(dataset.item_ids, item) for _, item in subject.ids]
        mapped = np.array([u is not None and i is not None for u, i in zip(users, items)], dtype=bool)
        known = np.zeros(len(subject.ids), dtype=bool)
        u = np.array([x if x is not None else 0 for x in users], dtype=np.int64)
        i = np.array([x if x is not None else 0 for x in items], dtype=np.int64)
        for split in splits:
            known |= mapped & split.contains(u, i)
        return [list(pair) for pair, ok in zip(subject.ids, known) if not ok]

    return resolve
