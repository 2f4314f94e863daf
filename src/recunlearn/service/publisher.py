"""The worker's files in the state folder: model version folders (`versions/vN`), their content hash and
evidence, the canonical hash of an erased edge set, and the signed receipts (`receipts/<erasure id>.json`).

A version folder counts only once the ledger lists it: folders it does not list are leftovers of a worker
that died before publishing, and `remove_unpublished` deletes them before any work starts."""
from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Optional

from ..storage import atomic_file, recover

VERSIONS_DIR = "versions"
RECEIPTS_DIR = "receipts"
EVIDENCE_FILE = "evidence.json"


def version_dir(state_dir: Path, version: int) -> Path:
    return Path(state_dir) / VERSIONS_DIR / f"v{version}"


def folder_sha256(folder: Path) -> str:
    """SHA-256 of a model folder's own files (name and content of each top-level file, in name order). Sub-
    folders are left out: a root checkpoint keeps its working store there, which grows as erasures proceed."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(file.name.encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def edges_sha256(pairs: Iterable[tuple[str, str]]) -> str:
    """The canonical hash of an erased edge set, repeated in receipts: SHA-256 of the UTF-8 lines
    `user<TAB>item<LF>` (original ids as strings), sorted, without duplicates."""
    lines = sorted({f"{user}\t{item}\n" for user, item in pairs})
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def remove_unpublished(state_dir: Path, published: Iterable[str]) -> list[str]:
    """Delete every version folder (and every interrupted write of one) that the ledger does not list as
    published; returns what was removed. Call with the worker's lock on the versions folder held."""
    root = Path(state_dir) / VERSIONS_DIR
    if not root.is_dir():
        return []
    keep = {Path(p).resolve() for p in published}
    removed = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):   # `.vN.tmp-PID-...`: a write that never reached its rename
            removed += recover(root / entry.name[1:].split(".")[0])
        elif entry.resolve() not in keep:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            removed.append(f"removed unpublished model version folder {entry}")
    return removed


def write_json(path: Path, record: dict) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))


def read_evidence(version_path: str | Path) -> dict:
    file = Path(version_path) / EVIDENCE_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def receipt_path(state_dir: Path, erasure_id: uuid.UUID | str) -> Path:
    return Path(state_dir) / RECEIPTS_DIR / f"{uuid.UUID(str(erasure_id))}.json"


def read_receipt(state_dir: Path, erasure_id: uuid.UUID | str) -> Optional[dict]:
    """The signed receipt of an erasure (what `GET /v1/erasures/{id}/receipt` serves), or None before it
    is issued."""
    path = receipt_path(state_dir, erasure_id)
    return json.loads(path.read_text()) if path.is_file() else None
