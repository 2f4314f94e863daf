"""One results schema for every run: JSON lines, one per (setting, method), appended atomically.

A line is written with one `write` on a file opened for appending, then synced, so that an interrupted
suite leaves complete lines behind (at worst a last line cut short, which readers skip and the next append
starts after). Resuming reads the `unit` keys already present: a unit is skipped when the same code version
and configuration finished it before.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

from .environment import machine_line, versions

SCHEMA = 1
# Every line of a suite carries these keys (`metrics`, `timings`, ... are mappings).
FIELDS = ("schema", "suite", "unit", "role", "dataset", "split_hash", "data_hash", "backbone", "run", "request",
          "request_kind", "request_size", "seed", "method", "method_name", "method_config", "kind",
          "retrain_seed", "reference_seed", "stream", "metrics", "timings", "reused", "reused_from", "models",
          "code_version", "machine", "load", "date", "versions")

# The JSON types of the keys the runner and the report read as containers or counts.
SHAPES = {"metrics": (dict,), "timings": (dict,), "reused": (dict,), "reused_from": (dict,), "run": (dict,),
          "models": (dict,), "load": (dict,), "method_config": (dict, None), "stream": (dict, None),
          "seed": (int,), "request_size": (int,),
          "train_defaults": (dict, None)}   # optional: lines written before it was recorded lack it
_KIND_NAMES = {dict: "an object", int: "an integer"}


def append_row(path: str | Path, row: dict) -> None:
    """Append one result line (a complete line or nothing: see the module notes)."""
    missing = [key for key in FIELDS if key not in row]
    if missing:
        raise ValueError(f"result row lacks {', '.join(missing)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(_finite(row), sort_keys=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if _ends_mid_line(path):   # a line cut short by an interruption: start on a fresh one
            line = "\n" + line
        data = line.encode()
        written = os.write(fd, data)
        while written < len(data):   # a regular file takes it in one call; guard anyway
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


class ResultsError(ValueError):
    """A results file that `bench run` did not write: the message names the file and line, and the fix."""


def read_rows(path: str | Path) -> list[dict]:
    """Every complete line of a results file (a missing file has none); a line cut short is skipped. Each
    line is checked here, once, so that the runner and the report can rely on its keys (`check_row`)."""
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"{path} is a folder, not a results file: name a file (JSON lines), such as "
                           f"{path / 'results.jsonl'}")
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{path}, line {number}: not a complete JSON line (an interrupted write?); skipped")
            continue
        check_row(row, f"{path}:{number}")
        rows.append(row)
    return rows


def check_row(row, where: str) -> None:
    """A line is a JSON object; a harness line (one with a `schema`) is of this schema and has every key of
    FIELDS. Lines without a schema are the older free-form records, which the report skips."""
    fix = "remove the line, or pass a results file written by `recunlearn bench run`"
    if not isinstance(row, dict):
        raise ResultsError(f"{where}: expected a JSON object (one result), found {_json_kind(row)}: {fix}")
    if row.get("schema") is None:
        return
    if row["schema"] != SCHEMA:
        raise ResultsError(f"{where}: schema {row['schema']!r}, but this version of recunlearn reads schema "
                           f"{SCHEMA}: {fix}")
    missing = [key for key in FIELDS if key not in row]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ResultsError(f"{where}: the result line lacks {shown}: {fix}")
    for key, kinds in SHAPES.items():
        value = row.get(key)   # every key of FIELDS is present by now; the others are optional
        if not any(value is None if kind is None else isinstance(value, kind) and not isinstance(value, bool)
                   for kind in kinds):
            expected = " or ".join("null" if kind is None else _KIND_NAMES[kind] for kind in kinds)
            raise ResultsError(f"{where}: `{key}` should be {expected}, found {_json_kind(value)}: {fix}")


def _json_kind(value) -> str:
    if isinstance(value, bool) or value is None:   # bool before int: True is an int in Python
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return {list: "an array", str: "a string", dict: "an object"}.get(type(value), type(value).__name__)


def finished_units(path: str | Path) -> set[str]:
    return {row["unit"] for row in read_rows(path) if "unit" in row}


def _ends_mid_line(path: Path) -> bool:
    size = path.stat().st_size
    if size == 0:
        return False
    with path.open("rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) != b"\n"


def _finite(value):
    """NaN and infinities as null: JSON has no such numbers (json.dumps would write invalid `NaN`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


# --- the older free-form records (benchmarks/bench_quality.py) -----------------------------------------

def append_results(path: str | Path, rows: list[dict], **context) -> None:
    """Append one JSON line per row with its context (dataset, split hash, request, seed, versions, machine)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for row in rows:
            fh.write(json.dumps({**context, **row, "versions": versions(), "machine": machine_line()}) + "\n")
