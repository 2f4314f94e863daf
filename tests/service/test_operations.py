"""/healthz, /metrics (Prometheus text format) and /openapi.json."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_healthz_answers_without_a_token(client):
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_healthz_reports_an_unreachable_ledger(settings, tmp_path):
    from fastapi.testclient import TestClient

    from recunlearn.service.api import create_app
    from recunlearn.service.ledger import Ledger

    gone = Ledger(f"sqlite:///{tmp_path / 'no such folder' / 'ledger.sqlite3'}")
    answer = TestClient(create_app(settings, gone)).get("/healthz")
    assert answer.status_code == 503 and "ledger unreachable" in answer.json()["detail"]


def test_metrics_count_erasures_by_status_and_the_queue(client, ledger, writer, tokens):
    from recunlearn.service.work_queue import claim_pending

    for user in ("1", "2", "3"):
        assert client.post("/v1/erasures", json={"user": user}, headers=writer).status_code == 202
    client.post("/v1/erasures", json={"user": "ghost", "suppress_only": True}, headers=writer)
    with ledger.writing() as session:
        claim_pending(session, "w", limit=1)
    answer = client.get("/metrics", headers=bearer(tokens["recs:read"]))   # any valid token
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    got = samples(answer.text)
    assert got[("recunlearn_erasures", (("status", "pending"),))] == 2
    assert got[("recunlearn_erasures", (("status", "in_progress"),))] == 1
    assert got[("recunlearn_erasures", (("status", "completed"),))] == 1
    assert got[("recunlearn_erasures", (("status", "failed"),))] == 0
    assert got[("recunlearn_erasure_queue_depth", ())] == 3
    assert got[("recunlearn_model_version", ())] == 0
    assert got[("recunlearn_erasure_acknowledgement_seconds_count", ())] == 4


def test_the_openapi_schema_describes_the_api(client, tokens):
    schema = client.get("/openapi.json", headers=bearer(tokens["recs:read"])).json()
    assert set(schema["paths"]) == {"/v1/erasures", "/v1/erasures/{erasure_id}", "/v1/erasures/{erasure_id}/receipt",
                                    "/v1/keys", "/v1/recommendations/{user}", "/v1/admin/{kind}", "/healthz",
                                    "/metrics"}
    post = schema["paths"]["/v1/erasures"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False and set(body["properties"]) == {
        "user", "item", "pairs", "reason", "subject_request_id", "suppress_only"}
    assert {"200", "202", "401", "403", "404", "409", "413", "415", "422"} <= set(post["responses"])
    assert post["security"] == [{"HTTPBearer": ["erasure:write"]}]
    assert "HTTPValidationError" not in schema["components"]["schemas"]   # one error shape: Problem
