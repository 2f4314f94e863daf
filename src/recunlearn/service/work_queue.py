"""The erasure queue as a worker sees it: claim pending erasures, give claims back after a crash, record a
failure, and count what waits. Call each inside `Ledger.writing()` (claims and changes) or `reading()`.

A claim is `SELECT ... FOR UPDATE SKIP LOCKED` where the database has it (PostgreSQL: several workers take
disjoint rows); on SQLite the writing session's BEGIN IMMEDIATE makes the whole claim one writer's."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Iterable, Optional

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .ledger import ERASURE_STATUSES, Erasure, utcnow

AWAITING_MODEL = ("pending", "in_progress")


def claim_pending(session: Session, worker: str, limit: int) -> list[Erasure]:
    """Up to `limit` pending erasures that need a model change, oldest first, now `in_progress` and claimed by
    `worker` (a name unique to the live worker process, e.g. host:pid:uuid)."""
    rows = list(session.scalars(
        select(Erasure).where(Erasure.status == "pending", Erasure.action == "erase")
        .order_by(Erasure.received_at, Erasure.id).limit(limit).with_for_update(skip_locked=True)))
    now = utcnow()
    for row in rows:
        row.status, row.started_at, row.claimed_by, row.attempts = "in_progress", now, worker, row.attempts + 1
    session.flush()
    return rows


def requeue_in_progress(session: Session, worker: Optional[str] = None,
                        started_before: Optional[datetime] = None) -> int:
    """Return `in_progress` erasures to `pending` (all of them, or those claimed by `worker`, or claimed before
    `started_before`): what a restarted worker does with claims whose model was never published. Returns how
    many."""
    query = update(Erasure).where(Erasure.status == "in_progress")
    if worker is not None:
        query = query.where(Erasure.claimed_by == worker)
    if started_before is not None:
        query = query.where(Erasure.started_at < started_before)
    result = session.execute(query.values(status="pending", claimed_by=None, started_at=None)
                             .execution_options(synchronize_session=False))
    return result.rowcount


def mark_failed(session: Session, worker: str, erasure_ids: Iterable[uuid.UUID], error: str) -> None:
    """`worker`'s claimed erasures failed (they stay suppressed; an operator looks at `error`)."""
    ids = list(erasure_ids)
    rows = claimed_by_worker(session, worker, ids)
    now = utcnow()
    for row in rows:
        row.status, row.completed_at, row.error, row.claimed_by = "failed", now, error, None
    session.flush()


def claimed_by_worker(session: Session, worker: str, ids: list[uuid.UUID]) -> list[Erasure]:
    """The erasures `ids`, locked; each must be in progress under `worker` (else ClaimLost)."""
    rows = list(session.scalars(select(Erasure).where(Erasure.id.in_(ids)).with_for_update()))
    missing = set(ids) - {r.id for r in rows}
    if missing:
        raise LookupError(f"no erasure {sorted(map(str, missing))[0]} in the ledger")
    foreign = [r for r in rows if r.status != "in_progress" or r.claimed_by != worker]
    if foreign:
        r = foreign[0]
        raise ClaimLost(f"erasure {r.id} is {r.status}" + (f", claimed by {r.claimed_by}" if r.claimed_by else "")
                        + f", not in progress under {worker}: its claim was given back or taken over")
    return rows


class ClaimLost(RuntimeError):
    """A worker tried to finish an erasure it no longer holds (requeued after a presumed crash)."""


def counts_by_status(session: Session) -> dict[str, int]:
    counts = dict(session.execute(select(Erasure.status, func.count()).group_by(Erasure.status)).all())
    return {status: int(counts.get(status, 0)) for status in ERASURE_STATUSES}


def queue_depth(session: Session) -> int:
    """Acknowledged erasures that wait for a published model (pending or in progress)."""
    return int(session.scalar(select(func.count()).select_from(Erasure).where(
        Erasure.status.in_(AWAITING_MODEL), Erasure.action == "erase")))
