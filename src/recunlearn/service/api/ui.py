"""`/ui`: the read-only status page (server-rendered HTML, no JavaScript): erasures by status, the queue, recent
erasures with timings and receipt links, the published model versions, and the unlearning policy with when its
next fine-tune and retrain fall due.

A browser cannot send a bearer header by itself, so the page also takes the token from a cookie that
`POST /ui/login` sets (HttpOnly, SameSite=Strict, limited to /ui): the cookie opens the page and its receipts,
never the JSON API. The page needs the scope `erasure:read`."""
from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select

from ..auth import ANONYMOUS, Principal
from ..ledger import Erasure, ModelVersion, model_version_erasures, utcnow
from ..maintenance import Schedule, schedule
from ..settings import Policy
from ..work_queue import counts_by_status, queue_depth

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parents[1] / "templates")
COOKIE = "recunlearn_ui"
SCOPE = "erasure:read"
RECENT = 50
LOGIN_BODY_LIMIT = 4096


def _principal(request: Request, token: Optional[str]) -> Optional[Principal]:
    state = request.app.state
    if not state.settings.require_tokens:
        return ANONYMOUS
    if not token:
        return None
    with state.ledger.reading() as session:
        return state.token_verifier.verify(session, token)


def _presented_token(request: Request) -> Optional[str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE)


def _login_page(request: Request, message: str, status: int) -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"message": message, "scope": SCOPE},
                                      status_code=status)


def _allowed(request: Request) -> Optional[HTMLResponse]:
    """None when the caller may see the page; otherwise the login page that says why not."""
    token = _presented_token(request)
    principal = _principal(request, token)
    if principal is None:
        message = "Sign in with a service token." if not token else "That token is invalid or revoked."
        return _login_page(request, message, 401)
    if not principal.allows(SCOPE):
        return _login_page(request, f"This token lacks the scope {SCOPE!r}.", 403)
    return None


@router.get("", response_class=HTMLResponse)
def status_page(request: Request) -> Response:
    refused = _allowed(request)
    if refused is not None:
        return refused
    policy = request.app.state.settings.policy
    with request.app.state.ledger.reading() as session:
        counts = counts_by_status(session)
        depth = queue_depth(session)
        recent = session.scalars(select(Erasure).order_by(Erasure.received_at.desc()).limit(RECENT)).all()
        included = dict(session.execute(select(model_version_erasures.c.version, func.count())
                                        .group_by(model_version_erasures.c.version)).all())
        versions = session.scalars(select(ModelVersion).order_by(ModelVersion.version.desc()).limit(RECENT)).all()
        rows = [_erasure_row(e) for e in recent]
        state = schedule(session, policy)
        version_rows = [{"version": v.version, "kind": v.kind, "method": v.method or "",
                         "published_at": _when(v.published_at), "sha256": v.sha256[:12],
                         "erasures": int(included.get(v.version, 0))} for v in versions]
    return templates.TemplateResponse(request, "status.html", {
        "counts": counts, "queue_depth": depth, "erasures": rows, "versions": version_rows,
        "current": version_rows[0] if version_rows else None, "recent_limit": RECENT,
        "policy": _policy_rows(policy, state, utcnow()),
        "signed_in": request.cookies.get(COOKIE) is not None})


def _policy_rows(policy: Policy, state: Optional[Schedule], now: datetime) -> list[tuple[str, str]]:
    """The policy in words, with the published model's place in it (the worker's own rule, `maintenance.due`)."""
    finetune = (f"{policy.finetune_epochs} epochs after {policy.finetune_every} applied erasures or "
                f"{policy.finetune_interval_h:g} h")
    retrain = f"every {policy.retrain_interval_h:g} h, on the data filtered through the suppression list"
    if state is not None:
        due = state.due(policy, now)
        since = f"since version {state.refreshed} ({state.refreshed_kind})"
        now_due = "due now, the worker runs it at its next turn"
        if state.newest == state.refreshed:
            finetune += f"; nothing applied {since}"
        else:
            finetune += f"; {state.applied_since_refresh} applied {since}" + {
                "retrain": ", and the retrain due now replaces it", "finetune": f": {now_due}"}.get(
                due, f", due at the latest at {_when(state.finetune_at)}")
        when = now_due if due == "retrain" else f"next at {_when(state.retrain_at)}"
        retrain += f"; {when} (version {state.trained} was the last full training)"
    return [("unlearner", f"{policy.method}, micro-batches of up to {policy.batch_size} erasures gathered for "
                          f"{policy.batch_window_s:g} s"),
            ("fine-tune", finetune), ("full retrain", retrain),
            ("training device", policy.device or "where the published model was trained")]


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else ""


def _erasure_row(erasure: Erasure) -> dict:
    seconds = None
    if erasure.completed_at is not None:
        seconds = (erasure.completed_at - erasure.received_at).total_seconds()
    return {"id": str(erasure.id), "subject": erasure.subject_kind, "action": erasure.action,
            "status": erasure.status, "received_at": _when(erasure.received_at),
            "completed_at": _when(erasure.completed_at),
            "seconds": "" if seconds is None else f"{seconds:.2f}", "attempts": erasure.attempts,
            "model_version": erasure.model_version or "", "error": erasure.error or "",
            "edges": "" if erasure.erased_edges_count is None else erasure.erased_edges_count,
            "has_receipt": erasure.status == "completed"}


@router.get("/receipts/{erasure_id}")
def receipt(erasure_id: str, request: Request) -> Response:
    """The signed receipt, as the API serves it, for a browser signed in to the page."""
    refused = _allowed(request)
    if refused is not None:
        return refused
    from ..publisher import read_receipt
    try:
        key = uuid.UUID(erasure_id)
    except ValueError:
        raise HTTPException(404, f"no erasure {erasure_id!r}: ids are UUIDs") from None
    found = read_receipt(request.app.state.settings.state_dir, key)
    if found is None:
        raise HTTPException(404, f"no receipt for erasure {erasure_id} (unknown, or not completed yet)")
    return JSONResponse(found)


@router.post("/login")
async def login(request: Request) -> Response:
    """Form post `token=...`: a valid token with the scope becomes the page's cookie."""
    body = await request.body()
    if len(body) > LOGIN_BODY_LIMIT:
        return _login_page(request, "The form is too large.", 413)
    token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0].strip()
    principal = _principal(request, token)
    if principal is None:
        return _login_page(request, "That token is invalid or revoked." if token else "Paste a token.", 401)
    if not principal.allows(SCOPE):
        return _login_page(request, f"This token lacks the scope {SCOPE!r}.", 403)
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/ui",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/ui", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response
