"""Every error answer is JSON `{"detail": "..."}` naming the problem (see schemas.Problem)."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..intake import IdempotencyConflict, UnknownSubject
from ..schemas import Problem


def problem(status: int, detail: str, headers: dict | None = None, **extra: Any) -> JSONResponse:
    body = {"detail": detail, **{k: v for k, v in extra.items() if v is not None}}
    return JSONResponse(body, status_code=status, headers=headers)


def field_errors(errors: list[dict]) -> list[dict]:
    """loc, msg and type of each error (no echo of the input, no exception objects)."""
    return [{"loc": [str(part) for part in e["loc"]], "msg": e["msg"].removeprefix("Value error, "),
             "type": e["type"]} for e in errors]


def _summary(errors: list[dict]) -> str:
    parts = [f"{'.'.join(e['loc']) or 'body'}: {e['msg']}" for e in errors[:5]]
    return "; ".join(parts) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else "")


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(list(exc.errors()))
        return problem(422, "invalid request: " + _summary(errors), errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(IdempotencyConflict)
    async def conflict(_: Request, exc: IdempotencyConflict) -> JSONResponse:
        return problem(409, str(exc), erasure_id=str(exc.erasure_id))

    @app.exception_handler(UnknownSubject)
    async def unknown(_: Request, exc: UnknownSubject) -> JSONResponse:
        return problem(404, str(exc), unknown=exc.unknown)


def responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI entries for the error answers a route can give."""
    said = {401: "no valid bearer token", 403: "the token lacks the route's scope", 404: "not found",
            409: "the idempotency key was used for a different request", 413: "the body is too large",
            415: "the body is not JSON", 422: "the body or a parameter is invalid (each field named)"}
    return {code: {"model": Problem, "description": said[code]} for code in codes}
