"""`recunlearn receipt ...`: check an erasure receipt's signature, print the service's public key. Mounted in
the main command by `app.add_typer(receipt_app, name="receipt")`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

receipt_app = typer.Typer(help="Erasure receipts: verify a receipt's signature, print the public key.",
                          no_args_is_help=True)


def _input_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        _input_error(f"{path}: no such {what}")
    except OSError as err:
        _input_error(f"{path}: cannot read the {what} ({err.strerror or err})")


@receipt_app.command("verify")
def verify_command(file: Path = typer.Argument(..., help="the receipt (JSON, as GET /v1/erasures/{id}/receipt "
                                               "returns it)"),
                   key: Optional[Path] = typer.Option(None, "--key", help="the service's public key (PEM, as "
                                                      "GET /v1/keys or `receipt public-key` returns it)"),
                   state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="or: the service's state "
                                                            "folder, to use its own key")) -> None:
    """Check that a receipt was signed by the service's key and not changed since. Exit code 0 and a line
    starting `valid:` when it was; a one-line error and exit code 2 when not."""
    from .receipts import ReceiptError, loads, public_key_pem, verify
    if (key is None) == (state_dir is None):
        _input_error("give the public key with exactly one of --key PEMFILE or --state-dir DIR")
    try:
        pem = _read(key, "key file") if key is not None else public_key_pem(state_dir, create=False)
        receipt = loads(_read(file, "receipt file"))
        verify(receipt, pem)
    except ReceiptError as err:
        _input_error(f"{file}: {err}")
    except OSError as err:   # the state folder's key file cannot be read
        _input_error(f"{err.filename or state_dir}: {err.strerror or err}")
    subject = receipt.get("subject") if isinstance(receipt.get("subject"), dict) else {}
    after = receipt.get("model_after") if isinstance(receipt.get("model_after"), dict) else {}
    typer.echo(f"valid: erasure {receipt.get('erasure_id', '?')} ({subject.get('kind', '?')}), completed "
               f"{receipt.get('completed_at', '?')}, model version {after.get('version', 'unchanged')}, "
               f"signed by key {receipt['key_id']}")


@receipt_app.command("public-key")
def public_key_command(state_dir: Path = typer.Option(..., "--state-dir", help="the service's state folder")) -> None:
    """Print the service's public verification key (PEM) for verifiers; never the private key."""
    from .receipts import ReceiptError, public_key_pem
    try:
        typer.echo(public_key_pem(state_dir, create=False).decode("ascii"), nl=False)
    except ReceiptError as err:
        _input_error(str(err))
    except OSError as err:
        _input_error(f"{err.filename or state_dir}: {err.strerror or err}")
