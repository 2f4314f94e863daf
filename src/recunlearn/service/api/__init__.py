"""The HTTP API: `create_app(settings)` builds the FastAPI application (routers per resource, auth as a
dependency, errors as JSON that names the problem, a body size limit)."""
from __future__ import annotations

from typing import Optional

from fastapi import FastAPI

from ... import __version__
from ..auth import TokenVerifier
from ..ledger import Ledger, open_ledger
from ..metrics import ServiceMetrics
from ..settings import ServiceSettings
from . import admin, erasures, errors, health, receipts, recommendations, ui
from .body_limit import BodySizeLimit


def create_app(settings: ServiceSettings, ledger: Optional[Ledger] = None) -> FastAPI:
    """The service's app on the ledger at `settings.ledger_url()` (migrated to the current schema first), or
    on `ledger` when given. Only /healthz (and /ui's sign-in form) answer without a valid token (unless tokens
    are turned off)."""
    ledger = ledger or open_ledger(settings.ledger_url())
    app = FastAPI(title="recunlearn erasure service", version=__version__, openapi_url=None, docs_url=None,
                  redoc_url=None, description="Erasure requests in, forgotten models and receipts out.")
    app.state.settings, app.state.ledger = settings, ledger
    app.state.token_verifier, app.state.metrics = TokenVerifier(), ServiceMetrics(ledger)
    errors.install(app)
    app.include_router(erasures.router)
    app.include_router(receipts.router)
    app.include_router(recommendations.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(ui.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
