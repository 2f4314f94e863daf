"""The suppression list: subjects (users, items, user-item pairs; original ids) erased through the service,
filtered out of every split whenever a ledger-backed model's data is loaded, whatever the raw files say.

The list lives in the service's ledger (table `suppression`, rows that are never updated or deleted). A run
records which rows it applied (`through_row`, the last row's id) and their SHA-256, so that loading its
checkpoint later applies exactly the same list, and refuses if the rows read back differ. This module reads
the table with plain SQL (it does not depend on the service package).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace

import numpy as np

from .interactions import DataError, Dataset, IdMap, Interactions

LEDGER_URL_ENV = "RECUNLEARN_LEDGER_URL"   # overrides the recorded URL (a password, or a moved SQLite file)


@dataclass(frozen=True)
class SuppressionList:
    """Erased subjects by original id, as the ledger stores them (strings)."""

    users: frozenset[str] = frozenset()
    items: frozenset[str] = frozenset()
    pairs: frozenset[tuple[str, str]] = frozenset()
    through_row: int = 0                  # the id of the last ledger row read (0: none)

    @property
    def sha256(self) -> str:
        canonical = {"users": sorted(self.users), "items": sorted(self.items),
                     "pairs": sorted(map(list, self.pairs)), "through_row": self.through_row}
        return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()

    def counts(self) -> dict[str, int]:
        return {"users": len(self.users), "items": len(self.items), "pairs": len(self.pairs)}


def read_suppression(url: str, through_row: int | None = None) -> SuppressionList:
    """The ledger's suppression rows up to `through_row` (all of them when None)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    url = os.environ.get(LEDGER_URL_ENV) or url
    limit = "" if through_row is None else " WHERE id <= :through"
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text(f"SELECT id, kind, user_id, item_id FROM suppression{limit} ORDER BY id"),
                                      {"through": through_row}).all()
    except SQLAlchemyError as err:
        raise DataError(f"cannot read the suppression list from the ledger {safe_url(url)}: "
                        f"{str(err.orig if getattr(err, 'orig', None) else err).splitlines()[0]} (is the URL right? "
                        f"set {LEDGER_URL_ENV} to the ledger's URL if it moved or needs a password)") from None
    finally:
        engine.dispose()
    users = {u for _, kind, u, _ in rows if kind == "user"}
    items = {i for _, kind, _, i in rows if kind == "item"}
    pairs = {(u, i) for _, kind, u, i in rows if kind == "pair"}
    last = rows[-1][0] if rows else 0
    return SuppressionList(frozenset(users), frozenset(items), frozenset(pairs),
                           last if through_row is None else through_row)


def safe_url(url: str) -> str:
    """The URL to record with a run or show in a message: its password hidden."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:        # not a URL at all: show it as given
        return repr(url)


def apply_suppression(dataset: Dataset, suppression: SuppressionList) -> Dataset:
    """`dataset` without any interaction of a suppressed user or item, or of a suppressed pair, in every split.

    The result is a dataset in its own right (its origin is the filtered data): a checkpoint trained on it
    stores no list of what was removed. Ids the dataset does not hold are nothing to remove (an erasure of a
    subject these files never had)."""
    users = _known(dataset.user_ids, suppression.users)
    items = _known(dataset.item_ids, suppression.items)
    pair_users, pair_items = _known_pairs(dataset, suppression.pairs)

    named_pairs = Interactions.from_arrays(pair_users, pair_items, dataset.n_users, dataset.n_items,
                                           on_duplicate="drop")

    def kept(split: Interactions) -> Interactions:
        dropped = np.isin(split.users, users) | np.isin(split.items, items)
        if len(named_pairs):
            dropped |= named_pairs.contains(split.users, split.items)
        return split.select(~dropped)

    return replace(dataset, train=kept(dataset.train), valid=kept(dataset.valid), test=kept(dataset.test),
                   original_train=None, shipped_hash="")


def _known(ids: IdMap, labels: frozenset[str]) -> np.ndarray:
    found = []
    for label in labels:
        try:
            found.append(int(ids.index([label])[0]))
        except DataError:
            continue
    return np.asarray(found, dtype=np.int64)


def _known_pairs(dataset: Dataset, pairs: frozenset[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    users, items = [], []
    for user, item in pairs:
        u, i = _known(dataset.user_ids, frozenset([user])), _known(dataset.item_ids, frozenset([item]))
        if len(u) and len(i):
            users.append(int(u[0]))
            items.append(int(i[0]))
    return np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
