"""`GET /v1/recommendations/{user}?k=20`: top-k items from the current published model version, the user's seen
items (train and valid of that version's data) excluded, in the dataset's original ids. A user unknown to the
version's data, or with no interaction left in any of its splits (wholly erased), is a 404.

The suppression list applies from acknowledgement on, before any model changes: a suppressed user is a 404,
and a taken-down item or a suppressed (user, item) pair is never listed. Items a take-down removed from the
version's catalogue are never listed either."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import and_, or_, select

from ..auth import Principal, require
from ..ledger import Suppression
from ..versions import current_version
from .errors import responses

router = APIRouter(tags=["recommendations"])


@dataclass(frozen=True)
class ServedModel:
    version: int
    model: Any
    data: Any
    seen: Any              # train ∪ valid: excluded from the lists
    unseen: np.ndarray     # per user: how many items the lists can hold (before catalogue removals)
    active: np.ndarray     # per user: any interaction in train, valid or test
    removed: np.ndarray    # items a take-down removed from the catalogue: scored last, never listed
    item_index: dict       # original item id (str) -> index

    def available(self, user: int) -> int:
        """How many items `user`'s list can hold: the unseen ones still in the catalogue."""
        removed_unseen = len(self.removed) - int(self.seen.contains(np.full(len(self.removed), user),
                                                                    self.removed).sum()) if len(self.removed) else 0
        return int(self.unseen[user]) - removed_unseen


class ModelCache:
    """The current published version's model and data, loaded once per version and replaced when the
    ledger's current version changes."""

    def __init__(self) -> None:
        self._lock, self._served = threading.Lock(), None

    def get(self, ledger) -> ServedModel:
        with ledger.reading() as session:
            head = current_version(session)
            if head is None:
                raise HTTPException(503, "no model version is published yet")
            version, path = head.version, head.path
        with self._lock:
            if self._served is None or self._served.version != version:
                self._served = self._load(version, path)
            return self._served

    @staticmethod
    def _load(version: int, path: str) -> ServedModel:
        from ...erasure import checkpoint_scorer
        from ...train.checkpoint import catalogue_removed, load_checkpoint
        model, _, data, _ = load_checkpoint(path)
        seen = data.train.union(data.valid)
        seen_degree = seen.user_degree()
        active = seen_degree + data.test.user_degree() > 0
        item_index = {str(label): index for index, label in enumerate(data.item_ids.labels.tolist())}
        return ServedModel(version, checkpoint_scorer(Path(path), model), data, seen, data.n_items - seen_degree,
                           active, catalogue_removed(path), item_index)


def suppressed_for(session, user: str) -> tuple[bool, set[str]]:
    """Whether `user` is on the suppression list as a whole, and the items suppressed for them: every taken-down
    item and the items of their suppressed pairs (original ids)."""
    rows = session.execute(select(Suppression.kind, Suppression.item_id).where(or_(
        Suppression.kind == "item", and_(Suppression.kind.in_(("user", "pair")), Suppression.user_id == user)))).all()
    return any(kind == "user" for kind, _ in rows), {item for kind, item in rows if kind != "user"}


_cache_lock = threading.Lock()


def model_cache(app) -> ModelCache:
    with _cache_lock:
        if not hasattr(app.state, "model_cache"):
            app.state.model_cache = ModelCache()
        return app.state.model_cache


@router.get("/v1/recommendations/{user}", summary="Top-k items for a user from the current model version",
            responses={200: {"description": '{"user", "model_version", "k", "items": [original item ids]}'},
                       **responses(401, 403, 404, 422), 503: {"description": "no model version published yet"}})
def get_recommendations(user: str, request: Request, principal: Annotated[Principal, require("recs:read")],
                        k: Annotated[int, Query(ge=1, description="list length (at most the number of items; "
                                                "the list stops at the user's unseen items)")] = 20) -> JSONResponse:
    from ...data.interactions import DataError
    from ...eval.ranking import topk_items
    served = model_cache(request.app).get(request.app.state.ledger)
    data = served.data
    if k > data.n_items:
        raise HTTPException(422, f"k must be between 1 and the number of items ({data.n_items}), got {k}")
    try:
        (index,) = data.user_ids.index([user])
    except DataError:
        index = None
    if index is None or not served.active[index]:
        raise HTTPException(404, f"no user {user!r} in model version {served.version}")
    with request.app.state.ledger.reading() as session:
        user_erased, hidden_labels = suppressed_for(session, user)
    if user_erased:
        raise HTTPException(404, f"no user {user!r}: erased")
    index = int(index)
    known = [label for label in hidden_labels if label in served.item_index]
    hidden = np.setdiff1d(np.array([served.item_index[label] for label in known], dtype=np.int64), served.removed)
    if len(hidden):    # suppressed and not seen (seen items are masked anyway)
        hidden = hidden[~served.seen.contains(np.full(len(hidden), index), hidden)]
    available = served.available(index) - len(hidden)
    top = topk_items(served.model, [index], min(data.n_items, k + len(hidden)), served.seen).numpy()[0]
    top = top[~np.isin(top, hidden)][:min(k, available)]
    items = [str(label) for label in data.item_ids.label(top)]
    return JSONResponse({"user": user, "model_version": served.version, "k": k, "items": items})
