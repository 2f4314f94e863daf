"""Scheduled maintenance of the published model (service.md, "Unlearning policy").

- **Fine-tune**: a few epochs of the backbone's own training on the newest version's data, starting from its
  weights, after `finetune_every` applied erasures or `finetune_interval_h` hours. Zero-shot updates add up;
  fine-tuning brings the model back towards what training on the residual data gives. The method's working
  state moves to the fine-tuned weights, so the next micro-batch continues from them.
- **Retrain**: the root's run trained afresh on the data filtered through the ledger's suppression list (the
  rows are recorded in the run config, so the checkpoint reloads the same data), every `retrain_interval_h`
  hours; the policy's unlearner is prepared again on it before the version is published, and the version
  lists every completed erasure.

Each writes an unpublished version folder; `Worker` publishes it like a micro-batch's. `POST /v1/admin/...`
asks for one now through a marker file in the state folder, which the folder's one worker reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .ledger import Erasure, ModelVersion
from .settings import Policy

MAINTENANCE = ("finetune", "retrain")
REQUESTS_DIR = "maintenance-requests"


def request(state_dir: Path, kind: str) -> None:
    """Ask the state folder's worker (in this process or another) to run `kind` at its next turn."""
    if kind not in MAINTENANCE:
        raise ValueError(f"unknown maintenance {kind!r}; choose one of {', '.join(MAINTENANCE)}")
    folder = Path(state_dir) / REQUESTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / kind).touch()


def requested(state_dir: Path) -> list[str]:
    """The maintenance asked for and not run yet, a retrain first (it makes a fine-tune pointless)."""
    folder = Path(state_dir) / REQUESTS_DIR
    return [kind for kind in reversed(MAINTENANCE) if (folder / kind).is_file()]


def done(state_dir: Path, kinds: list[str]) -> None:
    for kind in kinds:
        (Path(state_dir) / REQUESTS_DIR / kind).unlink(missing_ok=True)


@dataclass(frozen=True)
class Schedule:
    """Where the published model stands against the policy: the last full training (initial or retrain), the
    last refresh (those or a fine-tune), the erasures applied since that refresh, and when each maintenance
    falls due by time."""

    newest: int
    trained: int
    refreshed: int
    refreshed_kind: str
    applied_since_refresh: int
    retrain_at: datetime
    finetune_at: datetime

    def due(self, policy: Policy, now: datetime) -> Optional[str]:
        """The maintenance the policy asks for at `now`: "retrain", "finetune" or None."""
        if now >= self.retrain_at:
            return "retrain"
        if self.newest == self.refreshed:
            return None                     # nothing applied since the last refresh
        if self.applied_since_refresh >= policy.finetune_every or now >= self.finetune_at:
            return "finetune"
        return None


def schedule(session: Session, policy: Policy) -> Optional[Schedule]:
    """The published model's `Schedule`; None before any version is published."""
    versions = session.scalars(select(ModelVersion).order_by(ModelVersion.version.desc())).all()
    if not versions:
        return None
    trained = next(v for v in versions if v.kind in ("initial", "retrain"))
    refreshed = next(v for v in versions if v.kind in ("initial", "retrain", "finetune"))
    applied = session.scalar(select(func.count()).select_from(Erasure)
                             .where(Erasure.model_version > refreshed.version))
    return Schedule(newest=versions[0].version, trained=trained.version, refreshed=refreshed.version,
                    refreshed_kind=refreshed.kind, applied_since_refresh=int(applied),
                    retrain_at=trained.published_at + timedelta(hours=policy.retrain_interval_h),
                    finetune_at=refreshed.published_at + timedelta(hours=policy.finetune_interval_h))


def due(session: Session, policy: Policy, now: datetime) -> Optional[str]:
    """The maintenance the policy asks for now: "retrain", "finetune" or None."""
    state = schedule(session, policy)
    return None if state is None else state.due(policy, now)


def finetune_version(head: Path, out: Path, policy: Policy) -> None:
    """Write to `out` the newest version `head` fine-tuned on its own data (`policy.finetune_epochs` epochs of
    the backbone's training, no validation pass)."""
    from ..erasure import ErasureError
    from ..train.checkpoint import load_checkpoint, save_checkpoint
    from ..train.runs import test_metrics
    from ..train.trainer import Trainer

    model, run, data, meta = load_checkpoint(head)
    if "lineage" not in meta:
        raise ErasureError(f"{head} is a trained model with no erasure applied since: nothing to fine-tune")
    train = run.on_device(policy.device).train
    tuned_run = run.model_copy(update={"train": train.model_copy(update={
        "epochs": policy.finetune_epochs, "lr": policy.finetune_lr or run.train.lr})})
    model, _ = Trainer(tuned_run, progress=False, validate=False).fit(data, model=model)
    model.eval()
    # The same data as `head`: its lineage (root, erasure record, hashes) holds, with `head` as the parent.
    lineage = {**meta["lineage"], "parent": str(Path(head).resolve()), "method": "finetune"}
    save_checkpoint(out, model, run, data, metrics={"test": test_metrics(model, data, run.eval.ks)}, lineage=lineage)


def adopt_weights(version: Path, method: str, method_settings: list[str], device: str | None = None) -> bool:
    """Move `method`'s working state (in the root's store) to the weights of the published `version` (a
    fine-tune of the model it continued), so that the next micro-batch starts from them. False when the
    method keeps no such state."""
    from ..erasure import continue_unlearner, method_state_dir
    from ..train.checkpoint import load_checkpoint, root_of

    model, run, data, _ = load_checkpoint(version)
    root = root_of(version)
    state = method_state_dir(root, method, data.hash)
    if not (state / "unlearner.json").is_file():
        return False
    unlearner = continue_unlearner(method, version, root, data, method_settings, run, device=device)
    current = unlearner.state.model
    if current is None or current is unlearner.original:
        return False
    current.load_state_dict(model.state_dict())
    current.invalidate()
    unlearner.save(state)
    return True


def retrain_version(head: Path, out: Path, ledger_url: str, method: str, method_settings: list[str],
                    device: str | None = None) -> int:
    """Write to `out` the root's run trained on the suppression-filtered data (on `device`, default the run's),
    with `method` prepared on it (its preparation reset); returns the last suppression row applied."""
    from ..erasure import method_state_dir
    from ..train.checkpoint import load_checkpoint, load_checkpoint_data, root_of
    from ..train.inputs import load_data, with_ledger
    from ..train.runs import train_and_save
    from ..unlearn.registry import build_unlearner, unlearner_class

    run, listed = with_ledger(load_checkpoint_data(root_of(head))[0].on_device(device), ledger_url)
    train_and_save(run, load_data(run.data), out, progress=False)
    if unlearner_class(method).has_preparation():
        model, _, data, _ = load_checkpoint(out)
        unlearner = build_unlearner(method, method_settings, run=run, progress=False).prepare(model, data)
        unlearner.save(method_state_dir(out, method, data.hash))
    return listed.through_row
