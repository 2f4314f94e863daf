"""Group commit: concurrent writes share one transaction, each caller answered only after that commit, a failing
write rolled back alone, a failed commit raised in every caller."""
from __future__ import annotations

import contextlib
import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from recunlearn.service.group_commit import GroupCommit


@pytest.fixture
def scratch(ledger):
    with ledger.writing() as session:
        session.execute(text("CREATE TABLE scratch (n INTEGER PRIMARY KEY)"))
    return ledger


def insert(n: int):
    def write(session):
        session.execute(text("INSERT INTO scratch (n) VALUES (:n)"), {"n": n})
        return n
    return write


def half_done_then_fails(n: int):
    def write(session):
        insert(n)(session)
        raise ValueError("the write found something wrong after its first statement")
    return write


def rows_seen_by_another_connection(ledger) -> list[int]:
    engine = create_engine(ledger.url)
    try:
        with engine.connect() as connection:
            return sorted(connection.execute(text("SELECT n FROM scratch")).scalars())
    finally:
        engine.dispose()


def run_in_threads(group, writes) -> tuple[list, list]:
    results, errors = [None] * len(writes), [None] * len(writes)

    def call(k):
        try:
            results[k] = group.run(writes[k])
        except Exception as err:
            errors[k] = err
    threads = [threading.Thread(target=call, args=(k,)) for k in range(len(writes))]
    for t in threads:
        t.start()
    return threads, (results, errors)


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def committer_blocked_behind(ledger):
    """The ledger's writing(), and an event set when the committer has taken a batch and waits for the lock."""
    entered = threading.Event()

    @contextlib.contextmanager
    def writing():
        entered.set()
        with ledger.writing() as session:
            yield session
    return writing, entered


def test_writes_waiting_together_share_one_commit_and_are_durable_when_answered(scratch):
    writing, entered = committer_blocked_behind(scratch)
    group = GroupCommit(writing)
    with scratch.writing():          # hold the write lock: the first write blocks, the next ten queue behind it
        first, (first_results, _) = run_in_threads(group, [insert(0)])
        assert entered.wait(10)
        rest, (results, errors) = run_in_threads(group, [insert(n) for n in range(1, 11)])
        wait_until(lambda: group._queue.qsize() == 10)
        assert first_results == [None] and results == [None] * 10     # nobody answered before the commit
    for t in first + rest:
        t.join(10)
    assert first_results == [0] and results == list(range(1, 11)) and errors == [None] * 10
    assert group.commits == 2                                         # one for the first, one for the ten
    assert rows_seen_by_another_connection(scratch) == list(range(11))
    group.close()


def test_a_failing_write_is_rolled_back_alone_and_raises_in_its_own_caller(scratch):
    writing, entered = committer_blocked_behind(scratch)
    group = GroupCommit(writing)
    group.run(insert(5))
    entered.clear()
    with scratch.writing():
        first, _ = run_in_threads(group, [insert(100)])
        assert entered.wait(10)
        threads, (results, errors) = run_in_threads(
            group, [insert(1), insert(5), half_done_then_fails(7), insert(2)])   # 5 exists
        wait_until(lambda: group._queue.qsize() == 4)
    for t in first + threads:
        t.join(10)
    assert results == [1, None, None, 2]
    assert errors[0] is None and isinstance(errors[1], IntegrityError) and errors[3] is None
    assert isinstance(errors[2], ValueError)
    assert rows_seen_by_another_connection(scratch) == [1, 2, 5, 100]
    group.close()


def test_a_failed_commit_raises_in_every_caller_and_keeps_nothing(scratch):
    @contextlib.contextmanager
    def writing_then_disk_full():
        with scratch.writing() as session:
            yield session
            raise OSError("disk full")

    group = GroupCommit(writing_then_disk_full)
    threads, (results, errors) = run_in_threads(group, [insert(n) for n in range(4)])
    for t in threads:
        t.join(10)
    assert all(isinstance(e, OSError) for e in errors) and results == [None] * 4
    assert rows_seen_by_another_connection(scratch) == []
    group.close()


def test_the_committer_survives_a_failed_commit(scratch):
    failing = {"on": True}

    @contextlib.contextmanager
    def writing():
        with scratch.writing() as session:
            yield session
            if failing["on"]:
                raise OSError("disk full")

    group = GroupCommit(writing)
    with pytest.raises(OSError, match="disk full"):
        group.run(insert(1))
    failing["on"] = False
    assert group.run(insert(2)) == 2
    assert rows_seen_by_another_connection(scratch) == [2]
    group.close()


def test_a_grouped_write_may_not_start_another(scratch):
    group = GroupCommit(scratch.writing)
    with pytest.raises(RuntimeError, match="wait for itself"):
        group.run(lambda session: group.run(insert(1)))
    group.close()


def test_acknowledgements_go_through_the_group_commit(client, ledger, writer):
    before = ledger._group.commits
    answer = client.post("/v1/erasures", json={"user": "1"}, headers=writer)
    assert answer.status_code == 202
    assert ledger._group.commits == before + 1


def test_acknowledgements_committed_together_still_queue_behind_each_other(ledger):
    """The queue is counted once per transaction; each grouped acknowledgement adds itself to the count."""
    from recunlearn.service.intake import record
    from recunlearn.service.schemas import ErasureRequest
    from recunlearn.service.settings import Policy

    policy = Policy(batch_size=1)
    with ledger.writing() as session:
        made = []
        for user in ("1", "2", "3"):
            request = ErasureRequest(user=user)
            made.append(record(session, request, request.subject(), None, request.sha256(), "erase", policy))
    waits = [(e.expected_completion - e.received_at).total_seconds() for e in made]
    step = policy.batch_window_s + policy.batch_apply_s
    assert [round(w / step) for w in waits] == [1, 2, 3]
