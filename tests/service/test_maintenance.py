"""Scheduled maintenance: when the policy asks for a fine-tune or a retrain, what each publishes (a retrain on
the suppression-filtered data with the unlearner prepared again, listing every completed erasure; a fine-tune
of the newest version whose weights the next micro-batch continues from), and the admin route that asks for
one now. A small LightGCN on ml-100k keeps it quick; the model cache is private."""
from __future__ import annotations

import json
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from recunlearn.erasure import method_state_dir
from recunlearn.service import maintenance
from recunlearn.service.auth import create_token
from recunlearn.service.intake import accept
from recunlearn.service.ledger import Erasure, ModelVersion, model_version_erasures, open_ledger, utcnow
from recunlearn.service.schemas import ErasureRequest
from recunlearn.service.settings import Policy
from recunlearn.service.subjects import dataset_resolver
from recunlearn.service.versions import ErasedEdges, publish_version
from recunlearn.service.work_queue import claim_pending
from recunlearn.service.worker import Worker, WorkerSettings
from recunlearn.train.checkpoint import load_checkpoint, root_of

pytestmark = pytest.mark.usefixtures("isolated_model_cache", "isolated_locks")
QUICK_ENCODER = ["epochs=1", "batch_size=8192", "lr=0.05"]


def make_worker(tmp_path: Path, trained: Path, **policy) -> tuple[Worker, WorkerSettings]:
    settings = WorkerSettings(state_dir=tmp_path / "state", checkpoint=trained, method_settings=QUICK_ENCODER,
                              policy={"batch_window_s": 0.01, "method": "unlearnrec", "finetune_epochs": 2, **policy})
    return Worker(settings, open_ledger(settings.ledger_url())), settings


def erase(worker: Worker, data, **body) -> uuid.UUID:
    erasure, _ = accept(worker.ledger, ErasureRequest(**body), None, worker.settings.policy, dataset_resolver(data))
    return erasure.id


def held_by(data, user: str) -> int:
    (u,) = data.user_ids.index([user])
    return sum(int((split.users == u).sum()) for split in (data.train, data.valid, data.test))


def test_the_policy_says_when_maintenance_is_due(tmp_path):
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    policy = Policy(finetune_every=2, finetune_interval_h=24, retrain_interval_h=168)
    now = utcnow()
    with ledger.writing() as session:
        assert maintenance.due(session, policy, now) is None          # nothing published yet
        publish_version(session, parent=None, kind="initial", path="v1", sha256="1" * 64)
        assert maintenance.due(session, policy, now) is None          # nothing applied since
    ids = [accept(ledger, ErasureRequest(user=str(n)), None, policy)[0].id for n in range(2)]
    with ledger.writing() as session:
        claim_pending(session, "w", limit=1)
        publish_version(session, parent=1, kind="unlearn", path="v2", sha256="2" * 64, worker="w",
                        applied={ids[0]: ErasedEdges(1, "0" * 64)})
        assert maintenance.due(session, policy, now) is None          # 1 of 2 erasures
        assert maintenance.due(session, policy, now + timedelta(hours=25)) == "finetune"
        claim_pending(session, "w", limit=1)
        publish_version(session, parent=2, kind="unlearn", path="v3", sha256="3" * 64, worker="w",
                        applied={ids[1]: ErasedEdges(1, "0" * 64)})
        assert maintenance.due(session, policy, now) == "finetune"
        assert maintenance.due(session, policy, now + timedelta(hours=169)) == "retrain"
        publish_version(session, parent=3, kind="finetune", path="v4", sha256="4" * 64)
        assert maintenance.due(session, policy, now) is None          # refreshed
    ledger.dispose()


def test_a_retrain_trains_on_suppressed_data_prepares_again_and_lists_every_erasure(tmp_path, trained, data):
    worker, settings = make_worker(tmp_path, trained)
    with worker.started():
        first = erase(worker, data, user="1")
        assert worker.run_once() == 1
        pending = erase(worker, data, user="2")          # acknowledged, not applied yet: suppressed already
        assert worker.maintain("retrain") == 3
        with worker.ledger.reading() as session:
            version = session.get(ModelVersion, 3)
            listed = set(session.scalars(select(model_version_erasures.c.erasure_id)
                                         .where(model_version_erasures.c.version == 3)))
        assert version.kind == "retrain" and listed == {first}
        model, run, retrained, _ = load_checkpoint(version.path)
        assert held_by(retrained, "1") == held_by(retrained, "2") == 0 and held_by(data, "2") > 0
        assert run.data.suppression is not None and root_of(version.path) == Path(version.path)
        assert (method_state_dir(Path(version.path), "unlearnrec", retrained.hash) / "unlearner.json").is_file()
        # the pending erasure completes on the retrained version: it holds nothing of the subject any more
        assert worker.run_once() == 1
        nxt = erase(worker, data, user="3")
        assert worker.run_once() == 1
    with worker.ledger.reading() as session:
        assert session.get(Erasure, pending).model_version == 3
        newest = session.get(ModelVersion, session.get(Erasure, nxt).model_version)
    assert newest.version == 4 and root_of(newest.path) == Path(version.path)   # lineage restarts at the retrain
    assert held_by(load_checkpoint(newest.path)[2], "3") == 0
    worker.ledger.dispose()


def test_a_finetune_publishes_new_weights_that_the_next_batch_continues_from(tmp_path, trained, data):
    worker, settings = make_worker(tmp_path, trained)
    with worker.started():
        erase(worker, data, user="5")
        assert worker.run_once() == 1
        assert worker.maintain("finetune") == 3
        with worker.ledger.reading() as session:
            before, tuned = session.get(ModelVersion, 2), session.get(ModelVersion, 3)
        old, _, old_data, _ = load_checkpoint(before.path)
        new, _, new_data, _ = load_checkpoint(tuned.path)
        assert tuned.kind == "finetune" and new_data.hash == old_data.hash
        assert not torch.equal(old.embedding.weight, new.embedding.weight)
        state = method_state_dir(root_of(tuned.path), "unlearnrec", new_data.hash)
        adopted = torch.load(state / "weights.pt", weights_only=True)
        assert torch.equal(adopted["embedding.weight"], new.embedding.weight)   # the next batch starts here
        later = erase(worker, data, user="6")
        assert worker.run_once() == 1
    with worker.ledger.reading() as session:
        applied = session.get(ModelVersion, session.get(Erasure, later).model_version)
    assert applied.version == 4 and held_by(load_checkpoint(applied.path)[2], "6") == 0
    with pytest.raises(Exception, match="nothing to fine-tune"):
        maintenance.finetune_version(trained, tmp_path / "never", settings.policy)
    worker.ledger.dispose()


def test_the_admin_route_asks_the_worker_for_maintenance_now(tmp_path, trained, data):
    from fastapi.testclient import TestClient

    from recunlearn.service.api import create_app

    worker, settings = make_worker(tmp_path, trained)
    with worker.started():
        with worker.ledger.writing() as session:
            admin, reader = (create_token(session, name, [name]) for name in ("admin", "erasure:read"))
        with TestClient(create_app(settings, worker.ledger)) as client:
            assert client.post("/v1/admin/retrain", headers={"Authorization": f"Bearer {reader}"}).status_code == 403
            assert client.post("/v1/admin/nap", headers={"Authorization": f"Bearer {admin}"}).status_code == 422
            answer = client.post("/v1/admin/retrain", headers={"Authorization": f"Bearer {admin}"})
            assert answer.status_code == 202 and answer.json() == {"maintenance": "retrain", "status": "requested"}
        assert maintenance.requested(settings.state_dir) == ["retrain"]
        assert worker.maintain() == 2                     # asked for, not due by the schedule
        assert maintenance.requested(settings.state_dir) == [] and worker.maintain() is None
    worker.ledger.dispose()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_model_trained_on_a_gpu_is_maintained_on_the_cpu_with_the_policys_device(tmp_path, trained, data):
    source = tmp_path / "gpu-trained"
    shutil.copytree(trained, source)
    meta = json.loads((source / "config.json").read_text())
    meta["run"]["train"]["device"] = "cuda"        # as `train --device cuda` records it
    (source / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="train.device='gpu' is not a device"):
        Policy(device="gpu")
    worker, settings = make_worker(tmp_path, source, device="cpu")
    with worker.started():
        erase(worker, data, user="7")
        assert worker.run_once() == 1
        with worker.ledger.reading() as session:
            applied = session.get(ModelVersion, 2).path
        with pytest.raises(ValueError, match="sees no CUDA GPU here.*`--device cpu`"):
            maintenance.finetune_version(Path(applied), tmp_path / "never", Policy())   # the checkpoint's cuda
        assert not (tmp_path / "never").exists()
        assert worker.maintain("finetune") == 3
    with worker.ledger.reading() as session:
        tuned = session.get(ModelVersion, 3)
    assert tuned.kind == "finetune"
    assert load_checkpoint(tuned.path)[1].train.device == "cuda"   # the trained model's record is kept
    worker.ledger.dispose()

