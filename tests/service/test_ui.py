"""`/ui`, the read-only status page: who may see it (bearer header or the sign-in cookie, scope erasure:read),
what it shows (counts, queue, recent erasures, versions, receipt links, the policy and when maintenance falls
due) and that it escapes what it shows."""
from __future__ import annotations

import uuid
from datetime import timedelta

from recunlearn.service.ledger import Erasure, ModelVersion
from recunlearn.service.publisher import receipt_path, write_json
from recunlearn.service.receipts import issue, public_key_pem, verify
from recunlearn.service.versions import ErasedEdges, publish_version
from recunlearn.service.work_queue import claim_pending


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_without_a_token_the_page_is_a_sign_in_form_that_shows_nothing(client, writer):
    erasure_id = client.post("/v1/erasures", json={"user": "1"}, headers=writer).json()["id"]
    answer = client.get("/ui")
    assert answer.status_code == 401 and "text/html" in answer.headers["content-type"]
    assert '<form method="post" action="/ui/login">' in answer.text and erasure_id not in answer.text


def test_a_reader_sees_counts_queue_and_recent_erasures(client, writer, reader):
    ids = [client.post("/v1/erasures", json={"user": u}, headers=writer).json()["id"] for u in ("1", "2")]
    client.post("/v1/erasures", json={"user": "ghost", "suppress_only": True}, headers=writer)
    answer = client.get("/ui", headers=reader)
    assert answer.status_code == 200
    page = answer.text
    assert all(i in page for i in ids)
    assert '<td class="num" id="queue-depth">2</td>' in page
    assert "No model version is published yet." in page
    assert page.index(ids[1]) < page.index(ids[0]), "newest first"


def test_a_token_without_the_scope_or_an_invalid_one_is_refused(client, tokens):
    assert client.get("/ui", headers=bearer(tokens["recs:read"])).status_code == 403
    assert client.get("/ui", headers=bearer("rcu_nope_nope")).status_code == 401
    assert client.post("/ui/login", data={"token": tokens["recs:read"]}).status_code == 403
    assert client.post("/ui/login", data={"token": "rcu_nope_nope"}).status_code == 401
    assert client.post("/ui/login", content=b"token=" + b"x" * 5000).status_code == 413


def test_signing_in_sets_a_cookie_for_the_page_only(client, tokens, writer):
    erasure_id = client.post("/v1/erasures", json={"user": "3"}, headers=writer).json()["id"]
    answer = client.post("/ui/login", data={"token": tokens["erasure:read"]}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    page = client.get("/ui")          # the client keeps the cookie
    assert page.status_code == 200 and erasure_id in page.text
    # The cookie opens the page, never the JSON API.
    api = client.get(f"/v1/erasures/{erasure_id}", cookies={"recunlearn_ui": tokens["erasure:read"]})
    assert api.status_code == 401
    client.post("/ui/logout")
    assert client.get("/ui").status_code == 401


def test_completed_erasures_link_their_verifiable_receipt(client, ledger, settings, writer, reader):
    erasure_id = client.post("/v1/erasures", json={"user": "1"}, headers=writer).json()["id"]
    with ledger.writing() as session:
        session.get(Erasure, uuid.UUID(erasure_id)).status = "completed"
    write_json(receipt_path(settings.state_dir, erasure_id), issue(settings.state_dir, {"erasure_id": erasure_id}))
    page = client.get("/ui", headers=reader).text
    assert f'<a href="/ui/receipts/{erasure_id}">receipt</a>' in page
    receipt = client.get(f"/ui/receipts/{erasure_id}", headers=reader)
    assert receipt.status_code == 200
    verify(receipt.json(), public_key_pem(settings.state_dir))
    assert client.get(f"/ui/receipts/{uuid.uuid4()}", headers=reader).status_code == 404
    assert client.get(f"/ui/receipts/{erasure_id}").status_code == 401


def test_the_page_escapes_what_it_shows(client, ledger, writer, reader):
    erasure_id = client.post("/v1/erasures", json={"user": "2"}, headers=writer).json()["id"]
    with ledger.writing() as session:
        row = session.get(Erasure, uuid.UUID(erasure_id))
        row.status, row.error = "failed", "<script>alert(1)</script>"
    page = client.get("/ui", headers=reader).text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_page_shows_the_policy_and_when_maintenance_falls_due(client, ledger, writer, reader):
    def policy_table() -> str:
        page = client.get("/ui", headers=reader).text
        return page[page.index('<table id="policy">'):]

    table = policy_table()
    assert "unlearnrec, micro-batches of up to 64 erasures gathered for 1 s" in table
    assert "5 epochs after 100 applied erasures or 24 h" in table and "every 168 h" in table
    assert "where the published model was trained" in table and "next at" not in table   # nothing published
    erasure_id = client.post("/v1/erasures", json={"user": "1"}, headers=writer).json()["id"]
    with ledger.writing() as session:
        publish_version(session, parent=None, kind="initial", path="v1", sha256="1" * 64)
        initial = session.get(ModelVersion, 1).published_at
    assert "nothing applied since version 1 (initial)" in policy_table()
    with ledger.writing() as session:
        claim_pending(session, "w", limit=1)
        publish_version(session, parent=1, kind="unlearn", path="v2", sha256="2" * 64, worker="w",
                        applied={uuid.UUID(erasure_id): ErasedEdges(3, "0" * 64)})
    table = policy_table()
    fmt = "%Y-%m-%d %H:%M:%S UTC"
    assert (f"1 applied since version 1 (initial), due at the latest at "
            f"{(initial + timedelta(hours=24)).strftime(fmt)}") in table
    assert f"next at {(initial + timedelta(hours=168)).strftime(fmt)} (version 1 was the last full" in table
    with ledger.writing() as session:
        publish_version(session, parent=2, kind="finetune", path="v3", sha256="3" * 64)
    table = policy_table()
    assert "nothing applied since version 3 (finetune)" in table and "version 1 was the last full" in table
    # Once the count is reached the fine-tune is due now, whatever its time says; a retrain past its time
    # replaces it. The page follows the worker's rule (`Schedule.due`).
    settings = client.app.state.settings
    with ledger.writing() as session:
        publish_version(session, parent=3, kind="unlearn", path="v4", sha256="4" * 64)
        session.get(Erasure, uuid.UUID(erasure_id)).model_version = 4
    client.app.state.settings = settings.model_copy(
        update={"policy": settings.policy.model_copy(update={"finetune_every": 1})})
    table = policy_table()
    assert "1 applied since version 3 (finetune): due now, the worker runs it at its next turn" in table
    assert "due at the latest" not in table and "next at" in table
    client.app.state.settings = settings.model_copy(
        update={"policy": settings.policy.model_copy(update={"retrain_interval_h": 1e-9})})
    table = policy_table()
    assert "1 applied since version 3 (finetune), and the retrain due now replaces it" in table
    assert "full retrain" in table and "due now, the worker runs it at its next turn (version 1" in table
