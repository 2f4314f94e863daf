"""Self-describing checkpoints: a folder with config.json (run config, data hashes, metrics),
weights.pt (state dict, loadable with torch.load(weights_only=True)) and optional extra tensors.

Writes go to a temporary sibling folder that is renamed into place, so a crash never leaves a
half-written checkpoint.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..data.interactions import Dataset, Interactions
from ..models.base import Recommender
from ..models.registry import build_model
from .config import RunConfig
from .inputs import load_data

CONFIG_FILE, WEIGHTS_FILE, EDITS_FILE = "config.json", "weights.pt", "train_edits.npz"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, or does not match the data it is used with."""


def save_checkpoint(path: str | Path, model: Recommender, run: RunConfig, dataset: Dataset,
                    metrics: dict | None = None, extra: dict | None = None,
                    tensors: dict[str, dict] | None = None) -> Path:
    """Write the checkpoint atomically. `tensors` maps file stem -> state dict (e.g. trainer state).

    When `dataset.train` was edited (a deletion, injected edges), the added and removed pairs are stored
    so that loading rebuilds exactly the training set the model saw.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        meta = {
            "recunlearn": __version__,
            "run": run.model_dump(mode="json"),
            "dataset": dataset.name,
            "data_hash": dataset.origin_hash,
            "train_hash": dataset.train.hash,
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "metrics": metrics or {},
            **(extra or {}),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        torch.save(model.state_dict(), tmp / WEIGHTS_FILE)
        for stem, state in (tensors or {}).items():
            torch.save(state, tmp / f"{stem}.pt")
        added, removed = dataset.train_edits()
        if len(added) or len(removed):
            np.savez(tmp / EDITS_FILE, added_users=added.users, added_items=added.items,
                     removed_users=removed.users, removed_items=removed.items)
        if path.exists():
            backup = path.with_name(f".{path.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            path.rename(backup)
            tmp.rename(path)
            shutil.rmtree(backup)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    file = path / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{path} is not a recunlearn checkpoint (no {CONFIG_FILE}); "
                              "create one with `recunlearn train --out DIR`")
    return json.loads(file.read_text())


def load_tensors(path: str | Path, stem: str) -> dict | None:
    file = Path(path) / f"{stem}.pt"
    return torch.load(file, weights_only=True) if file.is_file() else None


def load_checkpoint(path: str | Path, dataset: Dataset | None = None) -> tuple[Recommender, RunConfig, Dataset, dict]:
    """Rebuild (model, run config, dataset with the checkpoint's training set, meta).

    The dataset is loaded by name unless given; its content hash must match the checkpoint's, and a
    checkpoint of an unlearned (or poisoned) model carries its training-set edits so that the training
    set is rebuilt exactly.
    """
    from ..data.graph import build_graph

    path = Path(path)
    meta = read_meta(path)
    run = RunConfig.model_validate(meta["run"])
    if dataset is None:
        dataset = load_data(run.data)
    if dataset.origin_hash != meta["data_hash"]:
        raise CheckpointError(f"checkpoint {path} was trained on data {meta['data_hash']}, but the data "
                              f"loaded now hashes to {dataset.origin_hash}: the files or the split seed changed")
    dataset = apply_edits(path, dataset)
    if dataset.train.hash != meta["train_hash"]:
        raise CheckpointError(f"checkpoint {path}: training set hash {dataset.train.hash} does not match "
                              f"the recorded {meta['train_hash']}")
    model = build_model(run.model, dataset.n_users, dataset.n_items)
    model.load_state_dict(torch.load(path / WEIGHTS_FILE, weights_only=True))
    model.attach(build_graph(dataset.train))
    model.eval()
    return model, run, dataset, meta


def apply_edits(path: Path, dataset: Dataset) -> Dataset:
    file = Path(path) / EDITS_FILE
    if not file.is_file():
        return dataset
    n_users, n_items = dataset.n_users, dataset.n_items
    with np.load(file) as z:
        added = Interactions.from_arrays(z["added_users"], z["added_items"], n_users, n_items)
        removed = Interactions.from_arrays(z["removed_users"], z["removed_items"], n_users, n_items)
    return dataset.with_train(dataset.train.union(added).subtract(removed))
