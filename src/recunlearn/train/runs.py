"""One training run end to end: train, evaluate on test, save the checkpoint with its metrics."""
from __future__ import annotations

from pathlib import Path

from ..data.interactions import Dataset
from ..eval.ranking import evaluate
from ..models.base import Recommender
from .checkpoint import save_checkpoint
from .config import RunConfig
from .trainer import Trainer


def test_metrics(model: Recommender, dataset: Dataset, ks=(10, 20)) -> dict:
    """Test metrics; the mask is everything the model may have seen: the (residual) train and valid sets."""
    return evaluate(model, dataset.test, dataset.train.union(dataset.valid), ks=list(ks))


def train_and_save(run: RunConfig, dataset: Dataset, out: str | Path, progress: bool = True,
                   resume: bool = False) -> dict:
    trainer = Trainer(run, progress=progress, checkpoint_dir=out)
    model, result = trainer.fit(dataset, resume=resume)
    metrics = {"valid": trainer.validate(model, dataset), "test": test_metrics(model, dataset, run.eval.ks),
               "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "seconds": result.seconds,
               "train_seconds": result.train_seconds, "seconds_to_best": result.seconds_to_best}
    # `complete` marks a finished run: per-epoch progress checkpoints in the same folder lack it.
    save_checkpoint(out, model, run, dataset, metrics=metrics, extra={"history": result.history, "complete": True})
    return metrics
