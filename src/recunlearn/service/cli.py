"""`recunlearn service ...`: the service's administration commands (API tokens, the worker). Mounted in the main
command by `app.add_typer(service_app, name="service")`. Imports the database libraries only when run."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

service_app = typer.Typer(help="The erasure service: API tokens and the worker that applies erasures.",
                          no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens of the service's API: create (shown once), list, revoke.",
                        no_args_is_help=True)
service_app.add_typer(token_app, name="token")

DATABASE_HELP = "ledger database URL (default: the --config file's, else sqlite in ./service-state)"
CONFIG_HELP = "service settings file (YAML)"


def _input_error(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def _ledger(database: Optional[str], config: Optional[Path]):
    """The ledger named by --database, else by the settings file, migrated to the current schema."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    from ..config import ConfigError
    from .ledger import open_ledger
    from .settings import load_settings
    try:
        url = database or load_settings(config).ledger_url()
        return open_ledger(url)
    except (ConfigError, ArgumentError, OperationalError, OSError) as err:
        _input_error(err)


@token_app.command("create")
def token_create(name: str = typer.Option(..., help="who or what uses the token (kept with it)"),
                 scope: List[str] = typer.Option(..., "--scope", help="erasure:write | erasure:read | recs:read | "
                                                 "admin (repeatable; admin grants every scope)"),
                 database: Optional[str] = typer.Option(None, help=DATABASE_HELP),
                 config: Optional[Path] = typer.Option(None, help=CONFIG_HELP)) -> None:
    """Create a token and print it once on stdout: only its salted hash is stored, so it cannot be shown
    again (create a new one if it is lost, and revoke the old one)."""
    from .auth import create_token
    ledger = _ledger(database, config)
    try:
        with ledger.writing() as session:
            token = create_token(session, name, scope)
    except ValueError as err:
        _input_error(err)
    finally:
        ledger.dispose()
    typer.echo(token)
    typer.echo(f"token {token.split('_')[1]} ({name}; {', '.join(sorted(set(scope)))}) created; it is shown "
               "only this once", err=True)


@token_app.command("list")
def token_list(database: Optional[str] = typer.Option(None, help=DATABASE_HELP),
               config: Optional[Path] = typer.Option(None, help=CONFIG_HELP)) -> None:
    """The tokens: id, name, scopes, created, revoked (never the token itself)."""
    from .auth import list_tokens
    ledger = _ledger(database, config)
    with ledger.reading() as session:
        rows = list_tokens(session)
    ledger.dispose()
    for row in rows:
        revoked = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "live"
        typer.echo(f"{row.id}  {row.name}  {','.join(row.scopes)}  created {row.created_at:%Y-%m-%d %H:%M}  {revoked}")


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="the token's id (as `token list` shows it)"),
                 database: Optional[str] = typer.Option(None, help=DATABASE_HELP),
                 config: Optional[Path] = typer.Option(None, help=CONFIG_HELP)) -> None:
    """Revoke a token: requests with it get 401 from then on."""
    from .auth import revoke_token
    ledger = _ledger(database, config)
    with ledger.writing() as session:
        revoked = revoke_token(session, token_id)
    ledger.dispose()
    if not revoked:
        _input_error(ValueError(f"no live token {token_id!r} (see `recunlearn service token list`)"))
    typer.echo(f"token {token_id} revoked", err=True)


@service_app.command("worker")
def worker(config: Path = typer.Option(..., help="service settings file (YAML) with `checkpoint`"),
           once: bool = typer.Option(False, help="apply every pending erasure, then exit"),
           maintenance: Optional[str] = typer.Option(None, help="run this maintenance now (finetune or retrain), "
                                                     "publish its version, then exit")):
    """Apply acknowledged erasures: micro-batches, published model versions, signed receipts. Run it more than
    once for several workers on one ledger and state folder (they take turns; see docs/service.md)."""
    from .worker import worker_command
    worker_command(config=config, once=once, maintenance=maintenance)


@service_app.command("serve")
def serve(config: Path = typer.Option(..., help="service settings file (YAML) with `checkpoint`"),
          host: str = typer.Option("127.0.0.1", help="address to listen on"),
          port: int = typer.Option(8000, help="port to listen on"),
          worker: bool = typer.Option(True, "--worker/--no-worker", help="run a worker in this process; with "
                                      "--no-worker, run workers beside it with `recunlearn service worker`")):
    """Serve the API (erasures, receipts, keys, recommendations), with a worker in the same process unless
    --no-worker."""
    from .serve import serve_command
    serve_command(config=config, host=host, port=port, worker=worker)
