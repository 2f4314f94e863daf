"""The worker: claims pending erasures in micro-batches, unlearns each batch as one request from the newest
published model version, publishes the result as the next version, and issues one signed receipt per erasure.

Every step can be interrupted (`kill -9`; the tests do it at each fault point). The ledger row of a version is
its publication, so recovery gives claims back, deletes version folders the ledger does not list and issues
receipts still missing; the erasures are then applied again from the last published version.

Several workers may share one ledger and one state folder (`recunlearn service worker` more than once, on one
machine or with RECUNLEARN_LOCKS on a filesystem that shares flock locks). The lineage is one line, so they take
turns: a worker claims, applies and publishes a batch (or runs maintenance) while holding the state folder's
turn, then signs receipts outside it while the next worker applies. Whoever takes the turn first recovers what
a holder that died left behind: inside the turn, every in-progress claim and every unlisted version folder is a
dead worker's. Several workers buy failover and overlap receipts with application, not parallel unlearning.
Run it with `python -m recunlearn.service.worker --config service.yaml [--once]`."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

import typer
from pydantic import Field
from sqlalchemy import func, select

from ..data.interactions import DataError, Dataset, Interactions
from ..data.requests import Request
from ..erasure import apply_request, prune_method_states, test_part
from ..storage import StorageError, exclusive, fault_point
from .ledger import Erasure, Ledger, ModelVersion, open_ledger, utcnow
from . import maintenance
from .maintenance import MAINTENANCE
from .publisher import (EVIDENCE_FILE, edges_sha256, folder_sha256, read_evidence, receipt_path,
                        remove_unpublished, version_dir, write_json)
from .settings import ServiceSettings
from .versions import ErasedEdges, LineageConflict, complete_on_version, current_version, publish_version
from .work_queue import ClaimLost, claim_pending, mark_failed, requeue_in_progress

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
MAINTENANCE_RETRY_S = 3600.0
TURN_POLL_S = 0.05     # how often a worker waiting for the turn tries again


class WorkerSettings(ServiceSettings):
    """The service's settings (one file serves the API and the worker), with the starting model required."""

    checkpoint: Path = Field(..., description="the trained (and, for methods that need it, prepared) checkpoint "
                             "that is the first published version")


class UnresolvedSubject(ValueError):
    """An erasure names ids the model's data does not know, and it was not accepted as suppression only."""


class NothingToErase(Exception):
    """The batch names nothing the newest version still holds: that version already excludes it."""


# --- one batch as one request ----------------------------------------------------------------------------

def _index(ids, label) -> Optional[int]:
    try:
        return int(ids.index([label])[0])
    except DataError:
        return None


def subject_edges(data: Dataset, row: Erasure) -> dict[str, Interactions]:
    """The interactions of the erasure's subject in each split of `data`. Unknown ids hold nothing; they are an
    error unless the erasure was accepted with `suppress_only`."""
    user = row.subject_kind == "user"
    if row.subject_kind in ("user", "item"):
        index = _index(data.user_ids if user else data.item_ids, row.subject_ids[0])
        unknown = [] if index is not None else list(row.subject_ids)
        pick = (lambda split: split.select((split.users if user else split.items) == index))
    else:
        found = [(_index(data.user_ids, u), _index(data.item_ids, i)) for u, i in row.subject_ids]
        unknown = [p for p, (u, i) in zip(row.subject_ids, found) if u is None or i is None]
        known = [(u, i) for u, i in found if u is not None and i is not None]
        pairs = Interactions.from_arrays([u for u, _ in known], [i for _, i in known], data.n_users, data.n_items,
                                         on_duplicate="drop")
        pick = (lambda split: pairs.select(split.contains(pairs.users, pairs.items)))   # those the split holds
    if unknown and not row.suppress_only:
        raise UnresolvedSubject(f"erasure {row.id}: {row.subject_kind} ids {unknown[:5]} are not in the model's data")
    if unknown and row.subject_kind != "pairs":
        return {split: Interactions.empty(data.n_users, data.n_items) for split in SPLITS}
    return {split: pick(getattr(data, split)) for split in SPLITS}


def batch_request(data: Dataset, rows: list[Erasure], applied: dict, failed: dict) -> Request:
    """One request erasing every subject in `rows` from `data` (their union); fills `applied` (id ->
    ErasedEdges of its training edges) and `failed` (id -> error). Raises NothingToErase when nothing is left."""
    train = held = Interactions.empty(data.n_users, data.n_items)
    for row in rows:
        try:
            edges = subject_edges(data, row)
        except UnresolvedSubject as err:
            failed[row.id] = str(err)
            continue
        labels = zip(data.user_ids.label(edges["train"].users), data.item_ids.label(edges["train"].items))
        applied[row.id] = ErasedEdges(len(edges["train"]), edges_sha256((str(u), str(i)) for u, i in labels))
        train, held = train.union(edges["train"]), held.union(edges["valid"]).union(edges["test"])
    if not len(train) and not len(held):
        raise NothingToErase()
    return Request.create(data, "edges", {"source": "erasure service", "erasures": len(applied)}, None, train, held)


# --- the worker ------------------------------------------------------------------------------------------

class Worker:
    def __init__(self, settings: WorkerSettings, ledger: Ledger, name: Optional[str] = None):
        self.settings, self.ledger = settings, ledger
        self.state_dir = Path(settings.state_dir)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._maintenance_paused_until = 0.0

    @contextlib.contextmanager
    def started(self) -> Iterator["Worker"]:
        """Recover (in the turn) and issue missing receipts before any work."""
        with self.turn():
            pass
        self.issue_missing_receipts()
        yield self

    @contextlib.contextmanager
    def turn(self, stop: Optional[threading.Event] = None) -> Iterator[bool]:
        """Hold the state folder's turn (waiting for it while another worker holds it) and recover what a dead
        holder left; yields False, holding nothing, when `stop` is set while waiting."""
        versions = self.state_dir / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        while True:
            held = contextlib.ExitStack()
            try:
                held.enter_context(exclusive(versions, f"worker {self.name}"))
                break
            except StorageError:   # another worker holds the turn
                if stop is not None and stop.is_set():
                    yield False
                    return
                time.sleep(TURN_POLL_S)
        with held:
            self.recover()
            yield True

    def recover(self) -> None:
        """Give back the claims of dead workers, register the initial model and delete unpublished version
        folders. Call holding the turn: then every in-progress claim and unlisted folder is a dead worker's."""
        with self.ledger.writing() as session:
            requeued = requeue_in_progress(session)
            if current_version(session) is None:
                self._register_initial(session)
            published = list(session.scalars(select(ModelVersion.path)))
        for message in remove_unpublished(self.state_dir, published):
            log.warning(message)
        if requeued:
            log.warning("requeued %d erasures claimed by a worker that died", requeued)

    def _register_initial(self, session) -> None:
        checkpoint = Path(self.settings.checkpoint).resolve()
        if not (checkpoint / "config.json").is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} is not a recunlearn checkpoint (no config.json)")
        publish_version(session, parent=None, kind="initial", path=str(checkpoint), sha256=folder_sha256(checkpoint))

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                claimed = self.run_once(stop=stop)
            except Exception:   # e.g. the database is briefly unreachable: retry after a window
                log.exception("worker loop")
                claimed = 0
            if time.monotonic() >= self._maintenance_paused_until:
                try:
                    self.maintain(stop=stop)
                except Exception:   # retried an hour later (or at once when an admin asks)
                    log.exception("scheduled maintenance failed")
                    self._maintenance_paused_until = time.monotonic() + MAINTENANCE_RETRY_S
            if not claimed:
                stop.wait(self.settings.policy.batch_window_s)

    # --- scheduled maintenance ---------------------------------------------------------------------

    def request_maintenance(self, kind: str) -> None:
        """Run `kind` ("finetune" or "retrain") at the next turn of the loop, whatever the schedule says."""
        maintenance.request(self.state_dir, kind)
        self._maintenance_paused_until = 0.0

    def maintain(self, kind: Optional[str] = None, stop: Optional[threading.Event] = None) -> Optional[int]:
        """Run `kind`, else a requested maintenance, else what the policy says is due, and publish its version
        (the number is returned; None when nothing was due). Erasures wait meanwhile: their subjects are
        suppressed from acknowledgement on, and a retrain's data already excludes them."""
        if kind is None and not self._maintenance_wanted():   # checked before waiting for the turn
            return None
        with self.turn(stop) as held:
            return self._maintain(kind) if held else None

    def _maintenance_wanted(self) -> bool:
        if maintenance.requested(self.state_dir):
            return True
        with self.ledger.reading() as session:
            return maintenance.due(session, self.settings.policy, utcnow()) is not None

    def _maintain(self, kind: Optional[str]) -> Optional[int]:
        asked = maintenance.requested(self.state_dir)
        with self.ledger.reading() as session:
            head = current_version(session)
            kind = kind or (asked[0] if asked else maintenance.due(session, self.settings.policy, utcnow()))
        if kind is None:
            return None
        if kind == "finetune" and head.kind in ("initial", "retrain"):
            maintenance.done(self.state_dir, ["finetune"])     # no erasure applied since: nothing to fine-tune
            return None
        out = version_dir(self.state_dir, head.version + 1)
        policy, method = self.settings.policy, self.settings.policy.method
        log.info("%s of version %d into %s", kind, head.version, out)
        if kind == "finetune":
            maintenance.finetune_version(Path(head.path), out, policy)
        else:
            maintenance.retrain_version(Path(head.path), out, self.settings.ledger_url(), method,
                                        self.settings.method_settings, device=policy.device)
        fault_point(f"worker:before-publish-{kind}")
        digest = folder_sha256(out)      # before the write transaction: hashing holds no lock
        try:
            with self.ledger.writing() as session:
                version = publish_version(session, parent=head.version, kind=kind, method=kind, path=str(out.resolve()),
                                          sha256=digest, include_all_completed=kind == "retrain").version
        except LineageConflict as err:
            shutil.rmtree(out, ignore_errors=True)
            log.warning("%s; the %s is dropped", err, kind)
            return None
        maintenance.done(self.state_dir, asked if kind == "retrain" else [kind])
        if kind == "finetune":
            maintenance.adopt_weights(out, method, self.settings.method_settings, device=policy.device)
            self._prune_states(out)
        return version

    def run_once(self, stop: Optional[threading.Event] = None) -> int:
        """Apply one micro-batch, if any erasure is pending; returns how many erasures were claimed."""
        policy = self.settings.policy
        with self.ledger.reading() as session:
            waiting = session.scalar(select(func.count()).select_from(Erasure).where(
                Erasure.status == "pending", Erasure.action == "erase"))
        if not waiting:
            return 0
        if waiting < policy.batch_size:   # let the batch fill for one window
            (stop.wait if stop else time.sleep)(policy.batch_window_s)
        with self.turn(stop) as held:
            if not held:
                return 0
            with self.ledger.writing() as session:
                rows = claim_pending(session, self.name, policy.batch_size)
            fault_point("worker:after-claim")
            if rows:
                try:
                    self._apply(rows)
                except Exception as err:   # one batch's failure never stops the loop
                    log.exception("micro-batch of %d erasures failed", len(rows))
                    with self.ledger.writing() as session:
                        mark_failed(session, self.name, [r.id for r in rows], f"{type(err).__name__}: {err}")
        if rows:   # outside the turn: the next worker applies its batch meanwhile
            self._sweep_receipts()
            fault_point("worker:after-receipts")
        return len(rows)

    def _apply(self, rows: list[Erasure]) -> None:
        with self.ledger.reading() as session:
            head = current_version(session)
        applied, failed = {}, {}
        out = version_dir(self.state_dir, head.version + 1)
        batch_sha = hashlib.sha256("\n".join(sorted(str(r.id) for r in rows)).encode()).hexdigest()
        try:
            outcome = apply_request(Path(head.path), lambda data: batch_request(data, rows, applied, failed),
                                    batch_sha, out, method=self.settings.policy.method,
                                    settings=self.settings.method_settings, notes=log.warning,
                                    test_users=self.settings.policy.evidence_test_users,
                                    device=self.settings.policy.device)
        except NothingToErase:
            with self.ledger.writing() as session:
                complete_on_version(session, version=head.version, worker=self.name, applied=applied)
                self._mark_each_failed(session, failed)
            return
        write_json(out / EVIDENCE_FILE, evidence(outcome, applied))
        fault_point("worker:before-publish")
        digest = folder_sha256(out)      # before the write transaction: hashing holds no lock
        try:
            with self.ledger.writing() as session:
                publish_version(session, parent=head.version, kind="unlearn", method=outcome.method, path=str(
                    out.resolve()), sha256=digest, worker=self.name, applied=applied)
                self._mark_each_failed(session, failed)
        except (LineageConflict, ClaimLost) as err:   # another worker moved on: never publish this folder
            shutil.rmtree(out, ignore_errors=True)
            log.warning("%s; the batch goes back to the queue", err)
            with self.ledger.writing() as session:
                requeue_in_progress(session, worker=self.name)
            return
        log.info("published version %d: %d erasures applied by %s", head.version + 1, len(applied), self.name)
        self._prune_states(out)
        fault_point("worker:after-publish")

    def _prune_states(self, head: Path) -> None:
        """Only the newest version is ever continued: the method states of older ones go (the root's own
        preparation stays). Left over by a crash, they go at the next publication."""
        try:
            prune_method_states(head, self.settings.policy.method)
        except Exception:   # housekeeping: the publication stands whatever happens here
            log.exception("pruning superseded method states")

    def _sweep_receipts(self) -> None:
        try:
            self.issue_missing_receipts()
        except Exception:   # the erasures are completed: a missing receipt is issued at the next sweep
            log.exception("issuing receipts")

    def _mark_each_failed(self, session, failed: dict) -> None:
        for erasure_id, error in failed.items():
            mark_failed(session, self.name, [erasure_id], error)

    # --- receipts --------------------------------------------------------------------------------------

    def issue_missing_receipts(self) -> int:
        """Sign and store a receipt for every completed erasure that has none yet (after a crash too)."""
        receipts = receipts_module()
        if receipts is None:
            return 0
        issued = 0
        with self.ledger.reading() as session:
            rows = session.scalars(select(Erasure).where(Erasure.status == "completed")
                                   .order_by(Erasure.completed_at)).all()
            for row in rows:
                path = receipt_path(self.state_dir, row.id)
                if not path.exists():
                    write_json(path, receipts.issue(self.state_dir, receipt_payload(session, row)))
                    issued += 1
        return issued


@functools.cache
def receipts_module():
    """`recunlearn.service.receipts`, imported when first needed (None while it does not exist)."""
    try:
        from . import receipts
    except ImportError:
        log.warning("recunlearn.service.receipts is not available: no receipts are issued")
        return None
    return receipts


def evidence(outcome, applied: dict) -> dict:
    """What the batch's application showed, for the receipts of its erasures (written beside the model)."""
    scores = test_part(outcome.after)
    return {"erasures": sorted(str(i) for i in applied), "method": outcome.method, "request_edges": outcome.edges,
            "request_edge_score_before": outcome.before.get("request_score_mean"),
            "request_edge_score_after": outcome.after.get("request_score_mean"),
            "nonedge_score": outcome.after.get("evidence_nonedge_score"),
            "forget_rank_after": outcome.after.get("evidence_forget_rank"),
            "mia_auc_after": outcome.after.get("evidence_mia_auc"),
            "evidence_edges": outcome.after.get("evidence_audit_edges"),
            "test_metrics_before": {k: v for k, v in outcome.before.items() if k in scores}, "test_metrics_after":
            scores, "held_out_removed": outcome.held_out, "seconds": outcome.seconds,
            "reinitialised": outcome.reinitialised, "reference": "none yet"}


def receipt_payload(session, row: Erasure) -> dict:
    """The receipt of one completed erasure (service.md, "The receipt"), built from the ledger and the
    evidence of the version that first excludes it, so that a receipt issued after a restart is the same."""
    payload = {"erasure_id": str(row.id), "subject_request_id": row.subject_request_id and str(row.subject_request_id),
               "subject": {"kind": row.subject_kind, "ids": row.subject_ids},
               "erased_edges": {"count": row.erased_edges_count or 0,
                                "sha256": row.erased_edges_sha256 or edges_sha256([])},
               "received_at": row.received_at.isoformat(), "completed_at": row.completed_at.isoformat(),
               "suppression": True}
    if row.model_version is None:   # suppression only: no served data held the subject, no model changed
        return {**payload, "method": None, "evidence": {"reference": "none yet", "note": "suppression only"}}
    after = session.get(ModelVersion, row.model_version)
    found = read_evidence(after.path)
    if str(row.id) in found.get("erasures", []):
        before = session.get(ModelVersion, after.version - 1)
        proof = {k: v for k, v in found.items() if k not in ("erasures", "method")}
    else:   # completed on a version that already excluded everything it names
        before, proof = after, {"reference": "none yet", "note": "already excluded by an earlier erasure"}
    return {**payload, "method": after.method, "evidence": proof,
            "model_before": {"version": before.version, "sha256": before.sha256},
            "model_after": {"version": after.version, "sha256": after.sha256}}


# --- command line ----------------------------------------------------------------------------------------

def settings_or_exit(config: Path) -> WorkerSettings:
    """The settings file read for a command: a bad one is a one-line error and exit code 2."""
    from ..config import ConfigError, load_config
    try:
        return load_config(WorkerSettings, config)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)


def worker_command(config: Path = typer.Option(..., help="service settings file (YAML) with `checkpoint`"),
                   once: bool = typer.Option(False, help="apply every pending erasure, then exit"),
                   maintenance: Optional[str] = typer.Option(None, help="run this maintenance now (finetune or "
                                                             "retrain), publish its version, then exit")) -> None:
    """Apply acknowledged erasures: unlearn them in micro-batches, publish model versions, issue receipts."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = settings_or_exit(config)
    if maintenance is not None and maintenance not in MAINTENANCE:
        typer.echo(f"error: unknown maintenance {maintenance!r}; choose one of {', '.join(MAINTENANCE)}", err=True)
        raise typer.Exit(2)
    ledger = open_ledger(settings.ledger_url())
    worker = Worker(settings, ledger)
    with worker.started():
        if maintenance is not None:
            from ..erasure import ErasureError
            try:
                version = worker.maintain(maintenance)
            except ErasureError as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2)
            typer.echo(f"{maintenance}: published version {version}" if version is not None else
                       f"{maintenance}: nothing to do (no erasure applied since the model was trained)")
            return
        if once:
            while worker.run_once():
                pass
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        worker.run_forever(stop)


if __name__ == "__main__":
    typer.run(worker_command)
