"""`GET /v1/recommendations/{user}?k=20`: top-k items from the current published model version, the user's seen
items (train and valid of that version's data) excluded, in the dataset's original ids. A user unknown to the
version's data, or with no interaction left in any of its splits (wholly erased), is a 404."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from ..auth import Principal, require
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
        return ServedModel(version, checkpoint_scorer(Path(path), model), data, seen, data.n_items - seen_degree,
                           active, catalogue_removed(path))


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
    top = topk_items(served.model, [int(index)], k, served.seen).numpy()[0][:served.available(int(index))]
    items = [str(label) for label in data.item_ids.label(top)]
    return JSONResponse({"user": user, "model_version": served.version, "k": k, "items": items})
