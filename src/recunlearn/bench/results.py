"""One results schema for every run: JSON lines, plus a readable table."""
from __future__ import annotations

import json
from pathlib import Path

from .environment import machine_line, versions


def append_results(path: str | Path, rows: list[dict], **context) -> None:
    """Append one JSON line per row with its context (dataset, split hash, request, seed, versions, machine)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for row in rows:
            fh.write(json.dumps({**context, **row, "versions": versions(), "machine": machine_line()}) + "\n")


def read_results(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
