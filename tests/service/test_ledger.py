"""The ledger: migrations match the ORM, suppression rows are permanent, and the worker's operations
(claim, requeue, fail, publish) keep the invariants the service promises."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, inspect, select, update
from sqlalchemy.exc import DatabaseError

from recunlearn.service.intake import accept
from recunlearn.service.ledger import Base, Erasure, Ledger, ModelVersion, Suppression, model_version_erasures, \
    open_ledger, upgrade
from recunlearn.service.schemas import ErasureRequest
from recunlearn.service.settings import Policy
from recunlearn.service.versions import ErasedEdges, LineageConflict, current_version, publish_version
from recunlearn.service.work_queue import ClaimLost, claim_pending, counts_by_status, mark_failed, queue_depth, \
    requeue_in_progress


def submit(ledger: Ledger, **body) -> Erasure:
    erasure, replayed = accept(ledger, ErasureRequest(**body), None, Policy())
    assert not replayed
    return erasure


def test_migrated_schema_equals_the_orm_metadata(ledger):
    with ledger.engine.connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    assert drift == []
    assert set(inspect(ledger.engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}


def test_upgrade_is_repeatable_and_creates_the_folder(tmp_path):
    url = f"sqlite:///{tmp_path / 'deep' / 'er' / 'ledger.sqlite3'}"
    upgrade(url)
    upgrade(url)   # already at head: nothing to do
    ledger = Ledger(url)
    with ledger.reading() as session:
        assert session.execute(select(Erasure)).all() == []
    ledger.dispose()


def test_in_memory_ledger_works_for_experiments():
    ledger = open_ledger("sqlite://")
    submit(ledger, user="1")
    with ledger.reading() as session:
        assert queue_depth(session) == 1
    ledger.dispose()


def test_suppression_rows_can_be_neither_deleted_nor_changed(ledger):
    submit(ledger, user="7")
    for statement in (delete(Suppression), update(Suppression).values(user_id="8")):
        with pytest.raises(DatabaseError, match="suppression rows are never"):
            with ledger.writing() as session:
                session.execute(statement)
    with ledger.reading() as session:
        assert session.scalars(select(Suppression.user_id)).all() == ["7"]


def test_accept_writes_the_erasure_and_its_suppression_rows_in_one_go(ledger):
    erasure = submit(ledger, pairs=[["1", "10"], ["2", "30"]], reason="art. 17")
    with ledger.reading() as session:
        row = session.get(Erasure, erasure.id)
        rows = session.scalars(select(Suppression).order_by(Suppression.id)).all()
    assert (row.status, row.action, row.subject_kind, row.subject_ids) == ("pending", "erase", "pairs",
                                                                           [["1", "10"], ["2", "30"]])
    assert [(r.kind, r.user_id, r.item_id, r.erasure_id) for r in rows] == [("pair", "1", "10", erasure.id),
                                                                          ("pair", "2", "30", erasure.id)]
    assert row.received_at.tzinfo is not None and row.received_at.utcoffset() == timedelta(0)
    assert row.expected_completion > row.received_at


def test_expected_completion_grows_with_the_queue():
    policy = Policy(batch_window_s=1, batch_apply_s=9, batch_size=10)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert policy.expected_completion(now, 0) == now + timedelta(seconds=10)
    assert policy.expected_completion(now, 9) == now + timedelta(seconds=10)
    assert policy.expected_completion(now, 10) == now + timedelta(seconds=20)


def test_claims_take_the_oldest_pending_erasures_once(ledger):
    first, second, third = (submit(ledger, user=u) for u in ("1", "2", "3"))
    with ledger.writing() as session:
        claimed = claim_pending(session, "worker-a", limit=2)
    assert [e.id for e in claimed] == [first.id, second.id]
    with ledger.writing() as session:
        assert [e.id for e in claim_pending(session, "worker-b", limit=5)] == [third.id]
        assert claim_pending(session, "worker-b", limit=5) == []
    with ledger.reading() as session:
        row = session.get(Erasure, first.id)
        assert (row.status, row.claimed_by, row.attempts) == ("in_progress", "worker-a", 1)
        assert row.started_at is not None
        assert queue_depth(session) == 3


def test_suppression_only_erasures_are_never_claimed(ledger):
    erasure, _ = accept(ledger, ErasureRequest(user="nobody", suppress_only=True), None, Policy(),
                        lambda subject: list(subject.ids))
    assert (erasure.status, erasure.action) == ("completed", "suppress")
    with ledger.writing() as session:
        assert claim_pending(session, "w", limit=10) == []
        assert queue_depth(session) == 0


def test_requeue_returns_a_dead_workers_claims(ledger):
    a, b = submit(ledger, user="1"), submit(ledger, user="2")
    with ledger.writing() as session:
        claim_pending(session, "dead", limit=1)
        claim_pending(session, "alive", limit=1)
    with ledger.writing() as session:
        assert requeue_in_progress(session, worker="dead") == 1
    with ledger.reading() as session:
        assert session.get(Erasure, a.id).status == "pending"
        assert session.get(Erasure, b.id).status == "in_progress"
    with ledger.writing() as session:
        again = claim_pending(session, "new", limit=5)
    assert [e.id for e in again] == [a.id] and again[0].attempts == 2


def test_requeue_by_claim_age(ledger):
    submit(ledger, user="1")
    with ledger.writing() as session:
        claim_pending(session, "w", limit=1)
    with ledger.writing() as session:
        assert requeue_in_progress(session, started_before=datetime.now(timezone.utc) - timedelta(hours=1)) == 0
        assert requeue_in_progress(session, started_before=datetime.now(timezone.utc) + timedelta(seconds=1)) == 1


def test_publishing_completes_the_applied_erasures_in_the_same_transaction(ledger):
    with ledger.writing() as session:
        initial = publish_version(session, parent=None, kind="initial", path="/models/v1", sha256="a" * 64)
    assert initial.version == 1
    a, b = submit(ledger, user="1"), submit(ledger, item="10")
    with ledger.writing() as session:
        claim_pending(session, "w", limit=10)
    with ledger.writing() as session:
        v2 = publish_version(session, parent=1, kind="unlearn", method="unlearnrec", path="/models/v2",
                             sha256="b" * 64, worker="w",
                             applied={a.id: ErasedEdges(3, "c" * 64), b.id: ErasedEdges(5, "d" * 64)})
    assert v2.version == 2
    with ledger.reading() as session:
        rows = {e.id: e for e in session.scalars(select(Erasure))}
        listed = set(session.execute(select(model_version_erasures)).all())
        assert current_version(session).version == 2
        assert counts_by_status(session)["completed"] == 2 and queue_depth(session) == 0
    assert {(e.status, e.model_version, e.claimed_by) for e in rows.values()} == {("completed", 2, None)}
    assert (rows[a.id].erased_edges_count, rows[a.id].erased_edges_sha256) == (3, "c" * 64)
    assert listed == {(2, a.id), (2, b.id)}


def test_a_retrain_lists_every_completed_erasure_and_keeps_the_first_excluding_version(ledger):
    with ledger.writing() as session:
        publish_version(session, parent=None, kind="initial", path="p1", sha256="0" * 64)
    a = submit(ledger, user="1")
    with ledger.writing() as session:
        claim_pending(session, "w", limit=1)
        publish_version(session, parent=1, kind="unlearn", path="p2", sha256="1" * 64, worker="w",
                        applied={a.id: ErasedEdges(1, "e" * 64)})
    with ledger.writing() as session:
        publish_version(session, parent=2, kind="retrain", path="p3", sha256="2" * 64, include_all_completed=True)
    with ledger.reading() as session:
        assert session.get(Erasure, a.id).model_version == 2
        assert set(session.execute(select(model_version_erasures)).all()) == {(2, a.id), (3, a.id)}


def test_publishing_on_a_stale_parent_is_a_lineage_conflict_and_changes_nothing(ledger):
    with ledger.writing() as session:
        publish_version(session, parent=None, kind="initial", path="p1", sha256="0" * 64)
        publish_version(session, parent=1, kind="finetune", path="p2", sha256="1" * 64)
    a = submit(ledger, user="1")
    with ledger.writing() as session:
        claim_pending(session, "w", limit=1)
    with pytest.raises(LineageConflict, match="not the newest"):
        with ledger.writing() as session:
            publish_version(session, parent=1, kind="unlearn", path="p3", sha256="2" * 64, worker="w",
                            applied={a.id: ErasedEdges(1, "e" * 64)})
    with ledger.reading() as session:
        assert session.get(Erasure, a.id).status == "in_progress"
        assert [v.version for v in session.scalars(select(ModelVersion))] == [1, 2]


def test_a_worker_cannot_complete_or_fail_an_erasure_it_no_longer_holds(ledger):
    with ledger.writing() as session:
        publish_version(session, parent=None, kind="initial", path="p1", sha256="0" * 64)
    a = submit(ledger, user="1")
    with ledger.writing() as session:
        claim_pending(session, "slow", limit=1)
    with ledger.writing() as session:
        requeue_in_progress(session, worker="slow")
        claim_pending(session, "fast", limit=1)
    with pytest.raises(ClaimLost, match="claimed by fast"):
        with ledger.writing() as session:
            publish_version(session, parent=1, kind="unlearn", path="p2", sha256="1" * 64, worker="slow",
                            applied={a.id: ErasedEdges(1, "e" * 64)})
    with pytest.raises(ClaimLost):
        with ledger.writing() as session:
            mark_failed(session, "slow", [a.id], "boom")
    with ledger.writing() as session:
        mark_failed(session, "fast", [a.id], "the unlearner raised ValueError")
    with ledger.reading() as session:
        row = session.get(Erasure, a.id)
        assert (row.status, row.error, row.model_version) == ("failed", "the unlearner raised ValueError", None)
        assert current_version(session).version == 1


def test_publish_checks_its_arguments(ledger):
    with ledger.writing() as session:
        with pytest.raises(ValueError, match="initial version has no parent"):
            publish_version(session, parent=None, kind="unlearn", path="p", sha256="0" * 64)
        with pytest.raises(ValueError, match="unknown version kind"):
            publish_version(session, parent=None, kind="snapshot", path="p", sha256="0" * 64)
        with pytest.raises(ValueError, match="name the worker"):
            publish_version(session, parent=None, kind="initial", path="p", sha256="0" * 64,
                            applied={uuid.uuid4(): ErasedEdges(0, "")})


def test_naive_datetimes_are_refused(ledger):
    with pytest.raises(Exception, match="timezone-aware"):
        with ledger.writing() as session:
            session.add(ModelVersion(version=1, kind="initial", path="p", sha256="0" * 64,
                                     published_at=datetime(2026, 1, 1)))
