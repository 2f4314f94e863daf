"""The worker: micro-batches of acknowledged erasures become published model versions whose data excludes
them, with one signed receipt each; a failing batch fails its erasures only; and a real worker process killed
(SIGKILL) at each step, then restarted, leaves every erasure completed exactly once.

A small LightGCN on ml-100k (2 epochs) with a one-epoch encoder keeps this quick; the model cache is private.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from recunlearn.service import publisher
from recunlearn.service.intake import accept
from recunlearn.service.ledger import Erasure, ModelVersion, Suppression, model_version_erasures, open_ledger
from recunlearn.service.schemas import ErasureRequest
from recunlearn.service.subjects import dataset_resolver
from recunlearn.service.worker import Worker, WorkerSettings
from recunlearn.train.checkpoint import load_checkpoint

from postgres_server import drop_everything

HAS_RECEIPTS = importlib.util.find_spec("recunlearn.service.receipts") is not None
FAULTS = ["worker:after-claim", "worker:before-publish", "worker:after-publish", "worker:after-receipts"]


pytestmark = pytest.mark.usefixtures("isolated_model_cache", "isolated_locks")


def make_service(tmp_path: Path, trained: Path, database_url: str | None = None, **policy):
    settings = WorkerSettings(state_dir=tmp_path / "state", checkpoint=trained, database_url=database_url,
                              policy={"batch_window_s": 0.01, "method": "unlearnrec", **policy})
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"subject_resolver"})))
    return settings, open_ledger(settings.ledger_url()), config


def acknowledge(ledger, settings, data, **body) -> uuid.UUID:
    erasure, _ = accept(ledger, ErasureRequest(**body), None, settings.policy, dataset_resolver(data))
    return erasure.id


def some_pairs(data, user: str, n: int = 2) -> list[list[str]]:
    """`n` training pairs of `user` and one of its test pairs, in original ids."""
    (u,) = data.user_ids.index([user])
    train, test = data.train.select(data.train.users == u), data.test.select(data.test.users == u)
    items = list(train.items[:n]) + list(test.items[:1])
    return [[user, str(data.item_ids.label([i])[0])] for i in items]


def start_worker(config: Path, fault: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RECUNLEARN_FAULT"}
    if fault:
        env["RECUNLEARN_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "recunlearn.service.worker", "--config", str(config), "--once"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def worker_process(config: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    return finish(start_worker(config, fault))


# ------------------------------------------------------------------------------------------- invariants

def known_labels(ids) -> set[str]:
    return {str(label) for label in ids.labels.tolist()}


def held(data, row) -> int:
    """How many interactions of the erasure's subject `data` still holds, over train, valid and test."""
    total = 0
    for split in (data.train, data.valid, data.test):
        if row.subject_kind == "pairs":
            known = [(u, i) for u, i in row.subject_ids if u in known_labels(data.user_ids) and i in known_labels(data.item_ids)]
            users = data.user_ids.index([u for u, _ in known])
            items = data.item_ids.index([i for _, i in known])
            total += int(split.contains(users, items).sum())
        else:
            ids = data.user_ids if row.subject_kind == "user" else data.item_ids
            column = split.users if row.subject_kind == "user" else split.items
            total += int((column == ids.index(row.subject_ids)[0]).sum())
    return total


def assert_invariants(settings, ledger, acknowledged: list[uuid.UUID]) -> None:
    with ledger.reading() as session:
        rows = {r.id: r for r in session.scalars(select(Erasure))}
        versions = session.scalars(select(ModelVersion).order_by(ModelVersion.version)).all()
        listed = session.execute(select(model_version_erasures)).all()
        suppressed = session.execute(select(Suppression.kind, Suppression.user_id, Suppression.item_id)).all()
    # every acknowledged erasure completed, by exactly one version that applied it
    for erasure_id in acknowledged:
        row = rows[erasure_id]
        assert row.status == "completed" and row.model_version is not None, (row.status, row.error)
        assert [v for v, e in listed if e == erasure_id] == [row.model_version]
    # each version's data (and so each later one's) excludes every erasure completed by then; hashes match
    for version in versions:
        assert publisher.folder_sha256(Path(version.path)) == version.sha256
        if version.kind == "initial":
            continue
        _, _, data, _ = load_checkpoint(version.path)
        for row in rows.values():
            if row.model_version is not None and row.model_version <= version.version:
                assert held(data, row) == 0, (version.version, row.subject_ids)
    # no version folder (nor leftover) that the ledger does not list
    on_disk = {p.resolve() for p in (settings.state_dir / "versions").iterdir()}
    assert on_disk == {Path(v.path).resolve() for v in versions if v.kind != "initial"}
    # the suppression table covers every erasure
    for row in rows.values():
        if row.subject_kind == "pairs":
            assert {("pair", u, i) for u, i in row.subject_ids} <= set(suppressed)
        else:
            key = (row.subject_kind, row.subject_ids[0], None) if row.subject_kind == "user" else \
                (row.subject_kind, None, row.subject_ids[0])
            assert key in suppressed
    if HAS_RECEIPTS:
        assert_receipts(settings, ledger, acknowledged)


def assert_receipts(settings, ledger, acknowledged) -> None:
    from recunlearn.service import receipts

    key = receipts.public_key_pem(settings.state_dir)
    files = sorted((settings.state_dir / "receipts").glob("*.json"))
    with ledger.reading() as session:
        completed = set(session.scalars(select(Erasure.id).where(Erasure.status == "completed")))
    assert {uuid.UUID(f.stem) for f in files} == completed    # one receipt per completed erasure, no other
    for erasure_id in acknowledged:
        receipt = publisher.read_receipt(settings.state_dir, erasure_id)
        receipts.verify(receipt, key)
        with ledger.reading() as session:
            row = session.get(Erasure, erasure_id)
            after = session.get(ModelVersion, row.model_version)
        assert receipt["erasure_id"] == str(erasure_id) and receipt["suppression"] is True
        assert receipt["erased_edges"] == {"count": row.erased_edges_count, "sha256": row.erased_edges_sha256}
        assert receipt["model_after"] == {"version": after.version, "sha256": after.sha256}
        assert receipt["model_before"]["version"] in (after.version - 1, after.version)


# ------------------------------------------------------------------------------------------------ tests

def test_a_batch_becomes_one_version_that_excludes_every_subject(tmp_path, trained, data):
    settings, ledger, _ = make_service(tmp_path, trained, evidence_test_users=100)
    ids = [acknowledge(ledger, settings, data, user="13"),
           acknowledge(ledger, settings, data, pairs=some_pairs(data, "7")),
           acknowledge(ledger, settings, data, pairs=[["7", some_pairs(data, "7")[0][1]], ["no-such-user", "1"]],
                       suppress_only=True)]
    quiet = acknowledge(ledger, settings, data, user="no-such-user", suppress_only=True)   # suppression only
    worker = Worker(settings, ledger)
    with worker.started():
        assert worker.run_once() == 3
        assert worker.run_once() == 0
    with ledger.reading() as session:
        rows = [session.get(Erasure, i) for i in ids]
        assert [r.model_version for r in rows] == [2, 2, 2]
        (u,) = data.user_ids.index(["13"])
        assert rows[0].erased_edges_count == int((data.train.users == u).sum())
        assert rows[1].erased_edges_count == 2
        assert rows[2].erased_edges_count == 1     # overlaps the pairs erasure: its own edge counts too
        assert rows[0].started_at <= rows[0].completed_at
    assert_invariants(settings, ledger, ids)
    if HAS_RECEIPTS:
        receipt = publisher.read_receipt(settings.state_dir, ids[0])
        assert receipt["subject"] == {"kind": "user", "ids": ["13"]} and receipt["method"] == "unlearnrec"
        evidence = receipt["evidence"]
        assert evidence["request_edge_score_after"] is not None and evidence["reference"] == "none yet"
        # the specification's forgetting evidence, measured on the batch's forgotten edges
        assert 0 <= evidence["forget_rank_after"] <= 1 and isinstance(evidence["nonedge_score"], float)
        assert evidence["evidence_edges"] >= 20 and 0 <= evidence["mia_auc_after"] <= 1
        # utility measured on one sample of 100 test users, before and after (erased users leave it)
        assert evidence["test_metrics_before"]["users"] == 100 and 98 <= evidence["test_metrics_after"]["users"] <= 100
        assert "model_before" not in publisher.read_receipt(settings.state_dir, quiet)

    # only the root's prepared state and the newest version's stay in the working store
    with ledger.reading() as session:
        head = session.scalars(select(ModelVersion).order_by(ModelVersion.version.desc())).first()
    from recunlearn.train.checkpoint import read_meta
    states = {p.name for p in (trained / "unlearners" / "unlearnrec").iterdir()}
    assert states == {read_meta(trained)["dataset_hash"], read_meta(head.path)["dataset_hash"]}

    # the same user again: the newest version already excludes it, so no new version is made
    again = acknowledge(ledger, settings, data, user="13")
    with worker.started():
        assert worker.run_once() == 1
    with ledger.reading() as session:
        row = session.get(Erasure, again)
        assert (row.status, row.model_version, row.erased_edges_count) == ("completed", 2, 0)
        assert len(session.scalars(select(ModelVersion)).all()) == 2
    assert_invariants(settings, ledger, ids + [again])
    ledger.dispose()


def test_a_failing_batch_fails_its_erasures_and_the_loop_goes_on(tmp_path, trained, data, monkeypatch):
    from recunlearn.service import worker as worker_module

    settings, ledger, _ = make_service(tmp_path, trained)
    first = acknowledge(ledger, settings, data, user="21")

    def broken(*args, **kwargs):
        raise RuntimeError("the unlearner ran out of memory")

    monkeypatch.setattr(worker_module, "apply_request", broken)
    worker = Worker(settings, ledger)
    with worker.started():
        assert worker.run_once() == 1
    with ledger.reading() as session:
        row = session.get(Erasure, first)
        assert row.status == "failed" and "ran out of memory" in row.error and row.claimed_by is None
        assert session.scalars(select(Suppression).where(Suppression.erasure_id == first)).all()   # still suppressed
    assert not list((settings.state_dir / "versions").iterdir())
    ledger.dispose()


@pytest.mark.parametrize("fault", FAULTS)
def test_a_worker_killed_at_each_step_completes_every_erasure_exactly_once(tmp_path, trained, data, fault):
    settings, ledger, config = make_service(tmp_path, trained)
    user = {"worker:after-claim": "30", "worker:before-publish": "31", "worker:after-publish": "32",
            "worker:after-receipts": "33"}[fault]
    ids = [acknowledge(ledger, settings, data, user=user),
           acknowledge(ledger, settings, data, pairs=some_pairs(data, "40"))]
    killed = worker_process(config, fault)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with ledger.reading() as session:
        statuses = {r.status for r in session.scalars(select(Erasure))}
    assert statuses == ({"completed"} if fault in ("worker:after-publish", "worker:after-receipts")
                        else {"in_progress"})
    restarted = worker_process(config)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert_invariants(settings, ledger, ids)
    with ledger.reading() as session:
        versions = session.scalars(select(ModelVersion.version)).all()
    assert versions == [1, 2]     # the killed batch was published once, or not at all and then once
    if fault == "worker:before-publish":
        assert "removed unpublished model version folder" in restarted.stderr
    ledger.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request):
    """None (the state folder's SQLite file) or a fresh database on a throwaway PostgreSQL server."""
    if request.param == "sqlite":
        yield None
        return
    server = request.getfixturevalue("postgres_server_url")
    yield server
    drop_everything(server)


def test_several_workers_take_turns_and_take_over_a_dead_workers_batch(tmp_path, trained, data, ledger_url):
    settings, ledger, config = make_service(tmp_path, trained, ledger_url, batch_size=2)
    ids = [acknowledge(ledger, settings, data, user=str(user)) for user in range(60, 68)]
    dead = worker_process(config, "worker:before-publish")      # dies holding a claim and a model folder
    assert dead.returncode == -9, dead.stderr[-2000:]
    first, second = start_worker(config), start_worker(config)   # two at once on one ledger and state folder
    done = [finish(first), finish(second)]
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
    log = "".join(d.stderr for d in done)
    assert "requeued 2 erasures claimed by a worker that died" in log
    assert "removed unpublished model version folder" in log
    assert "LineageConflict" not in log and "goes back to the queue" not in log   # turns, not races
    with ledger.reading() as session:
        versions = session.scalars(select(ModelVersion.version).order_by(ModelVersion.version)).all()
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 1 + len(ids) // 2
    assert log.count("published version") == len(versions) - 1     # each version published by one worker, once
    assert_invariants(settings, ledger, ids)
    ledger.dispose()
