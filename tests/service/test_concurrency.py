"""Requests racing on one idempotency key make one erasure; the others replay it."""
from __future__ import annotations

import threading

from sqlalchemy import func, select

from recunlearn.service.intake import accept
from recunlearn.service.ledger import Erasure, Suppression
from recunlearn.service.schemas import ErasureRequest
from recunlearn.service.settings import Policy


def test_threads_posting_one_key_at_once_make_exactly_one_erasure(client, ledger, writer):
    threads, barrier = 12, threading.Barrier(12)
    answers = []

    def post() -> None:
        barrier.wait()
        answers.append(client.post("/v1/erasures", json={"pairs": [["1", "10"], ["1", "20"]]},
                                   headers={**writer, "Idempotency-Key": "same-key"}))

    workers = [threading.Thread(target=post) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert [a.status_code for a in answers] == [202] * threads
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == threads - 1
    with ledger.reading() as session:
        assert session.scalar(select(func.count()).select_from(Erasure)) == 1
        assert session.scalar(select(func.count()).select_from(Suppression)) == 2


def test_a_key_taken_between_the_check_and_the_write_is_replayed(ledger):
    """The race made deterministic: another request records the key while this one resolves its subject."""
    request = ErasureRequest(user="1")

    def resolver_racing_another_request(subject):
        accept(ledger, request, "k", Policy())
        return []

    erasure, replayed = accept(ledger, request, "k", Policy(), resolver_racing_another_request)
    assert replayed
    with ledger.reading() as session:
        assert session.scalars(select(Erasure.id)).all() == [erasure.id]


def test_concurrent_distinct_erasures_are_all_recorded(client, ledger, writer):
    barrier = threading.Barrier(8)
    answers = []

    def post(n: int) -> None:
        barrier.wait()
        answers.append(client.post("/v1/erasures", json={"user": "1"},
                                   headers={**writer, "Idempotency-Key": f"key-{n}"}))

    workers = [threading.Thread(target=post, args=(n,)) for n in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(a.status_code for a in answers) == [202] * 8
    with ledger.reading() as session:
        assert session.scalar(select(func.count()).select_from(Erasure)) == 8
