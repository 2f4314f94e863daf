"""Self-describing checkpoints: a folder with config.json (run config, data hashes, metrics),
weights.pt (state dict, loadable with torch.load(weights_only=True)) and optional extra tensors.

Writes go through `storage.atomic_folder`: a crash never leaves a half-written checkpoint at the path.

An unlearned checkpoint holds no erased interaction and nothing from which the model before the deletion
can be restored. Its config records its lineage as hashes (of the erased set, of the root model's weights)
and where its root checkpoint is; the root (the model that was trained, which knew everything anyway) keeps
the erasure record in its private working store (`ROOT/erasures/`), and loading the unlearned checkpoint
rebuilds its data from the root. `export` writes the shippable form: weights, config and hashes only.

The erasure record also holds the items whose features of a modality were withdrawn (modality constraints) and
the items taken out of the catalogue (take-downs); the unlearned checkpoint holds their hashes and counts, and
no mask or list of them. Loading rebuilds the model with those feature rows withdrawn and the removed items out
of every item-item graph; `catalogue_removed` names the removed items for whoever answers queries.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..data.interactions import DataError, Dataset, Interactions
from ..models.base import Recommender
from ..models.modal import ContentRecommender
from ..models.registry import build_model
from ..storage import atomic_file, atomic_folder, recover_unlocked
from .config import RunConfig
from .inputs import load_data

CONFIG_FILE, WEIGHTS_FILE, EDITS_FILE = "config.json", "weights.pt", "train_edits.npz"
ERASURES_DIR = "erasures"          # in a root checkpoint: the erasure record of each checkpoint derived from it
WITHDRAWN_PREFIX, REMOVED_KEY = "withdrawn_", "removed_items"   # a record's arrays besides the erased pairs
SPLITS = ("train", "valid", "test")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, or does not match the data it is used with."""


def save_checkpoint(path: str | Path, model: Recommender, run: RunConfig, dataset: Dataset,
                    metrics: dict | None = None, extra: dict | None = None,
                    tensors: dict[str, dict] | None = None, lineage: dict | None = None) -> Path:
    """Write the checkpoint atomically. `tensors` maps file stem -> state dict (e.g. trainer state).

    With `lineage` (from `record_erasure`), the checkpoint is derived from a root checkpoint by erasure: it
    stores the lineage, never the erased pairs. Without it, an edited training set (injected edges; the
    private model cache's retrains) is stored as its added and removed pairs, so that loading rebuilds it.
    """
    path = Path(path)
    with atomic_folder(path, fault_prefix="checkpoint") as tmp:
        meta = {
            "recunlearn": __version__,
            "run": run.model_dump(mode="json"),
            "dataset": dataset.name,
            "data_hash": dataset.origin_hash,
            "dataset_hash": dataset.hash,
            "train_hash": dataset.train.hash,
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "metrics": metrics or {},
            **(extra or {}),
        }
        if lineage is not None:
            meta["lineage"] = lineage
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        torch.save(_weights_to_write(model, derived=lineage is not None), tmp / WEIGHTS_FILE)
        for stem, state in (tensors or {}).items():
            torch.save(state, tmp / f"{stem}.pt")
        added, removed = dataset.train_edits()
        if lineage is None and (len(added) or len(removed)):
            np.savez(tmp / EDITS_FILE, added_users=added.users, added_items=added.items,
                     removed_users=removed.users, removed_items=removed.items)
    return path


def _withdrawal_keys(model: Recommender) -> list[str]:
    return model.withdrawal_state_keys() if isinstance(model, ContentRecommender) else []


def _weights_to_write(model: Recommender, derived: bool) -> dict:
    """The state dict; for a checkpoint derived by erasure, without the withdrawn masks: which items they name
    is in the root's erasure record, and loading rebuilds them from it."""
    state = {key: tensor.cpu() for key, tensor in model.state_dict().items()}   # loadable without a GPU
    if derived:
        for key in _withdrawal_keys(model):
            state.pop(key, None)
    return state


# --- lineage of unlearned checkpoints ----------------------------------------------------------------

def weights_digest(model: Recommender) -> str:
    """SHA-256 of a model's parameters (names, shapes and bytes): identifies a model without holding it."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def erased_digest(erased: dict[str, Interactions]) -> str:
    """SHA-256 of an erased set, split by split."""
    return hashlib.sha256("/".join(f"{split}:{erased[split].hash}" for split in SPLITS).encode()).hexdigest()


def withdrawn_digest(withdrawn: dict[str, np.ndarray]) -> str:
    """SHA-256 of the withdrawn feature rows, modality by modality."""
    h = hashlib.sha256()
    for name in sorted(withdrawn):
        h.update(f"{name}:".encode() + np.asarray(withdrawn[name], np.int64).tobytes() + b"/")
    return h.hexdigest()


def removed_digest(items: np.ndarray) -> str:
    """SHA-256 of the items out of the catalogue."""
    return hashlib.sha256(b"removed:" + np.asarray(items, np.int64).tobytes()).hexdigest()


def model_content(dataset: Dataset, removed: np.ndarray) -> Dataset:
    """What a model of this data may read: its withdrawn feature rows, and every feature row of the items out of
    the catalogue (a taken-down item leaves every modality's item-item graph)."""
    for name in (dataset.modalities if len(removed) else ()):
        dataset = dataset.with_withdrawn(name, removed)
    return dataset


def root_of(path: str | Path) -> Path:
    """The root checkpoint of `path` (itself unless it was derived by erasure)."""
    path = Path(path)
    lineage = read_meta(path).get("lineage")
    return path if lineage is None else _resolve_root(path, lineage)


def record_erasure(root: str | Path, root_data: Dataset, derived: Dataset, *, parent: str | Path,
                   method: str, root_model: Recommender, removed=()) -> dict:
    """Store, in the root's working store, what `derived` no longer holds of `root_data` (erased pairs, withdrawn
    feature rows) and the items out of the catalogue (`removed`, all of them so far); returns the lineage to put
    in the derived checkpoint (hashes and counts, no pairs, no items)."""
    root = Path(root)
    erased = {split: getattr(root_data, split).subtract(getattr(derived, split)) for split in SPLITS}
    withdrawn = {name: np.setdiff1d(items, root_data.withdrawn.get(name, [])).astype(np.int64)
                 for name, items in derived.withdrawn.items()}
    withdrawn = {name: items for name, items in withdrawn.items() if len(items)}
    removed = np.unique(np.asarray(removed, np.int64))
    lineage = {"root": str(root.resolve()), "parent": str(Path(parent).resolve()), "method": method,
               "root_weights_sha256": weights_digest(root_model), "root_dataset_hash": root_data.hash,
               "erased_sha256": erased_digest(erased), "erased": {split: len(erased[split]) for split in SPLITS}}
    if withdrawn:
        lineage.update(withdrawn_sha256=withdrawn_digest(withdrawn),
                       withdrawn={name: len(items) for name, items in withdrawn.items()})
    if len(removed):
        lineage.update(removed_sha256=removed_digest(removed), removed=len(removed))
    with atomic_file(record_file(root, derived.hash, lineage)) as tmp:
        np.savez(tmp, **{f"{split}_{axis}": getattr(erased[split], axis) for split in SPLITS
                         for axis in ("users", "items")},
                 **{f"{WITHDRAWN_PREFIX}{name}": items for name, items in withdrawn.items()},
                 **({REMOVED_KEY: removed} if len(removed) else {}))
    return lineage


def record_file(root: Path, dataset_hash: str, lineage: dict) -> Path:
    """The erasure record of the checkpoint of data `dataset_hash`. The data's hash covers the erased pairs and
    the withdrawn rows, not the catalogue: a take-down with and without removal needs two records."""
    removal = f"-removed-{lineage['removed_sha256'][:16]}" if lineage.get("removed") else ""
    return Path(root) / ERASURES_DIR / f"{dataset_hash}{removal}.npz"


def _resolve_root(path: Path, lineage: dict) -> Path:
    root = Path(lineage["root"])
    if not (root / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path} was unlearned from {root}, whose working store records what it erased, "
                              f"but {root} is missing: put it back there, or use `recunlearn export {path}` "
                              "output for serving (weights only)")
    return root


def _read_record(path: Path, meta: dict) -> tuple[Path, dict[str, np.ndarray]]:
    """(the record file, its arrays) of the derived checkpoint at `path`, with the withdrawn rows and the removed
    items checked against the lineage's hashes (the erased pairs are checked where they are rebuilt)."""
    lineage = meta["lineage"]
    root = _resolve_root(path, lineage)
    record = record_file(root, meta["dataset_hash"], lineage)
    if not record.is_file():
        raise CheckpointError(f"{path}: the erasure record {record} is missing from its root's working store")
    try:
        with np.load(record) as z:
            arrays = {key: z[key] for key in z.files}
    except PermissionError:   # an access problem, not damage (see _torch_load)
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: the erasure record {record} is unreadable ({err}); restore it, or apply "
                              f"the requests again from {root}") from None
    withdrawn = {key.removeprefix(WITHDRAWN_PREFIX): items for key, items in arrays.items()
                 if key.startswith(WITHDRAWN_PREFIX)}
    removed = arrays.get(REMOVED_KEY, np.empty(0, np.int64))
    for what, found, expected in (("withdrawn features", withdrawn_digest(withdrawn) if withdrawn else None,
                                   lineage.get("withdrawn_sha256")),
                                  ("removed items", removed_digest(removed) if len(removed) else None,
                                   lineage.get("removed_sha256"))):
        if found != expected:
            raise CheckpointError(f"{path}: the {what} in the erasure record {record} do not match the recorded "
                                  f"hash (the record was altered); restore it, or apply the requests again from {root}")
    return record, arrays


def _derived_dataset(path: Path, meta: dict) -> Dataset:
    lineage = meta["lineage"]
    root = _resolve_root(path, lineage)
    _, root_data, _ = load_checkpoint_data(root)   # its data only: no model to build
    if root_data.hash != lineage["root_dataset_hash"]:
        raise CheckpointError(f"{path}: its root {root} now holds other data ({root_data.hash}, expected "
                              f"{lineage['root_dataset_hash']}): it was retrained or replaced after the erasure")
    record, arrays = _read_record(path, meta)
    try:
        erased = {split: Interactions.from_arrays(arrays[f"{split}_users"], arrays[f"{split}_items"],
                                                  root_data.n_users, root_data.n_items) for split in SPLITS}
    except (KeyError, DataError):
        erased = None
    if erased is None or erased_digest(erased) != lineage["erased_sha256"]:
        raise CheckpointError(f"{path}: the erasure record {record} does not match the recorded hash")
    data = root_data.with_train(root_data.train.subtract(erased["train"]))
    for key, items in arrays.items():
        if key.startswith(WITHDRAWN_PREFIX):
            data = data.with_withdrawn(key.removeprefix(WITHDRAWN_PREFIX), items)
    return data.with_held_out(root_data.valid.subtract(erased["valid"]), root_data.test.subtract(erased["test"]))


def catalogue_removed(path: str | Path) -> np.ndarray:
    """The items out of the catalogue at checkpoint `path` (taken down by its erasures): whoever answers queries
    for it scores them below every other item (`unlearn.base.without_removed`). Empty for a trained model."""
    path = Path(path)
    meta = read_meta(path)
    if not meta.get("lineage", {}).get("removed"):
        return np.empty(0, np.int64)
    return _read_record(path, meta)[1][REMOVED_KEY].astype(np.int64)


def export_checkpoint(path: str | Path, out: str | Path) -> Path:
    """The shippable form of a checkpoint: its weights and a config with hashes, no data, no lineage paths."""
    path, out = Path(path), Path(out)
    meta = read_meta(path)
    lineage = meta.get("lineage")
    shipped = {key: meta[key] for key in ("recunlearn", "run", "dataset", "data_hash", "dataset_hash",
                                          "train_hash", "n_users", "n_items", "metrics") if key in meta}
    shipped["exported"] = True
    if lineage is not None:
        shipped["lineage"] = {key: lineage[key] for key in ("method", "root_weights_sha256", "root_dataset_hash",
                                                             "erased_sha256", "erased", "withdrawn_sha256",
                                                             "withdrawn", "removed_sha256", "removed")
                              if key in lineage}
    state = load_weights(path)
    with atomic_folder(out, fault_prefix="export") as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(shipped, indent=2))
        torch.save(state, tmp / WEIGHTS_FILE)
    return out


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    for message in recover_unlocked(path):
        print(message, file=sys.stderr)
    file = path / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{path} is not a recunlearn checkpoint (no {CONFIG_FILE}); "
                              "create one with `recunlearn train --out DIR`")
    try:
        meta = json.loads(file.read_text())
    except PermissionError:   # an access problem, not damage (see _torch_load)
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{file}: unreadable ({err}); the checkpoint is damaged: write it again") from None
    missing = [key for key in ("run", "data_hash", "train_hash") if key not in meta] if isinstance(meta, dict) \
        else ["run"]
    if missing:
        raise CheckpointError(f"{file}: not a complete checkpoint config (no {', '.join(missing)}); "
                              "write the checkpoint again with `recunlearn train --out DIR`")
    return meta


REWRITE = "write the checkpoint again"


def load_tensors(path: str | Path, stem: str, remedy: str = REWRITE) -> dict | None:
    """The tensors saved as `stem` (None when there are none); `remedy`: what the error for a damaged file says."""
    file = Path(path) / f"{stem}.pt"
    return _torch_load(file, remedy) if file.is_file() else None


# How torch's weights-only unpickler refuses a file that asks for an object it does not allow (a class or a
# function: code that a plain load would run). Every other unpickling error is a damaged or foreign file.
_REFUSALS = ("GLOBAL", "unrecognized function", "Can only create new object", "Can only build")
# A damaged file fails in any of these ways (a corrupt pickle stream too: UnicodeDecodeError, IndexError, ...).
_DAMAGED = (EOFError, OSError, RuntimeError, ValueError, IndexError, KeyError, zipfile.BadZipFile)


def error_reason(err: BaseException) -> str:
    """The first sentence of an error's message (a KeyError's without its quotes), or its type's name: torch and
    numpy go on with advice that does not apply here (such as loading the file unsafely)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(err).__name__


def _torch_load(file: Path, remedy: str = REWRITE):
    """Plain tensors only (weights_only): damaged or code-carrying files give one clear error."""
    try:
        return torch.load(file, weights_only=True, map_location="cpu")   # a GPU-trained state too
    except PermissionError:   # an access problem, not damage: the CLI names the file and the permissions
        raise
    except pickle.UnpicklingError as err:
        if any(marker in str(err) for marker in _REFUSALS):
            raise CheckpointError(f"{file}: refused to load: it holds more than plain tensors (it could run code "
                                  "when loaded); only files written by recunlearn are accepted") from None
        # torch's first line ("Weights only load failed ...") would suggest an unsafe load: not quoted
        reason = "not a file written by torch.save"
    except _DAMAGED as err:
        reason = error_reason(err)
    raise CheckpointError(f"{file}: unreadable ({reason}); the file is damaged or truncated: {remedy}") from None


def load_weights(path: Path) -> dict:
    """A checkpoint folder's weights (CPU tensors), or one clear error when they are missing or damaged."""
    file = path / WEIGHTS_FILE
    if not file.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS_FILE}; the checkpoint is incomplete: write it again")
    return _torch_load(file)


def load_checkpoint(path: str | Path, dataset: Dataset | None = None) -> tuple[Recommender, RunConfig, Dataset, dict]:
    """Rebuild (model, run config, dataset with the checkpoint's training set, meta).

    The dataset is loaded as the run config names it unless given; its content hash must match the
    checkpoint's. A poisoned model carries its training-set edits; an unlearned one rebuilds its data from
    its root checkpoint's erasure record (the erased pairs are never in the unlearned checkpoint).
    """
    from ..data.graph import build_graph

    path = Path(path)
    run, dataset, meta = load_checkpoint_data(path, dataset)
    derived = "lineage" in meta
    removed = catalogue_removed(path) if derived else np.empty(0, np.int64)
    model = build_model(run.model, dataset.n_users, dataset.n_items, content=model_content(dataset, removed))
    weights = load_weights(path)
    if derived:   # the withdrawn masks were left out on writing: the ones built from the record stand
        own = model.state_dict()
        weights = {**{key: own[key] for key in _withdrawal_keys(model) if key not in weights}, **weights}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{path / WEIGHTS_FILE}: the weights do not fit a {run.model.name} model of "
                              f"{dataset.n_users} users x {dataset.n_items} items "
                              f"({str(err).splitlines()[0]})") from None
    model.attach(build_graph(dataset.train))
    model.eval()
    return model, run, dataset, meta


def load_checkpoint_data(path: str | Path, dataset: Dataset | None = None) -> tuple[RunConfig, Dataset, dict]:
    """(run config, the checkpoint's dataset, meta), checked against the recorded hashes; no model is built."""
    from pydantic import ValidationError

    path = Path(path)
    meta = read_meta(path)
    if meta.get("exported"):
        raise CheckpointError(f"{path} is an exported model (weights and hashes only, no data): evaluate, "
                              "audit or continue unlearning from the working checkpoint it was exported from")
    try:
        run = RunConfig.model_validate(meta["run"])
    except ValidationError as err:
        raise CheckpointError(f"{path / CONFIG_FILE}: invalid run section ({err.errors()[0]['msg']} at "
                              f"{'.'.join(map(str, err.errors()[0]['loc']))})") from None
    if dataset is None and "lineage" in meta:
        dataset = _derived_dataset(path, meta)
    else:
        if dataset is None:
            dataset = load_data(run.data)
        if dataset.origin_hash != meta["data_hash"]:
            raise CheckpointError(f"checkpoint {path} was trained on data {meta['data_hash']}, but the data "
                                  f"loaded now hashes to {dataset.origin_hash}: the files or the split seed changed")
        dataset = apply_edits(path, dataset)
    if dataset.train.hash != meta["train_hash"]:
        raise CheckpointError(f"checkpoint {path}: training set hash {dataset.train.hash} does not match "
                              f"the recorded {meta['train_hash']}")
    if "dataset_hash" in meta and dataset.hash != meta["dataset_hash"]:
        raise CheckpointError(f"checkpoint {path}: data hash {dataset.hash} does not match the recorded "
                              f"{meta['dataset_hash']}")
    return run, dataset, meta


def apply_edits(path: Path, dataset: Dataset) -> Dataset:
    file = Path(path) / EDITS_FILE
    if not file.is_file():
        return dataset
    n_users, n_items = dataset.n_users, dataset.n_items
    try:
        with np.load(file) as z:
            added = Interactions.from_arrays(z["added_users"], z["added_items"], n_users, n_items)
            removed = Interactions.from_arrays(z["removed_users"], z["removed_items"], n_users, n_items)
    except PermissionError:   # an access problem, not damage (see _torch_load)
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:   # DataError is a ValueError
        raise CheckpointError(f"{file}: unreadable training-set edits ({error_reason(err)}); the checkpoint is "
                              "damaged: write it again") from None
    return dataset.with_train(dataset.train.union(added).subtract(removed))
