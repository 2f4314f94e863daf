"""Published model versions: the lineage is one line (version n+1 continues version n), and publishing a
version completes the erasures it applied, in the same transaction. Call inside `Ledger.writing()`, after
the model folder is complete on disk (`storage.atomic_folder`): the ledger row is the publication."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .ledger import VERSION_KINDS, Erasure, ModelVersion, model_version_erasures, utcnow
from .work_queue import claimed_by_worker


@dataclass(frozen=True)
class ErasedEdges:
    """What one erasure removed from the training data: the count and SHA-256 of the edge set."""

    count: int
    sha256: str


class LineageConflict(RuntimeError):
    """Another version was published on the same parent first: rebase on the new head and try again."""


def current_version(session: Session) -> Optional[ModelVersion]:
    return session.scalars(select(ModelVersion).order_by(ModelVersion.version.desc()).limit(1)).first()


def publish_version(session: Session, *, parent: Optional[int], kind: str, path: str, sha256: str,
                    method: Optional[str] = None, worker: Optional[str] = None,
                    applied: Mapping[uuid.UUID, ErasedEdges] | None = None, also_includes: Iterable[uuid.UUID] = (),
                    include_all_completed: bool = False) -> ModelVersion:
    """Record version parent+1 (1 for the initial model, whose parent is None) and complete the erasures in
    `applied` (claimed by `worker`), which it is the first version to exclude. It also lists `also_includes`
    and, for a retrain on suppressed data, every completed erasure (`include_all_completed`), so that the
    chain from a request to every later model can be shown. Raises LineageConflict when `parent` is no
    longer the newest version, ClaimLost when an applied erasure is not `worker`'s claim."""
    applied = dict(applied or {})
    if kind not in VERSION_KINDS:
        raise ValueError(f"unknown version kind {kind!r}; known kinds: {', '.join(VERSION_KINDS)}")
    if (kind == "initial") != (parent is None):
        raise ValueError("the initial version has no parent, and every other version has one")
    if applied and worker is None:
        raise ValueError("name the worker whose claimed erasures this version applies")
    head = current_version(session)
    if (head.version if head else None) != parent:
        raise LineageConflict(f"version {parent} is not the newest (the newest is "
                              f"{head.version if head else 'none'}); apply the erasures on the newest version")
    rows = claimed_by_worker(session, worker, list(applied)) if applied else []
    now = utcnow()
    version = ModelVersion(version=(parent or 0) + 1, kind=kind, method=method, path=path, sha256=sha256,
                           published_at=now)
    session.add(version)
    try:
        session.flush()
    except IntegrityError as err:   # PostgreSQL: another worker published this version number first
        raise LineageConflict(f"version {version.version} was published by another worker; rebase and retry") \
            from err
    for row in rows:
        edges = applied[row.id]
        row.status, row.completed_at, row.claimed_by, row.model_version = "completed", now, None, version.version
        row.erased_edges_count, row.erased_edges_sha256 = edges.count, edges.sha256
    included = set(applied) | set(also_includes)
    if include_all_completed:
        included |= set(session.scalars(select(Erasure.id).where(Erasure.status == "completed")))
    if included:
        session.execute(insert(model_version_erasures),
                        [{"version": version.version, "erasure_id": i} for i in sorted(included)])
    session.flush()
    return version


def complete_on_version(session: Session, *, version: int, worker: str,
                        applied: Mapping[uuid.UUID, ErasedEdges]) -> None:
    """Complete `worker`'s claimed erasures that the published `version` already excludes (an earlier erasure
    removed everything they name), and list them among that version's erasures: no new model is needed."""
    rows = claimed_by_worker(session, worker, list(applied))
    now = utcnow()
    for row in rows:
        edges = applied[row.id]
        row.status, row.completed_at, row.claimed_by, row.model_version = "completed", now, None, version
        row.erased_edges_count, row.erased_edges_sha256 = edges.count, edges.sha256
    if rows:
        session.execute(insert(model_version_erasures), [{"version": version, "erasure_id": r.id} for r in rows])
    session.flush()
