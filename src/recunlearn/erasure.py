"""Applying one erasure request to a checkpoint, the way the CLI's `unlearn` and the service's worker do it.

Steps, each safe to interrupt (the tests kill a real process at every fault point):
1. lock the checkpoint being continued and the output; finish or clean up interrupted earlier writes;
2. continue the method from the checkpoint's state in the root's working store (or prepare it, for a method
   without a one-off step) and unlearn the request's training edges; drop its held-out pairs from valid/test;
3. re-draw the rows of users and items left with no interaction at all (`forget_isolated_nodes`), and give
   the model the feature rows it may still read (a modality constraint's withdrawals, the items out of the
   catalogue), whatever the method did;
4. record what was erased, withdrawn or taken out of the catalogue in the root's working store, then the
   method's state for the new data, then the new checkpoint, which holds lineage hashes only. The checkpoint
   is written last: when it exists, the state that continues it exists too.
"""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .data.interactions import Dataset
from .data.requests import Request
from .eval.forgetting import audit
from .models.base import Recommender
from .models.registry import attach_content
from .storage import StorageError, atomic_folder, exclusive, fault_point, recover
from .train.checkpoint import (CONFIG_FILE, catalogue_removed, load_checkpoint, model_content, read_meta,
                               record_erasure, root_of, save_checkpoint)
from .train.config import RunConfig
from .train.runs import test_metrics
from .unlearn.base import UNLEARNERS_DIR, Unlearner, forget_isolated_nodes, without_removed
from .unlearn.registry import build_unlearner, unlearner_class

Notes = Callable[[str], None]


class ErasureError(ValueError):
    """The request cannot be applied to this checkpoint with this method (and nothing was written)."""


@dataclass
class ErasureOutcome:
    out: Path
    method: str
    edges: int
    held_out: dict[str, int]
    seconds: dict[str, float]
    reinitialised: dict[str, int]
    before: dict = field(default_factory=dict)    # request-edge mean score and test metrics before
    after: dict = field(default_factory=dict)     # ... and after
    withdrawn: dict[str, int] = field(default_factory=dict)   # items whose features this request withdrew
    removed: int = 0                              # items this request took out of the catalogue


def checkpoint_scorer(checkpoint: Path, model: Recommender):
    """What answers queries for the checkpoint whose loaded model is `model`: the model, with the items its
    take-downs removed from the catalogue scored below every other item (never recommended)."""
    return without_removed(model, catalogue_removed(checkpoint))


def method_state_dir(root: Path, method: str, data_hash: str) -> Path:
    """Where a method's working state for the model of `data_hash` lives: in the private working store of
    the root checkpoint it descends from (never in a checkpoint that is shipped)."""
    return Path(root) / UNLEARNERS_DIR / method / data_hash


def prune_method_states(checkpoint: Path, method: str) -> list[Path]:
    """Delete `method`'s states in the working store of `checkpoint`'s root except the root's own (its
    preparation) and `checkpoint`'s: for a caller that only ever continues its newest checkpoint (the erasure
    service), since a state costs about as much disk as a model. Returns what was deleted."""
    root = root_of(checkpoint)
    keep = {read_meta(root)["dataset_hash"], read_meta(checkpoint)["dataset_hash"]}   # states are keyed by data
    folder = Path(root) / UNLEARNERS_DIR / method
    stale = [state for state in sorted(folder.iterdir()) if state.name not in keep] if folder.is_dir() else []
    for state in stale:
        shutil.rmtree(state, ignore_errors=True)
    return stale


def refuse_existing(out: Path, overwrite: bool) -> None:
    """An existing `out` is replaced only on request, and never when it is not a checkpoint of ours."""
    if not out.exists() or out.is_dir() and not any(out.iterdir()) or overwrite and (out / CONFIG_FILE).is_file():
        return
    if overwrite:
        raise StorageError(f"{out} exists and is not a recunlearn checkpoint; it is not replaced even with "
                           "--overwrite: choose another --out")
    raise StorageError(f"{out} exists; pass --overwrite to replace it, or choose another --out")


@contextlib.contextmanager
def writing(out: Path, action: str, overwrite: bool = False, replace_ok: bool = False,
            notes: Notes = lambda message: None) -> Iterator[None]:
    """Hold the lock on `out` while it is written; first finish or clean up an interrupted earlier write of
    it (each step reported to `notes`), then refuse an existing `out` unless replacing it is allowed."""
    with exclusive(out, action):
        for message in recover(out):
            notes(message)
        if not replace_ok:
            refuse_existing(out, overwrite)
        yield


EVIDENCE_MAX_USERS = 200      # the evidence samples this many of the request's users: seconds, even on gowalla
MIA_MIN_EDGES = 20            # below this many forgotten edges a membership-inference AUC says nothing


def forgetting_evidence(scorer, forgotten, residual: Dataset, seed: int) -> dict:
    """What the unlearned model shows of the request, without a retrained reference: the mean score of
    same-user non-edges (what a forgotten edge should look like), the forgotten items' mean percentile rank
    among their users' unmasked items, and the membership-inference AUC against held-out edges when the
    request is large enough (the `evidence_*` keys; the receipt's `nonedge_score`, `forget_rank_after`,
    `mia_auc_after`). A request without edges (a modality constraint) has none: the values are None."""
    if len(forgotten) == 0:
        return {"evidence_nonedge_score": None, "evidence_forget_rank": None, "evidence_mia_auc": None,
                "evidence_audit_edges": 0}
    # items out of the catalogue score far below zero: σ(score) is 0 and the MI ratios infinite (unused here)
    with np.errstate(divide="ignore"):
        found = audit(scorer, forgotten, residual.train, residual.test, valid=residual.valid, seed=seed,
                      max_users=EVIDENCE_MAX_USERS)
    enough = found["audit_edges"] >= MIA_MIN_EDGES
    return {"evidence_nonedge_score": found["nonedge_score_mean"], "evidence_forget_rank": found["forget_rank_pct"],
            "evidence_mia_auc": found["mia_auc"] if enough else None, "evidence_audit_edges": int(found["audit_edges"])}


def continue_unlearner(method: str, checkpoint: Path, root: Path, data: Dataset, settings: list[str] | dict,
                       run: RunConfig, progress: bool = False, notes: Notes = lambda message: None,
                       loaded_root: tuple | None = None, loaded: Recommender | None = None,
                       device: str | None = None) -> Unlearner:
    """The method's state for the model at `checkpoint` (its data `data`), ready for the next request: loaded
    from the root's working store, or built and prepared here for methods without a one-off preparation.
    `loaded_root` is the root's (model, data) and `loaded` the checkpoint's model when the caller has loaded
    them already. `device`: where the method's own training runs (None: the run's `train.device`)."""
    from .config import load_config

    cls = unlearner_class(method)
    run = run.on_device(device)
    state = method_state_dir(root, method, data.hash)
    for message in recover(state):   # e.g. a re-`prepare` killed between its two renames
        notes(message)
    if (state / "unlearner.json").is_file():
        root_model, root_data = loaded_root or load_checkpoint(root)[::2]
        unlearner = cls.load(state, root_model, root_data.with_held_out(data.valid, data.test), run=run,
                             progress=progress)
        if unlearner.state.dataset.hash != data.hash:
            raise ErasureError(f"the {method} state in {state} does not continue {checkpoint} (its data differs); "
                               f"prepare {root} again")
        if settings:
            unlearner.config = load_config(cls.config_class, None, settings, base=unlearner.config.model_dump())
        return unlearner
    if cls.has_preparation():
        if checkpoint == root:
            raise ErasureError(f"{method} has not been prepared for {checkpoint}: run `recunlearn prepare --method "
                               f"{method} --checkpoint {checkpoint}` first")
        raise ErasureError(f"no {method} state continues {checkpoint} (it was made by another method, or its state "
                           f"was removed): unlearn with {method} from {root}, prepared with `recunlearn prepare`")
    model = loaded if loaded is not None else load_checkpoint(checkpoint)[0]
    return build_unlearner(method, settings, run=run, progress=progress).prepare(model, data)


def apply_request(checkpoint: Path, load_request: Callable[[Dataset], Request], request_sha256: str, out: Path, *,
                  method: str = "unlearnrec", settings: list[str] | dict | None = None, overwrite: bool = False,
                  progress: bool = False, notes: Notes = lambda message: None,
                  test_users: int | None = None, device: str | None = None) -> ErasureOutcome:
    """Forget the request (read against the checkpoint's data by `load_request`) and write the unlearned
    model to `out`. `request_sha256` identifies the request in the new checkpoint's record (never its pairs).
    `test_users`: measure the test metrics before and after on that many test users (one seeded sample for
    both) instead of all of them, for a caller that applies many small requests on a large dataset. `device`:
    where the method's own training runs, in place of the checkpoint's `train.device` (None: the checkpoint's);
    the new checkpoint keeps the original run's record."""
    checkpoint, out = Path(checkpoint), Path(out)
    if not unlearner_class(method).has_model:   # (an unknown method fails here too, before any work)
        raise ErasureError(f"{method} answers through a scorer with no model state to write as a checkpoint; "
                           "compare it in the benchmark harness (`recunlearn bench run`)")
    if out.resolve() == checkpoint.resolve():
        raise ErasureError("the output is the checkpoint itself: write the unlearned model to a new folder")
    with exclusive(checkpoint, "unlearn"), writing(out, "unlearn", overwrite, notes=notes):
        model, run, data, _ = load_checkpoint(checkpoint)
        request = load_request(data)
        if len(request.edges) and not len(data.train.subtract(request.edges)):
            raise ErasureError(f"the request forgets all {len(data.train)} training interactions of {checkpoint}: "
                               "no model is left to unlearn into; forget a part of them, or delete the model")
        if request.withdrawn and not unlearner_class(method).adapts_to_withdrawals:
            raise ErasureError(f"{method} does not adapt a model to withdrawn item features (it forgets "
                               "interactions): apply this modality constraint with --method reverse-bpr")
        root = root_of(checkpoint)
        root_model, _, root_data, _ = (model, run, data, None) if root == checkpoint else load_checkpoint(root)
        # (a copy of the model: a method may change the model it is given, and the root's weights are hashed below)
        unlearner = continue_unlearner(method, checkpoint, root, data, settings or [], run, progress, notes,
                                       loaded_root=(root_model, root_data), loaded=model.clone(), device=device)
        removed_before = catalogue_removed(checkpoint)
        current = unlearner.state
        scorer = without_removed(current.scorer, removed_before)
        measured = test_sample(current.dataset, test_users, seed=int(request_sha256[:8], 16))
        before = {"request_score_mean": request_score_mean(scorer, request),
                  **test_metrics(scorer, current.dataset, ks=[20], users=measured),
                  "train_edges": len(current.dataset.train)}
        result = unlearner.unlearn(request)   # the whole request: a method may use its kind (a take-down)
        residual = request.apply(result.dataset)
        removed = np.union1d(removed_before, result.removed_items).astype(np.int64)
        # relative to the root: a subject erased by an earlier request stays re-drawn in every descendant
        reset = forget_isolated_nodes(result.model, root_data, residual, seed=int(request_sha256[:8], 16))
        # the model measured here reads exactly what it reads when the checkpoint is loaded
        attach_content(result.model, model_content(residual, removed))
        scorer = without_removed(result.model, removed)
        after = {"request_score_mean": request_score_mean(scorer, request),
                 **test_metrics(scorer, residual, ks=[20], users=measured), "train_edges": len(residual.train),
                 **forgetting_evidence(scorer, request.edges, residual, seed=int(request_sha256[:8], 16))}
        lineage = record_erasure(root, root_data, residual, parent=checkpoint, method=method, root_model=root_model,
                                 removed=removed)
        fault_point("unlearn:after-erasure-record")
        if unlearner.has_preparation():
            unlearner.state.dataset = residual      # the next request continues from exactly this data
            state = method_state_dir(root, method, residual.hash)
            recover(state)     # a dead writer's leftovers of this very state
            with atomic_folder(state, fault_prefix="state") as tmp:
                unlearner.save(tmp)
        fault_point("unlearn:after-state")
        withdrawn = {name: int(len(np.setdiff1d(items, data.withdrawn.get(name, []))))
                     for name, items in residual.withdrawn.items()}
        outcome = ErasureOutcome(out, method, len(request.edges), request.held_out_counts(data), result.seconds,
                                 reset, before, after, {name: n for name, n in withdrawn.items() if n},
                                 int(len(removed) - len(removed_before)))
        summary = {"method": method, "edges": outcome.edges, "held_out": outcome.held_out,
                   "seconds": result.seconds, "request_sha256": request_sha256, "request_kind": request.kind,
                   "reinitialised": reset, "withdrawn": outcome.withdrawn, "removed": outcome.removed}
        save_checkpoint(out, result.model, run, residual, metrics={"test": test_part(after)},
                        extra={"unlearned": summary}, lineage=lineage)
    return outcome


def request_score_mean(scorer, request: Request) -> float | None:
    """The mean score of the request's edges (None for a request without edges: a modality constraint)."""
    if len(request.edges) == 0:
        return None
    pairs = (torch.from_numpy(request.edges.users), torch.from_numpy(request.edges.items))
    return scorer.score_pairs(*pairs).mean().item()


def test_sample(data: Dataset, size: int | None, seed: int) -> np.ndarray | None:
    """`size` users with a test interaction, drawn with `seed` (None: every user; so is a size above their
    number)."""
    users = np.unique(data.test.users)
    if size is None or size >= len(users):
        return None
    return np.sort(np.random.default_rng(seed).choice(users, size, replace=False))


def test_part(measured: dict) -> dict:
    """The test metrics among what `apply_request` measured before or after."""
    return {k: v for k, v in measured.items()
            if k not in ("request_score_mean", "train_edges") and not k.startswith("evidence_")}
