"""`POST /v1/admin/finetune` and `POST /v1/admin/retrain`: run the scheduled maintenance now (scope `admin`).

The request is a marker in the state folder; the folder's worker (inside `recunlearn service serve`, or
`recunlearn service worker` beside the API) runs it at its next turn and publishes the version it makes."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..auth import Principal, require
from .errors import responses

router = APIRouter(tags=["admin"])


@router.post("/v1/admin/{kind}", summary="Run the scheduled fine-tune or retrain now", status_code=202,
             responses={202: {"description": '{"maintenance": "retrain", "status": "requested"}'},
                        **responses(401, 403, 422)})
def run_maintenance(kind: Literal["finetune", "retrain"], request: Request,
                    principal: Annotated[Principal, require("admin")]) -> JSONResponse:
    """The worker runs it at its next turn and publishes the version it makes; `GET /ui` lists it then."""
    from ..maintenance import request as request_maintenance
    request_maintenance(request.app.state.settings.state_dir, kind)
    return JSONResponse({"maintenance": kind, "status": "requested"}, status_code=202)
