"""POST /v1/erasures and GET /v1/erasures/{id}: the happy paths, idempotency, and every refusal, each
answered with a JSON body that names the problem and leaving the ledger as it was."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from recunlearn.service.ledger import Erasure, Suppression


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rows(ledger, table):
    with ledger.reading() as session:
        return session.scalars(select(table)).all()


# ------------------------------------------------------------------------------------------ happy paths

@pytest.mark.parametrize("body, kind, ids, suppressed", [
    ({"user": "1"}, "user", ["1"], [("user", "1", None)]),
    ({"item": "10", "reason": "licence take-down"}, "item", ["10"], [("item", None, "10")]),
    ({"pairs": [["1", "10"], ["2", "30"]]}, "pairs", [["1", "10"], ["2", "30"]],
     [("pair", "1", "10"), ("pair", "2", "30")]),
])
def test_an_erasure_is_acknowledged_after_its_commit(client, ledger, writer, reader, body, kind, ids, suppressed):
    answer = client.post("/v1/erasures", json=body, headers=writer)
    assert answer.status_code == 202, answer.text
    got = answer.json()
    assert got["status"] == "pending" and got["subject"] == {"kind": kind, "ids": ids}
    assert got["suppression_only"] is False and got["reason"] == body.get("reason")
    assert got["received_at"] < got["expected_completion"]
    assert answer.headers["location"] == f"/v1/erasures/{got['id']}"
    # acknowledged means committed: a fresh session sees the erasure and its suppression rows
    (erasure,) = rows(ledger, Erasure)
    assert str(erasure.id) == got["id"] and erasure.status == "pending"
    assert [(s.kind, s.user_id, s.item_id) for s in rows(ledger, Suppression)] == suppressed
    status = client.get(answer.headers["location"], headers=reader)
    assert status.status_code == 200 and status.json() == got


def test_the_status_shows_the_worker_progress(client, ledger, writer, reader):
    from recunlearn.service.versions import ErasedEdges, publish_version
    from recunlearn.service.work_queue import claim_pending

    erasure_id = client.post("/v1/erasures", json={"user": "2"}, headers=writer).json()["id"]
    with ledger.writing() as session:
        publish_version(session, parent=None, kind="initial", path="v1", sha256="0" * 64)
        claim_pending(session, "w", limit=1)
    assert client.get(f"/v1/erasures/{erasure_id}", headers=reader).json()["status"] == "in_progress"
    with ledger.writing() as session:
        publish_version(session, parent=1, kind="unlearn", path="v2", sha256="1" * 64, worker="w",
                        applied={uuid.UUID(erasure_id): ErasedEdges(12, "a" * 64)})
    got = client.get(f"/v1/erasures/{erasure_id}", headers=reader).json()
    assert (got["status"], got["model_version"], got["erased_edges"]) == ("completed", 2,
                                                                         {"count": 12, "sha256": "a" * 64})
    assert got["started_at"] <= got["completed_at"]


def test_an_unknown_id_is_a_404_naming_it(client, ledger, writer, unchanged):
    for body, named in (({"user": "999"}, "user '999'"), ({"item": "77"}, "item '77'"),
                        ({"pairs": [["1", "10"], ["1", "30"]]}, "pair ('1', '30')")):
        with unchanged():
            answer = client.post("/v1/erasures", json=body, headers=writer)
        assert answer.status_code == 404
        assert named in answer.json()["detail"] and "suppress_only" in answer.json()["detail"]
        assert answer.json()["unknown"] == ([["1", "30"]] if "pairs" in body else list(body.values()))


def test_suppress_only_records_an_unknown_subject_at_once(client, ledger, writer):
    answer = client.post("/v1/erasures", json={"user": "999", "suppress_only": True}, headers=writer)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert (got["status"], got["suppression_only"], got["model_version"]) == ("completed", True, None)
    assert [(s.kind, s.user_id) for s in rows(ledger, Suppression)] == [("user", "999")]


def test_suppress_only_with_known_ids_still_erases_them(client, ledger, writer):
    answer = client.post("/v1/erasures", json={"pairs": [["1", "10"], ["9", "99"]], "suppress_only": True},
                         headers=writer)
    assert answer.status_code == 202 and answer.json()["status"] == "pending"
    assert answer.json()["suppression_only"] is False
    assert len(rows(ledger, Suppression)) == 2


def test_without_a_resolver_every_id_is_accepted(client, app, writer):
    app.state.settings.subject_resolver = None
    assert client.post("/v1/erasures", json={"user": "anyone"}, headers=writer).status_code == 202


def test_ids_are_checked_against_a_real_datasets_id_maps(client, app, ledger, writer, unchanged, data_root):
    from recunlearn.data.registry import load_dataset
    from recunlearn.service.subjects import dataset_resolver

    data = load_dataset("ml-100k", data_root, download=False)
    app.state.settings.subject_resolver = dataset_resolver(data)
    user, item = str(data.user_ids.labels[0]), str(data.item_ids.labels[0])
    pair = [str(data.user_ids.label([data.test.users[0]])[0]), str(data.item_ids.label([data.test.items[0]])[0])]
    assert client.post("/v1/erasures", json={"user": user}, headers=writer).status_code == 202
    assert client.post("/v1/erasures", json={"item": item}, headers=writer).status_code == 202
    assert client.post("/v1/erasures", json={"pairs": [pair]}, headers=writer).status_code == 202
    stranger = str(len(data.user_ids) + 1000)
    not_an_interaction = next([user, str(i)] for i in data.item_ids.labels.tolist()
                              if not data.train.contains(data.user_ids.index([user]), data.item_ids.index([i]))[0]
                              and not data.valid.contains(data.user_ids.index([user]), data.item_ids.index([i]))[0]
                              and not data.test.contains(data.user_ids.index([user]), data.item_ids.index([i]))[0])
    for body, named in (({"user": stranger}, f"user {stranger!r}"), ({"item": "0"}, "item '0'"),
                        ({"pairs": [not_an_interaction]}, f"pair {tuple(not_an_interaction)}")):
        with unchanged():
            answer = client.post("/v1/erasures", json=body, headers=writer)
        assert answer.status_code == 404 and named in answer.json()["detail"], answer.text


def test_get_of_an_unknown_or_malformed_id_is_a_404(client, reader):
    for erasure_id, said in ((str(uuid.uuid4()), "no erasure"), ("not-a-uuid", "erasure ids are UUIDs")):
        answer = client.get(f"/v1/erasures/{erasure_id}", headers=reader)
        assert answer.status_code == 404 and said in answer.json()["detail"]


# ------------------------------------------------------------------------------------------- idempotency

def test_the_same_key_and_body_replays_the_original_answer(client, ledger, writer):
    headers = {**writer, "Idempotency-Key": "order-17"}
    first = client.post("/v1/erasures", json={"user": "1", "reason": "art. 17"}, headers=headers)
    # the same request written differently (key order, spacing, a default spelled out) is the same body
    again = client.post("/v1/erasures", content=b'{"reason":"art. 17",  "suppress_only": false, "user":"1"}',
                        headers={**headers, "Content-Type": "application/json"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(rows(ledger, Erasure)) == 1 and len(rows(ledger, Suppression)) == 1


def test_a_replay_of_a_suppression_answers_200_again(client, writer):
    headers = {**writer, "Idempotency-Key": "k"}
    body = {"item": "nope", "suppress_only": True}
    first, again = (client.post("/v1/erasures", json=body, headers=headers) for _ in range(2))
    assert first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]


def test_the_same_key_with_another_body_is_a_409_naming_the_key(client, ledger, writer, unchanged):
    headers = {**writer, "Idempotency-Key": "order-17"}
    first = client.post("/v1/erasures", json={"user": "1"}, headers=headers).json()
    with unchanged():
        answer = client.post("/v1/erasures", json={"user": "2"}, headers=headers)
    assert answer.status_code == 409
    assert "Idempotency-Key 'order-17'" in answer.json()["detail"] and answer.json()["erasure_id"] == first["id"]


def test_subject_request_id_is_the_key_when_there_is_no_header(client, ledger, writer, unchanged):
    request_id = str(uuid.uuid4())
    first = client.post("/v1/erasures", json={"user": "1", "subject_request_id": request_id}, headers=writer)
    again = client.post("/v1/erasures", json={"user": "1", "subject_request_id": request_id}, headers=writer)
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    assert first.json()["subject_request_id"] == request_id
    with unchanged():
        clash = client.post("/v1/erasures", json={"user": "2", "subject_request_id": request_id},
                            headers={**writer, "Idempotency-Key": "another"})
    assert clash.status_code == 409 and f"subject_request_id {request_id!r}" in clash.json()["detail"]


def test_without_a_key_each_post_is_a_new_erasure(client, ledger, writer):
    ids = {client.post("/v1/erasures", json={"user": "1"}, headers=writer).json()["id"] for _ in range(2)}
    assert len(ids) == 2 and len(rows(ledger, Erasure)) == 2


def test_an_unknown_id_is_refused_before_a_key_is_spent(client, ledger, writer):
    headers = {**writer, "Idempotency-Key": "k"}
    assert client.post("/v1/erasures", json={"user": "999"}, headers=headers).status_code == 404
    assert client.post("/v1/erasures", json={"user": "1"}, headers=headers).status_code == 202


# --------------------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("content, named", [
    (b'{"user": "1"', "Invalid JSON"),
    (b"", "Invalid JSON"),
    (b'["user", "1"]', "body: Input should be an object"),
    (b'{"user": 1}', "body.user: Input should be a valid string"),
    (b'{"user": "1", "suppress_only": "yes"}', "body.suppress_only: Input should be a valid boolean"),
    (b'{"user": "1", "subject_request_id": "42"}', "body.subject_request_id: Input should be a valid UUID"),
    (b'{"pairs": [["1"]]}', "body.pairs.0.1: Field required"),
    (b'{"pairs": []}', "body.pairs: List should have at least 1 item"),
    (b'{"user": ""}', "body.user: String should have at least 1 character"),
    (b'{"user": "1", "urgent": true}', "body.urgent: Extra inputs are not permitted"),
    (b'{"user": "1", "item": "10"}', "give exactly one of user, item or pairs (got user, item)"),
    (b'{"reason": "no subject"}', "give exactly one of user, item or pairs"),
])
def test_a_malformed_body_is_a_422_naming_the_field(client, writer, unchanged, content, named):
    with unchanged():
        answer = client.post("/v1/erasures", content=content,
                             headers={**writer, "Content-Type": "application/json"})
    assert answer.status_code == 422
    assert named in answer.json()["detail"], answer.json()
    assert all({"loc", "msg", "type"} <= set(e) for e in answer.json()["errors"])


def test_a_bad_idempotency_key_is_a_422_naming_the_header(client, writer, unchanged):
    with unchanged():
        answer = client.post("/v1/erasures", json={"user": "1"}, headers={**writer, "Idempotency-Key": "x" * 256})
    assert answer.status_code == 422 and "Idempotency-Key" in answer.json()["detail"]


def test_a_body_that_is_not_json_is_a_415(client, writer, unchanged):
    with unchanged():
        answer = client.post("/v1/erasures", content=b"user=1",
                             headers={**writer, "Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 415 and "application/json" in answer.json()["detail"]


def test_an_oversized_body_is_a_413_naming_the_limit(client, settings, writer, unchanged):
    pairs = [[str(n), "10"] for n in range(settings.max_body_bytes // 8)]
    with unchanged():
        answer = client.post("/v1/erasures", json={"pairs": pairs}, headers=writer)
    assert answer.status_code == 413
    assert f"limit of {settings.max_body_bytes} bytes" in answer.json()["detail"]


def test_an_oversized_body_without_a_declared_length_is_a_413(client, settings, writer, unchanged):
    def chunks():
        yield b'{"pairs": ['
        for _ in range(settings.max_body_bytes // 1000):
            yield b'["1", "10"], ' * 80
        yield b'["1", "10"]]}'
    with unchanged():
        answer = client.post("/v1/erasures", content=chunks(), headers={**writer, "Content-Type": "application/json"})
    assert answer.status_code == 413


# ------------------------------------------------------------------------------------------------ tokens

@pytest.mark.parametrize("method, path, body", [("post", "/v1/erasures", {"user": "1"}),
                                                ("get", f"/v1/erasures/{uuid.uuid4()}", None),
                                                ("get", "/metrics", None), ("get", "/openapi.json", None)])
def test_no_endpoint_but_healthz_answers_without_a_valid_token(client, tokens, unchanged, method, path, body):
    kwargs = {"json": body} if body else {}
    with unchanged():
        for headers, said in (({}, "missing bearer token"), (bearer("rcu_0000_nope"), "invalid or revoked"),
                              (bearer("garbage"), "invalid or revoked"),
                              ({"Authorization": f"Basic {tokens['admin']}"}, "missing bearer token"),
                              (bearer(tokens["admin"][:-1] + "x"), "invalid or revoked")):
            answer = getattr(client, method)(path, headers=headers, **kwargs)
            assert answer.status_code == 401, (headers, answer.text)
            assert said in answer.json()["detail"] and answer.headers["www-authenticate"].startswith("Bearer")


def test_a_malformed_body_without_a_token_is_a_401_not_a_422(client, unchanged):
    with unchanged():
        answer = client.post("/v1/erasures", content=b"{broken", headers={"Content-Type": "application/json"})
    assert answer.status_code == 401


@pytest.mark.parametrize("scope, method, path, body", [
    ("erasure:read", "post", "/v1/erasures", {"user": "1"}),
    ("recs:read", "post", "/v1/erasures", {"user": "1"}),
    ("erasure:write", "get", f"/v1/erasures/{uuid.uuid4()}", None),
    ("recs:read", "get", f"/v1/erasures/{uuid.uuid4()}", None),
])
def test_a_token_without_the_scope_is_a_403_naming_it(client, tokens, unchanged, scope, method, path, body):
    needed = "erasure:write" if method == "post" else "erasure:read"
    with unchanged():
        answer = getattr(client, method)(path, headers=bearer(tokens[scope]), **({"json": body} if body else {}))
    assert answer.status_code == 403 and repr(needed) in answer.json()["detail"]


def test_admin_tokens_have_every_scope(client, tokens):
    headers = bearer(tokens["admin"])
    erasure_id = client.post("/v1/erasures", json={"user": "1"}, headers=headers).json()["id"]
    assert client.get(f"/v1/erasures/{erasure_id}", headers=headers).status_code == 200


def test_a_revoked_token_is_refused_at_once(client, ledger, tokens, writer):
    from recunlearn.service.auth import revoke_token

    assert client.post("/v1/erasures", json={"user": "1"}, headers=writer).status_code == 202   # now remembered
    with ledger.writing() as session:
        assert revoke_token(session, tokens["erasure:write"].split("_")[1])
    assert client.post("/v1/erasures", json={"user": "1"}, headers=writer).status_code == 401


def test_tokens_can_be_turned_off_for_local_experiments(client, app):
    app.state.settings.require_tokens = False
    assert client.post("/v1/erasures", json={"user": "1"}).status_code == 202
