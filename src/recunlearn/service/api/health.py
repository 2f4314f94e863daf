"""`/healthz` (no token), `/metrics` (Prometheus text format) and `/openapi.json` (any valid token)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ..auth import Principal, require
from .errors import responses

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness and ledger reachability (no token needed)",
            responses={503: {"description": "the ledger cannot be reached"}})
def healthz(request: Request) -> JSONResponse:
    try:
        with request.app.state.ledger.reading() as session:
            session.execute(text("SELECT 1"))
    except Exception as err:   # any database failure means: not healthy
        return JSONResponse({"status": "unavailable", "detail": f"ledger unreachable: {type(err).__name__}"}, 503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}, **responses(401)})
def metrics(request: Request, principal: Annotated[Principal, require()]) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, principal: Annotated[Principal, require()]) -> JSONResponse:
    return JSONResponse(request.app.openapi())
