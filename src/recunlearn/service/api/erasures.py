"""`POST /v1/erasures` (record an erasure; answered after the ledger commit) and `GET /v1/erasures/{id}`."""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from ..auth import Principal, require
from ..intake import accept
from ..ledger import Erasure
from ..publisher import receipt_path
from ..schemas import ErasedEdges, ErasureRequest, ErasureView, SubjectView
from .errors import responses

router = APIRouter(prefix="/v1/erasures", tags=["erasures"])
JSON_TYPES = ("application/json", "application/merge-patch+json")


async def erasure_request(request: Request) -> ErasureRequest:
    """The body, parsed only after the token was checked (a route dependency after `require`), so that no
    caller without a valid token learns anything from a validation answer."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind not in JSON_TYPES and not kind.endswith("+json"):
        raise HTTPException(415, f"the body must be JSON (Content-Type: application/json), not {kind!r}")
    try:
        return ErasureRequest.model_validate_json(await request.body())
    except ValidationError as err:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in err.errors()]) from None


def view(erasure: Erasure, state_dir: Path) -> ErasureView:
    """The erasure as the API shows it; `receipt_url` once the worker has signed its receipt."""
    edges = None if erasure.erased_edges_count is None else ErasedEdges(count=erasure.erased_edges_count,
                                                                         sha256=erasure.erased_edges_sha256)
    return ErasureView(
        id=erasure.id, status=erasure.status, subject=SubjectView(kind=erasure.subject_kind, ids=erasure.subject_ids),
        suppression_only=erasure.action == "suppress", reason=erasure.reason,
        subject_request_id=erasure.subject_request_id, received_at=erasure.received_at,
        expected_completion=erasure.expected_completion, started_at=erasure.started_at,
        completed_at=erasure.completed_at, model_version=erasure.model_version, erased_edges=edges,
        error=erasure.error,
        receipt_url=f"{router.prefix}/{erasure.id}/receipt" if receipt_path(state_dir, erasure.id).is_file() else None)


@router.post(
    "", status_code=202, response_model=ErasureView, summary="Record an erasure request",
    responses={200: {"model": ErasureView, "description": "recorded as suppression only: no served data "
                     "knows the subject, so no model has to change"},
               202: {"description": "accepted: committed to the ledger, pending application to the model"},
               **responses(401, 403, 404, 409, 413, 415, 422)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ErasureRequest.model_json_schema()}}}})
def post_erasure(
        response: Response, request: Request, principal: Annotated[Principal, require("erasure:write")],
        body: Annotated[ErasureRequest, Depends(erasure_request)],
        idempotency_key: Annotated[Optional[str], Header(
            alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
            description="the same key with the same body returns the original answer; with another body, 409. "
                        "Without it, the body's subject_request_id serves as the key.")] = None,
) -> ErasureView:
    """Erase a user, an item or (user, item) pairs, in the dataset's original ids. The answer comes after
    the ledger commit: an acknowledged erasure is durable, and its subject is on the suppression list."""
    started = time.perf_counter()
    state = request.app.state
    erasure, replayed = accept(state.ledger, body, idempotency_key, state.settings.policy,
                               state.settings.subject_resolver)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        state.metrics.acknowledgement.observe(time.perf_counter() - started)
    response.status_code = 200 if erasure.action == "suppress" else 202
    response.headers["Location"] = f"{router.prefix}/{erasure.id}"
    return view(erasure, state.settings.state_dir)


@router.get("/{erasure_id}", response_model=ErasureView, summary="An erasure's status",
            responses=responses(401, 403, 404, 422))
def get_erasure(erasure_id: str, request: Request,
                principal: Annotated[Principal, require("erasure:read")]) -> ErasureView:
    """Status, timings, the first model version that excludes it, and (later) its receipt."""
    key = parse_erasure_id(erasure_id)
    with request.app.state.ledger.reading() as session:
        erasure = session.get(Erasure, key)
    if erasure is None:
        raise HTTPException(404, f"no erasure {erasure_id}")
    return view(erasure, request.app.state.settings.state_dir)


def parse_erasure_id(erasure_id: str) -> uuid.UUID:
    """The id of a URL path; anything that is not a UUID is an erasure that does not exist (404)."""
    try:
        return uuid.UUID(erasure_id)
    except ValueError:
        raise HTTPException(404, f"no erasure {erasure_id!r}: erasure ids are UUIDs") from None
