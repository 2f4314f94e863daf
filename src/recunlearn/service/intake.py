"""Recording an erasure request: idempotency, the subject check, and one transaction that writes the
erasure and its suppression rows. What `accept` returns is committed (acknowledged means durable)."""
from __future__ import annotations

import uuid
from typing import Optional

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .ledger import Erasure, Ledger, Suppression, utcnow
from .schemas import ErasureRequest
from .settings import Policy
from .subjects import Subject, SubjectResolver
from .work_queue import queue_depth



class IdempotencyConflict(Exception):
    """The key was used before for a different request body."""

    def __init__(self, key_name: str, key: str, erasure_id: uuid.UUID):
        super().__init__(f"{key_name} {key!r} was already used for a different request (erasure {erasure_id}); "
                         "resend that request unchanged, or use a new key for a new request")
        self.erasure_id = erasure_id


class UnknownSubject(Exception):
    """The served data does not know some of the subject's ids, and the caller did not ask for suppression."""

    def __init__(self, subject: Subject, unknown: list):
        super().__init__(f"unknown {subject.describe(unknown)}: not in the served data; send "
                         '"suppress_only": true to add it to the suppression list anyway')
        self.unknown = unknown


def accept(ledger: Ledger, request: ErasureRequest, key: Optional[str], policy: Policy,
           resolver: Optional[SubjectResolver] = None) -> tuple[Erasure, bool]:
    """Record `request` (idempotency key `key`, else its subject_request_id, else none) and return the erasure
    with whether it is a replay of an earlier one. Raises IdempotencyConflict or UnknownSubject, writing
    nothing. Without a resolver every id counts as known."""
    digest = request.sha256()
    with ledger.reading() as session:
        earlier = find_earlier(session, request, key, digest)
    if earlier is not None:
        return earlier, True
    subject = request.subject()
    unknown = resolver(subject) if resolver is not None else []
    if unknown and not request.suppress_only:
        raise UnknownSubject(subject, unknown)
    action = "suppress" if len(unknown) == len(subject.ids) else "erase"

    def write(session: Session) -> tuple[Erasure, bool]:
        earlier = find_earlier(session, request, key, digest)
        if earlier is not None:
            return earlier, True
        return record(session, request, subject, key, digest, action, policy), False

    # Committed together with the other acknowledgements waiting at the same moment: one durable commit for
    # many requests instead of one each.
    try:
        return ledger.write_grouped(write)
    except IntegrityError:
        if key is None and request.subject_request_id is None:
            raise
        return ledger.write_grouped(write)   # another process took the key after our check: replay it now


def find_earlier(session: Session, request: ErasureRequest, key: Optional[str], digest: str) -> Optional[Erasure]:
    """The erasure recorded under the same key or subject_request_id, if any; a different body is a conflict."""
    conditions = []
    if key is not None:
        conditions.append(Erasure.idempotency_key == key)
    if request.subject_request_id is not None:
        conditions.append(Erasure.subject_request_id == request.subject_request_id)
    if not conditions:
        return None
    earlier = session.scalars(select(Erasure).where(or_(*conditions)).limit(1)).first()
    if earlier is None or earlier.request_sha256 == digest:
        return earlier
    if key is not None and earlier.idempotency_key == key:
        raise IdempotencyConflict("Idempotency-Key", key, earlier.id)
    raise IdempotencyConflict("subject_request_id", str(request.subject_request_id), earlier.id)


def record(session: Session, request: ErasureRequest, subject: Subject, key: Optional[str], digest: str,
           action: str, policy: Policy) -> Erasure:
    now = utcnow()
    suppression = action == "suppress"
    ahead = 0 if suppression else queue_ahead(session)
    erasure = Erasure(
        id=uuid.uuid4(), subject_kind=subject.kind, subject_ids=[list(i) if subject.kind == "pairs" else i
                                                                 for i in subject.ids],
        reason=request.reason, subject_request_id=request.subject_request_id,
        idempotency_key=key if key is not None else (str(request.subject_request_id)
                                                      if request.subject_request_id else None),
        request_sha256=digest, suppress_only=request.suppress_only, action=action,
        status="completed" if suppression else "pending", received_at=now,
        expected_completion=now if suppression else policy.expected_completion(now, ahead),
        completed_at=now if suppression else None, attempts=0)
    session.add(erasure)
    session.flush()   # the erasure row first: suppression rows refer to it
    session.add_all(suppression_rows(erasure.id, subject, now))
    session.flush()
    if not suppression:
        session.info[QUEUE_DEPTH] = ahead + 1
    return erasure


QUEUE_DEPTH = "recunlearn.queue_depth"


def queue_ahead(session: Session) -> int:
    """The erasures waiting for a model, counted once per transaction: the other acknowledgements committed
    together with this one (`Ledger.write_grouped`) add themselves to the count instead of counting again."""
    if QUEUE_DEPTH not in session.info:
        session.info[QUEUE_DEPTH] = queue_depth(session)
    return session.info[QUEUE_DEPTH]


def suppression_rows(erasure_id: uuid.UUID, subject: Subject, now) -> list[Suppression]:
    if subject.kind == "pairs":
        return [Suppression(kind="pair", user_id=u, item_id=i, erasure_id=erasure_id, added_at=now)
                for u, i in subject.ids]
    column = "user_id" if subject.kind == "user" else "item_id"
    return [Suppression(kind=subject.kind, erasure_id=erasure_id, added_at=now, **{column: subject.ids[0]})]
