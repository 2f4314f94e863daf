"""Trained models cached by the content hash of their data, their run config and the code version, never
by dataset name: after a deletion the data changed, so a retrained reference is keyed by the residual data
it saw; after a code change the code did, so no stale model is reused."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..data.interactions import Dataset
from ..models.base import Recommender
from ..models.modal import ContentRecommender
from ..models.registry import model_class
from .checkpoint import load_checkpoint, read_meta
from .config import RunConfig
from .runs import train_and_save
from .trainer import TRAINER_STATE
from .version import TRAINING_PACKAGES, code_version


def cache_root(root: str | Path | None = None) -> Path:
    """$RECUNLEARN_CACHE, else ~/.cache/recunlearn/models."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("RECUNLEARN_CACHE", Path.home() / ".cache" / "recunlearn" / "models"))


def run_key(run: RunConfig, dataset: Dataset) -> str:
    train = run.train.model_dump(mode="json", exclude={"threads"})   # threads change speed, not the model
    key = {"code": code_version(TRAINING_PACKAGES), "data": dataset.hash, "model": run.model.model_dump(mode="json"),
           "train": train}
    if issubclass(model_class(run.model.name), ContentRecommender):   # the item features it reads
        key["content"] = dataset.content_hash
    payload = json.dumps(key, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def train_cached(run: RunConfig, dataset: Dataset, root: str | Path | None = None,
                 progress: bool = True) -> tuple[Recommender, dict, bool]:
    """(model, checkpoint meta, loaded_from_cache). Trains and stores the checkpoint on a miss; the
    recorded training seconds travel with it so that speed-ups stay honest when the cache answers."""
    path = cache_root(root) / f"{run.model.name}-{run_key(run, dataset)}"
    started = (path / "config.json").is_file()
    hit = started and read_meta(path).get("complete", False)
    if not hit:   # an interrupted run resumes from its last epoch; an entry without resume state retrains
        resumable = started and (path / f"{TRAINER_STATE}.pt").is_file()
        train_and_save(run, dataset, path, progress=progress, resume=resumable)
    model, _, _, meta = load_checkpoint(path, dataset)
    meta["path"] = str(path)
    return model, meta, hit
