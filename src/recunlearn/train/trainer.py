"""The training loop: vectorised BPR epochs, Adam, validation every few epochs, early stopping with
patience and the best state restored, progress bars, checkpoints and resuming."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.graph import build_graph
from ..data.interactions import Dataset
from ..data import sampling
from ..data.split import require_splits
from ..eval.ranking import evaluate
from ..models.base import Recommender
from ..models.registry import attach_content, build_model
from .checkpoint import load_tensors, load_weights, save_checkpoint
from .config import RunConfig
from .distributed import Ranks

TRAINER_STATE = "trainer_state"


@dataclass
class TrainResult:
    best_epoch: int
    best_metric: float
    epochs_run: int
    seconds: float                  # wall time of the whole fit, validation passes included
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0      # the epochs alone: no validation pass inside
    seconds_to_best: float = 0.0    # the epochs up to and including the best one


def seed_everything(seed: int, deterministic: bool = False) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    # The call imports torch's compiler stack (seconds); skip it when it would change nothing.
    if deterministic or torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=True)


def training_device(device: str) -> torch.device:
    """`train.device` as a torch device, refused with the reason when this machine cannot train there."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={device}, but torch {torch.__version__} sees no CUDA GPU here (a CPU "
                             "build, or no driver): train with train.device=cpu (for a model trained on a GPU: "
                             "`--device cpu` to prepare, unlearn or audit it here, `policy.device: cpu` for the "
                             "erasure service), or install a CUDA build of torch on a machine with an NVIDIA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"train.device={device}, but this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered from 0")
    return device


def optimizer_for(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """The training optimiser: Adam, fused (one kernel per parameter tensor instead of one per operation of
    the update; the same update to float rounding)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


class Trainer:
    """Trains a Recommender on `dataset.train`, validating on `dataset.valid` (mask: the training set)."""

    def __init__(self, run: RunConfig, progress: bool = True, checkpoint_dir: str | Path | None = None,
                 validate: bool = True, ranks: Ranks | None = None):
        """`validate=False` runs exactly `train.epochs` epochs with no validation pass (fixed-length
        fine-tuning); the last epoch's weights are the result. `ranks`: this process is one rank of a
        data-parallel fit (distributed.py); without it, `train.nproc > 1` starts that many local ranks."""
        self.run = run
        self.cfg = run.train
        self.progress = progress
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.validates = validate
        self.ranks = ranks
        if ranks is not None and ranks.world_size != run.train.nproc:
            raise ValueError(f"train.nproc={run.train.nproc}, but this process is one of {ranks.world_size} ranks: "
                             f"set train.nproc={ranks.world_size}, which the checkpoint records")

    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints: one process, or rank 0 of several."""
        return self.checkpoint_dir is not None and (self.ranks is None or self.ranks.is_main)

    def fit(self, dataset: Dataset, model: Recommender | None = None, resume: bool = False) -> tuple[Recommender, TrainResult]:
        cfg = self.cfg
        require_splits(dataset, ("train", "valid") if self.validates else ("train",), data_source(self.run, dataset))
        if cfg.nproc > 1 and self.ranks is None:
            from .launch import fit_on_ranks
            return fit_on_ranks(self, dataset, model, resume)
        device = training_device(cfg.device)   # a machine without that device fails before any work
        seed_everything(cfg.seed, cfg.deterministic)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # a given model (fine-tuning) takes the data's item features and withdrawals too
        model = attach_content(model, dataset) if model is not None else \
            build_model(self.run.model, dataset.n_users, dataset.n_items, content=dataset)
        model.attach(build_graph(dataset.train))
        if device.type != "cpu":
            model.move_to(device)    # built on the CPU first: the same seeded initial weights on every device
        if self.ranks is not None:
            self.ranks.require_same(f"{dataset.hash}/{self.run.model_dump_json()}", "data or run configs")
            self.ranks.sync_parameters(model)
        optimizer = optimizer_for(model, cfg.lr)
        # Decays lr when validation stalls (None: constant lr).
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.lr_decay, patience=cfg.lr_decay_patience, threshold=0.0,
            min_lr=cfg.min_lr) if cfg.lr_decay < 1 else None
        rng = np.random.default_rng(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        state = {"epoch": 0, "best_metric": -1.0, "best_epoch": 0, "bad": 0, "history": [],
                 "train_seconds": 0.0, "seconds_to_best": 0.0}
        best_weights = copy.deepcopy(model.state_dict())
        if resume:
            state, best_weights, rng, gen = self._restore(model, optimizer, scheduler, state, best_weights, rng, gen)

        start = time.perf_counter() - state.get("seconds", 0.0)
        epochs = tqdm(range(state["epoch"], cfg.epochs), desc="epochs", disable=not self.progress,
                      initial=state["epoch"], total=cfg.epochs)
        for epoch in epochs:
            epoch_start = time.perf_counter()
            loss = self.train_epoch(model, optimizer, dataset, rng, gen, epoch)
            if not math.isfinite(loss):
                raise ValueError(f"training diverged in epoch {epoch + 1}: the loss is {loss}; lower train.lr "
                                 f"(now {optimizer.param_groups[0]['lr']:g})")
            state["train_seconds"] += time.perf_counter() - epoch_start
            record = {"epoch": epoch + 1, "loss": loss, "lr": optimizer.param_groups[0]["lr"],
                      "seconds": round(time.perf_counter() - start, 2)}
            if not self.validates:
                state.update(best_epoch=epoch + 1, seconds_to_best=state["train_seconds"])
                best_weights = model.state_dict()
            elif (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                metrics = self.validate(model, dataset) if self.ranks is None else \
                    self.ranks.from_main(lambda: self.validate(model, dataset))   # rank 0 decides for all
                record.update(metrics)
                value = metrics[cfg.metric]
                if value > state["best_metric"]:
                    state.update(best_metric=value, best_epoch=epoch + 1, bad=0,
                                 seconds_to_best=state["train_seconds"])
                    best_weights = copy.deepcopy(model.state_dict())
                else:
                    state["bad"] += 1
                if scheduler is not None:
                    scheduler.step(value)
                epochs.set_postfix(loss=f"{loss:.4f}", **{cfg.metric: f"{value:.4f}"},
                                   best=f"{state['best_metric']:.4f}@{state['best_epoch']}")
            state["history"].append(record)
            state["epoch"] = epoch + 1
            state["seconds"] = time.perf_counter() - start
            if self.writes:
                self._save_progress(model, optimizer, scheduler, dataset, state, best_weights, rng, gen)
            if state["bad"] >= cfg.patience:
                break
        model.load_state_dict(best_weights)
        if device.type != "cpu":
            model.move_to("cpu")
        model.invalidate()
        model.eval()
        result = TrainResult(state["best_epoch"], state["best_metric"], state["epoch"],
                             time.perf_counter() - start, state["history"], state["train_seconds"],
                             state["seconds_to_best"])
        return model, result

    def train_epoch(self, model, optimizer, dataset, rng, gen, epoch) -> float:
        """One shuffled BPR pass over the training edges; returns the mean batch loss."""
        model.train()
        model.start_epoch(gen)
        n_batches = -(-len(dataset.train) // self.cfg.batch_size)
        total, count = 0.0, 0
        bar = tqdm(sampling.bpr_epoch(dataset.train, rng, self.cfg.batch_size), total=n_batches, leave=False,
                   desc=f"epoch {epoch + 1}", disable=not self.progress)
        step = self._step if self.ranks is None else self.ranks.step
        for users, pos, neg in bar:
            total += step(model, optimizer, users, pos, neg)
            count += 1
            if count % 20 == 0:
                bar.set_postfix(loss=f"{total / count:.4f}")
        model.eval()
        model.invalidate()
        return total / max(count, 1)

    @staticmethod
    def _step(model, optimizer, users, pos, neg) -> float:
        """One optimiser step on a batch; returns its mean loss."""
        batch = tuple(torch.from_numpy(a).to(model.embedding.weight.device) for a in (users, pos, neg))
        loss, _ = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def validate(self, model: Recommender, dataset: Dataset) -> dict:
        model.eval()
        model.invalidate()
        return {k: v for k, v in evaluate(model, dataset.valid, dataset.train, ks=self.run.eval.ks,
                                          batch_size=self.run.eval.batch_size).items() if k != "users"}

    # --- checkpoints -----------------------------------------------------------------------------
    def _save_progress(self, model, optimizer, scheduler, dataset, state, best_weights, rng, gen) -> None:
        """Checkpoint the best weights so far (the deliverable) plus everything needed to resume."""
        current = copy.deepcopy(model.state_dict())
        model.load_state_dict(best_weights)
        trainer_state = {"optimizer": optimizer.state_dict(), "current": current,
                         "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                         "scalars": torch.tensor([state["epoch"], state["best_epoch"], state["bad"]]),
                         "floats": torch.tensor([state["best_metric"], state["seconds"], state["train_seconds"],
                                                 state["seconds_to_best"]], dtype=torch.float64)}
        if scheduler is not None:
            trainer_state["scheduler"] = scheduler.state_dict()
        if model.embedding.weight.is_cuda:   # SimGCL's noise on the GPU
            trainer_state["cuda_rng"] = torch.cuda.get_rng_state(model.embedding.weight.device)
        save_checkpoint(self.checkpoint_dir, model, self.run, dataset,
                        metrics={"valid": _best_record(state)},
                        extra={"history": state["history"], "rng_state": rng.bit_generator.state},
                        tensors={TRAINER_STATE: trainer_state})
        model.load_state_dict(current)

    def _restore(self, model, optimizer, scheduler, state, best_weights, rng, gen):
        from .checkpoint import CheckpointError, error_reason, read_meta
        file = self.checkpoint_dir / f"{TRAINER_STATE}.pt"
        remedy = f"start the run over: train without --resume (with --overwrite), or delete {file}"
        saved = load_tensors(self.checkpoint_dir, TRAINER_STATE, remedy=remedy)
        if saved is None:
            raise FileNotFoundError(f"nothing to resume in {self.checkpoint_dir}: no {TRAINER_STATE}.pt")
        meta = read_meta(self.checkpoint_dir)
        best_weights = load_weights(self.checkpoint_dir)
        try:
            return self._restore_from(saved, meta, model, optimizer, scheduler, best_weights, rng, gen)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
            # a state of another shape: damaged, from another version of recunlearn, or of another model or config
            raise CheckpointError(f"{file}: not a resume state this run can continue ({type(err).__name__}: "
                                  f"{error_reason(err)}); {remedy}") from None

    @staticmethod
    def _restore_from(saved, meta, model, optimizer, scheduler, best_weights, rng, gen):
        model.load_state_dict(saved["current"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and "scheduler" in saved:
            scheduler.load_state_dict(saved["scheduler"])
        gen.set_state(saved["gen"])
        if "torch_rng" in saved:   # the global generator: SimGCL's noise, dropout
            torch.set_rng_state(saved["torch_rng"])
        if "cuda_rng" in saved and model.embedding.weight.is_cuda:
            torch.cuda.set_rng_state(saved["cuda_rng"], model.embedding.weight.device)
        rng.bit_generator.state = meta["rng_state"]
        epoch, best_epoch, bad = (int(x) for x in saved["scalars"])
        best_metric, seconds, train_seconds, seconds_to_best = (float(x) for x in saved["floats"])
        state = {"epoch": epoch, "best_metric": best_metric, "best_epoch": best_epoch, "bad": bad,
                 "history": meta.get("history", []), "seconds": seconds, "train_seconds": train_seconds,
                 "seconds_to_best": seconds_to_best}
        return state, best_weights, rng, gen


def data_source(run: RunConfig, dataset: Dataset) -> str:
    """How messages name the data: your own file or folder when the run has one, else the dataset's name."""
    return run.data.path if run.data.path and run.data.name == dataset.name else dataset.name


def _best_record(state: dict) -> dict:
    for record in state["history"]:
        if record["epoch"] == state["best_epoch"]:
            return record
    return {}
