"""A method prepared for an original model, from the cache of prepared states when one matches.

Preparation is the one-off cost (an encoder's pre-training, shard training, ...): one trained model is
prepared once per method configuration and code version, whatever the number of requests it then serves.
The state is stored with the method's own `save` and read back with its `load`, under a key made of the code
version, the method's name and resolved config, the original's weight fingerprint, its training data hash
and its run config (evaluation.md rule 7). The preparation seconds travel with the state; where they were
measured is recorded beside it (`bench.json`), so that a reused preparation time can be checked (rule 3).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.interactions import Dataset
from ..models.base import Recommender
from ..train.cache import cache_root
from ..train.config import RunConfig
from ..train.version import code_version
from ..unlearn.base import Unlearner
from ..unlearn.registry import build_unlearner, unlearner_class
from . import provenance
from .environment import load_average
from .setting import fingerprint

PROVENANCE_FILE = "bench.json"


@dataclass
class Prepared:
    unlearner: Unlearner
    seconds: float
    reused: bool
    provenance: dict | None
    key: str


def prepared(name: str, overrides: dict, run: RunConfig, model: Recommender, data: Dataset, *, cache_dir=None,
             progress: bool = True) -> Prepared:
    """`name` built with `overrides` and prepared for `model` (a private copy: methods cannot touch the
    caller's), loaded from the cache of prepared states when the same preparation was stored before."""
    unlearner = build_unlearner(name, overrides, run=run, progress=progress, cache_dir=cache_dir)
    key = prepared_key(name, unlearner.preparation_config(), run, model, data)
    path = cache_root(cache_dir) / "prepared" / f"{name}-{key}"
    if (path / PROVENANCE_FILE).is_file():   # written last: its presence marks a complete entry
        loaded = unlearner_class(name).load(path, model.clone(), data, run=run, progress=progress,
                                            cache_dir=cache_dir)
        loaded.with_request_settings(unlearner.config)
        record = json.loads((path / PROVENANCE_FILE).read_text())
        return Prepared(loaded, loaded.prepare_seconds, True, record, key)
    before = load_average()
    start = time.perf_counter()
    unlearner.prepare(model.clone(), data)
    seconds = time.perf_counter() - start
    record = {**provenance.here(before), "seconds": seconds}
    _store(unlearner, path, record)
    return Prepared(unlearner, seconds, False, record, key)


def prepared_key(name: str, config: dict, run: RunConfig, model: Recommender, data: Dataset) -> str:
    train = run.train.model_dump(mode="json", exclude={"threads"})
    payload = {"code": code_version(), "method": name, "config": config, "weights": fingerprint(model),
               "train_hash": data.train.hash, "data_hash": data.hash, "model": run.model.model_dump(mode="json"),
               "train": train}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _store(unlearner: Unlearner, path: Path, record: dict) -> None:
    """Save into a temporary sibling and rename it into place: a crash never leaves half an entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        unlearner.save(tmp)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(record))
        if path.exists():   # an incomplete entry from an interrupted run
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
