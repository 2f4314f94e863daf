"""Serving: the receipt, key and recommendation endpoints on a tiny ml-100k model with a worker run in-process,
and `recunlearn service serve` as a real process: erase a user, wait for the erasure to complete, verify its
receipt against the served key, and see that user's recommendations disappear while another's remain."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx   # the dev dependency (FastAPI's TestClient uses it too)
import pytest
import yaml
from fastapi.testclient import TestClient

from recunlearn.service import receipts
from recunlearn.service.api import create_app
from recunlearn.service.auth import create_token
from recunlearn.service.ledger import open_ledger
from recunlearn.service.subjects import dataset_resolver
from recunlearn.service.worker import Worker, WorkerSettings

ERASED, OTHER = "1", "2"

pytestmark = pytest.mark.usefixtures("isolated_model_cache", "isolated_locks")


def write_config(tmp_path: Path, trained: Path) -> tuple[WorkerSettings, Path]:
    settings = WorkerSettings(state_dir=tmp_path / "state", checkpoint=trained,
                              policy={"batch_window_s": 0.01, "method": "unlearnrec"})
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"subject_resolver"})))
    return settings, config


@pytest.fixture(scope="module")
def served(trained, data, tmp_path_factory):
    """An app and a worker on one ledger, tokens per scope, and user ERASED's erasure applied (run_once)."""
    settings, _ = write_config(tmp_path_factory.mktemp("served"), trained)
    settings.subject_resolver = dataset_resolver(data)
    ledger = open_ledger(settings.ledger_url())
    with ledger.writing() as session:
        tokens = {scope: create_token(session, scope, [scope]) for scope in ("erasure:write", "erasure:read",
                                                                               "recs:read")}
    worker = Worker(settings, ledger)
    with worker.started(), TestClient(create_app(settings, ledger)) as client:
        headers = {scope: {"Authorization": f"Bearer {token}"} for scope, token in tokens.items()}
        before = client.get(f"/v1/recommendations/{ERASED}", headers=headers["recs:read"])
        answer = client.post("/v1/erasures", json={"user": ERASED}, headers=headers["erasure:write"])
        assert answer.status_code == 202, answer.text
        assert answer.json()["receipt_url"] is None   # nothing is signed before the worker completes it
        pending = client.get(f"/v1/erasures/{answer.json()['id']}/receipt", headers=headers["erasure:read"])
        assert worker.run_once() == 1
        yield client, headers, answer.json()["id"], before, pending
    ledger.dispose()


def test_receipt_is_served_and_verifies_against_served_key(served):
    client, headers, erasure_id, _, pending = served
    assert pending.status_code == 404 and "not completed yet" in pending.json()["detail"]
    assert erasure_id in pending.json()["detail"]
    status = client.get(f"/v1/erasures/{erasure_id}", headers=headers["erasure:read"]).json()
    assert status["status"] == "completed", status
    assert status["receipt_url"] == f"/v1/erasures/{erasure_id}/receipt"   # the status links its receipt
    receipt = client.get(status["receipt_url"], headers=headers["erasure:read"])
    keys = client.get("/v1/keys", headers=headers["erasure:read"])
    assert receipt.status_code == 200 and keys.status_code == 200
    assert receipt.json()["erasure_id"] == erasure_id and receipt.json()["key_id"] == keys.json()["key_id"]
    receipts.verify(receipt.json(), keys.json()["public_key_pem"].encode())


def test_receipt_of_unknown_erasure_is_404_naming_it(served):
    client, headers, *_ = served
    missing = "00000000-0000-4000-8000-000000000000"
    answer = client.get(f"/v1/erasures/{missing}/receipt", headers=headers["erasure:read"])
    assert answer.status_code == 404 and missing in answer.json()["detail"]
    assert client.get("/v1/erasures/not-a-uuid/receipt", headers=headers["erasure:read"]).status_code == 404


@pytest.mark.parametrize("path", ["/v1/keys", "/v1/erasures/00000000-0000-4000-8000-000000000000/receipt",
                                  f"/v1/recommendations/{OTHER}"])
def test_endpoints_need_a_token_with_their_scope(served, path):
    client, headers, *_ = served
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer rcu_0000000000000000_nope"}).status_code == 401
    wrong = headers["erasure:read"] if "recommendations" in path else headers["recs:read"]
    answer = client.get(path, headers=wrong)
    assert answer.status_code == 403 and "lacks the scope" in answer.json()["detail"]


def test_recommendations_exclude_seen_items_in_original_ids(served, data):
    client, headers, _, before, _ = served
    assert before.status_code == 200 and before.json()["model_version"] == 1
    answer = client.get(f"/v1/recommendations/{OTHER}", params={"k": 15}, headers=headers["recs:read"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == 2 and body["user"] == OTHER and len(body["items"]) == 15
    (u,) = data.user_ids.index([OTHER])
    seen = data.train.union(data.valid)
    seen_items = {str(x) for x in data.item_ids.label(seen.items[seen.users == u])}
    assert not seen_items & set(body["items"]) and len(set(body["items"])) == 15
    assert set(body["items"]) <= {str(x) for x in data.item_ids.labels.tolist()}


def test_the_suppression_list_holds_for_recommendations_from_acknowledgement_on(served, data):
    """No worker runs between these calls: only the suppression list can keep the subjects out."""
    client, headers, *_ = served
    recs = headers["recs:read"]
    listed = lambda user, **params: client.get(f"/v1/recommendations/{user}", params=params,   # noqa: E731
                                               headers=recs).json()["items"]
    taken_down = listed("5", k=1)[0]
    assert client.post("/v1/erasures", json={"item": taken_down}, headers=headers["erasure:write"]).status_code == 202
    pair_item = listed("6", k=1)[0] if listed("6", k=1)[0] != taken_down else listed("6", k=2)[1]
    # a pair the data does not hold (a recommendation, not an interaction): recorded as suppression only
    assert client.post("/v1/erasures", json={"pairs": [["6", pair_item]], "suppress_only": True},
                       headers=headers["erasure:write"]).status_code == 200
    assert client.post("/v1/erasures", json={"user": "7"}, headers=headers["erasure:write"]).status_code == 202
    for user in ("5", "6", "8"):
        assert taken_down not in listed(user, k=50) and len(listed(user, k=50)) == 50
    assert pair_item not in listed("6", k=50)
    assert pair_item in listed("8", k=data.n_items) or pair_item in seen_by(data, "8")   # only user 6's pair
    whole = listed("6", k=data.n_items)
    assert taken_down not in whole and pair_item not in whole
    (u,) = data.user_ids.index(["6"])
    seen = data.train.union(data.valid)
    assert len(whole) == data.n_items - len(set(seen.items[seen.users == u]) | {
        int(data.item_ids.index([taken_down])[0]), int(data.item_ids.index([pair_item])[0])})
    gone = client.get("/v1/recommendations/7", headers=recs)
    assert gone.status_code == 404 and "erased" in gone.json()["detail"]


def seen_by(data, user: str) -> set[str]:
    (u,) = data.user_ids.index([user])
    seen = data.train.union(data.valid)
    return set(data.item_ids.label(seen.items[seen.users == u]).astype(str).tolist())


def test_k_is_validated_and_capped_at_unseen_items(served, data):
    client, headers, *_ = served
    for k in (0, data.n_items + 1, "x"):
        answer = client.get(f"/v1/recommendations/{OTHER}", params={"k": k}, headers=headers["recs:read"])
        assert answer.status_code == 422 and "k" in answer.text
    everything = client.get(f"/v1/recommendations/{OTHER}", params={"k": data.n_items}, headers=headers["recs:read"])
    (u,) = data.user_ids.index([OTHER])
    seen = int((data.train.union(data.valid).users == u).sum())
    assert len(everything.json()["items"]) == data.n_items - seen


def test_erased_and_unknown_users_are_404_naming_them(served):
    client, headers, *_ = served
    for user in (ERASED, "no-such-user"):
        answer = client.get(f"/v1/recommendations/{user}", headers=headers["recs:read"])
        assert answer.status_code == 404 and repr(user) in answer.json()["detail"]


# --------------------------------------------------------------------------------------- a real server

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_serve_process_erases_a_user_end_to_end(trained, tmp_path, worker):
    """`serve` with its worker in a thread, or `serve --no-worker` with `service worker` as its own process."""
    _, config = write_config(tmp_path, trained)
    cli = [str(Path(sys.executable).parent / "recunlearn")]
    made = subprocess.run([*cli, "service", "token", "create", "--name", "e2e", "--scope", "admin", "--config",
                           str(config)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([*cli, "service", "serve", "--config", str(config), "--port", str(port),
                               *(["--no-worker"] if worker == "process" else [])],
                              stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=dict(os.environ))
    separate = None
    try:
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {made.stdout.strip()}"}

        def healthy():
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
        wait_until(healthy, 120, "the server to answer /healthz")
        with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
            posted = http.post("/v1/erasures", json={"user": ERASED})
            assert posted.status_code == 202, posted.text
            erasure_id = posted.json()["id"]
            if worker == "process":
                time.sleep(1.0)
                assert http.get(f"/v1/erasures/{erasure_id}").json()["status"] == "pending"   # no worker yet
                separate = subprocess.Popen([*cli, "service", "worker", "--config", str(config)], stdout=log,
                                            stderr=subprocess.STDOUT, cwd=tmp_path, env=dict(os.environ))

            def completed():
                status = http.get(f"/v1/erasures/{erasure_id}").json()
                assert status["status"] not in ("failed", "cancelled"), status
                return status["status"] == "completed"
            wait_until(completed, 120, f"erasure {erasure_id} to complete")
            receipt = wait_until(lambda: (r := http.get(f"/v1/erasures/{erasure_id}/receipt")).status_code == 200
                                 and r.json(), 30, "the receipt")
            receipts.verify(receipt, http.get("/v1/keys").json()["public_key_pem"].encode())
            assert http.get(f"/v1/recommendations/{ERASED}").status_code == 404
            other = http.get(f"/v1/recommendations/{OTHER}", params={"k": 5})
            assert other.status_code == 200 and len(other.json()["items"]) == 5
            assert other.json()["model_version"] == 2
    finally:
        for process in filter(None, (separate, server)):
            process.send_signal(signal.SIGTERM)
        try:
            assert server.wait(timeout=60) == 0
            assert separate is None or separate.wait(timeout=60) == 0
        finally:
            for process in filter(None, (separate, server)):
                if process.poll() is None:
                    process.kill()
            log.close()
