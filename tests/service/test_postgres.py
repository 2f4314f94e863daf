"""The ledger on PostgreSQL: the same migrations without drift, permanent suppression rows, and claims by
several workers at once (FOR UPDATE SKIP LOCKED) that never overlap. Against a real server: a throwaway
cluster started from the machine's PostgreSQL binaries for this module, or the empty database named by
RECUNLEARN_TEST_POSTGRES."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import delete, select, text

from recunlearn.service.intake import accept
from recunlearn.service.ledger import Base, ModelVersion, Suppression, open_ledger
from recunlearn.service.schemas import ErasureRequest
from recunlearn.service.settings import Policy
from recunlearn.service.versions import LineageConflict, publish_version
from recunlearn.service.work_queue import claim_pending

from postgres_server import drop_everything


@pytest.fixture
def pg_ledger(postgres_server_url):
    ledger = open_ledger(postgres_server_url)
    yield ledger
    ledger.dispose()
    drop_everything(postgres_server_url)


def test_migrations_match_the_orm_on_postgresql(pg_ledger):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with pg_ledger.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                Base.metadata) == []


def test_suppression_rows_are_permanent_on_postgresql(pg_ledger):
    accept(pg_ledger, ErasureRequest(user="1"), None, Policy())
    for statement in (delete(Suppression), text("TRUNCATE suppression CASCADE")):
        with pytest.raises(Exception, match="suppression rows are never"):
            with pg_ledger.writing() as session:
                session.execute(statement)


def test_concurrent_claims_never_overlap(pg_ledger):
    for n in range(40):
        accept(pg_ledger, ErasureRequest(user=str(n)), None, Policy())
    claimed: dict[str, list] = {}
    barrier = threading.Barrier(4)

    def work(name: str) -> None:
        barrier.wait()
        mine = []
        while True:
            with pg_ledger.writing() as session:
                rows = claim_pending(session, name, limit=3)
            if not rows:
                break
            mine += [r.id for r in rows]
        claimed[name] = mine

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in claimed.values() for i in ids]
    assert len(every) == len(set(every)) == 40


def test_two_publications_on_one_parent_conflict(pg_ledger):
    with pg_ledger.writing() as session:
        publish_version(session, parent=None, kind="initial", path="p1", sha256="0" * 64)
    outcomes = []
    barrier = threading.Barrier(2)

    def publish(n: int) -> None:
        barrier.wait()
        try:
            with pg_ledger.writing() as session:
                publish_version(session, parent=1, kind="finetune", path=f"p2-{n}", sha256=f"{n}" * 64)
            outcomes.append("published")
        except LineageConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "published"]
    with pg_ledger.reading() as session:
        assert session.scalars(select(ModelVersion.version)).all() == [1, 2]
