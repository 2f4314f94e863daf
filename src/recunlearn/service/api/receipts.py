"""`GET /v1/erasures/{id}/receipt` (the signed receipt of a completed erasure) and `GET /v1/keys` (the public key
that verifies receipts)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from ..auth import Principal, require
from ..ledger import Erasure
from .errors import responses

router = APIRouter(tags=["receipts"])


@router.get("/v1/erasures/{erasure_id}/receipt", summary="The signed receipt of a completed erasure",
            responses={200: {"description": "the receipt as the worker signed it"}, **responses(401, 403, 404, 422)})
def get_receipt(erasure_id: str, request: Request,
                principal: Annotated[Principal, require("erasure:read")]) -> JSONResponse:
    """The receipt JSON, byte for byte what `recunlearn receipt verify` checks; 404 until it is issued."""
    from ..publisher import read_receipt
    from .erasures import parse_erasure_id
    key = parse_erasure_id(erasure_id)
    receipt = read_receipt(request.app.state.settings.state_dir, key)
    if receipt is not None:
        return JSONResponse(receipt)
    with request.app.state.ledger.reading() as session:
        erasure = session.get(Erasure, key)
    if erasure is None:
        raise HTTPException(404, f"no erasure {erasure_id}")
    if erasure.status != "completed":
        raise HTTPException(404, f"erasure {erasure_id} is not completed yet (status {erasure.status}): no receipt")
    raise HTTPException(404, f"erasure {erasure_id} is completed but its receipt is not issued yet; retry shortly")


@router.get("/v1/keys", summary="The public key that verifies receipts",
            responses={200: {"description": '{"key_id": "...", "public_key_pem": "-----BEGIN PUBLIC KEY-----..."}'},
                       **responses(401, 403)})
def get_keys(request: Request, principal: Annotated[Principal, require("erasure:read")]) -> JSONResponse:
    """The Ed25519 public key (SubjectPublicKeyInfo PEM) and its key id, as receipts name it in `key_id`."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from ..receipts import key_id, public_key_pem
    pem = public_key_pem(request.app.state.settings.state_dir)
    return JSONResponse({"key_id": key_id(load_pem_public_key(pem)), "public_key_pem": pem.decode("ascii")})
