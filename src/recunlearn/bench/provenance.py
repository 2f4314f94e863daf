"""Where a cached timing was measured, so that a reused one can be checked (evaluation.md rule 3).

A cached artefact (a trained model, a prepared method state) carries the seconds it took to make; a later
run that reuses the artefact reuses that timing. Rule 3 allows it only when the code version, the machine
line and the concurrent load were the same, and recorded. The harness records them here whenever it times
something that lands in a cache, and looks them up when a cache answers: a row then says which timings were
reused and from where, and the report names any reuse that is not comparable. Within one run the same
artefact serves several rows (one preparation for every request on a model): that is the run's own
measurement, not a copy.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ..train.cache import cache_root
from ..train.version import UNLEARNING_PACKAGES, code_version
from .environment import load_average, machine_identity

LEDGER = "bench-timings"
# This process: a timing measured earlier in the same run is that run's own measurement, not a copy.
RUN_ID = uuid.uuid4().hex[:12]
# 1-minute load averages this close count as the same concurrent load.
LOAD_TOLERANCE = 0.5


def here(load: float | None = None, packages: tuple[str, ...] = UNLEARNING_PACKAGES) -> dict:
    """The provenance of a timing measured now (`load`: the load average when it started; `packages`: the
    code that made the artefact, whose version is recorded)."""
    return {"run": RUN_ID, "code_version": code_version(packages), "machine": machine_identity(),
            "load": load_average() if load is None else load,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def remember(cache_dir: str | Path | None, key: str, record: dict) -> None:
    """Store the provenance of the timing of cached artefact `key` (written atomically)."""
    folder = cache_root(cache_dir) / LEDGER
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, folder / f"{key}.json")


def recall(cache_dir: str | Path | None, key: str) -> dict | None:
    """The recorded provenance of `key`, or None when the harness did not time it (made elsewhere)."""
    path = cache_root(cache_dir) / LEDGER / f"{key}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def comparable(then: dict | None, now: dict) -> tuple[bool, str]:
    """Whether a timing recorded `then` may stand in for one measured `now`, and if not, why."""
    # The code version needs no check here: it is part of every cache key, so a cache hit was made by the
    # same code (it is recorded all the same).
    if then is None:
        return False, "not timed by the harness (no record of machine and load)"
    if then.get("run") == now["run"]:
        return True, "measured earlier in this run"
    if then.get("machine") != now["machine"]:
        return False, f"timed on another machine ({then.get('machine')})"
    load_then, load_now = then.get("load"), now["load"]
    if load_then is None or math.isnan(load_then) or math.isnan(load_now) or abs(load_then - load_now) > LOAD_TOLERANCE:
        return False, f"timed under load {load_then}, now {load_now}"
    return True, f"same code and machine, load {load_then} then, {load_now} now"
