"""One training run end to end: train, evaluate on test, save the checkpoint with its metrics."""
from __future__ import annotations

import math
from pathlib import Path

from ..data.interactions import DataError, Dataset
from ..data.split import require_splits
from ..eval.ranking import evaluate
from ..models.base import Recommender
from ..models.modal import ContentRecommender
from ..models.registry import model_class
from .checkpoint import save_checkpoint
from .config import RunConfig
from .distributed import Ranks
from .trainer import Trainer, data_source


def test_metrics(model: Recommender, dataset: Dataset, ks=(10, 20), users=None) -> dict:
    """Test metrics (over `users` only, when given); the mask is everything the model may have seen: the
    (residual) train and valid sets."""
    return evaluate(model, dataset.test, dataset.train.union(dataset.valid), ks=list(ks), users=users)


def require_content(run: RunConfig, dataset: Dataset, source: str) -> None:
    """A multi-modal backbone asked for every modality of data that has none would train as its plain
    counterpart without a word; an empty `model.modalities` says that this is meant."""
    if (issubclass(model_class(run.model.name), ContentRecommender) and run.model.modalities is None
            and not dataset.modalities):
        raise DataError(f"{source}: {run.model.name} reads item features, but this data has none: load some "
                        "(data.modalities=[text] computes them from titles and genres where the data has them; "
                        "data.feature_files.NAME=FILE reads yours), or set model.modalities=[] to train it "
                        "without content")


def train_and_save(run: RunConfig, dataset: Dataset, out: str | Path, progress: bool = True,
                   resume: bool = False, ranks: Ranks | None = None) -> dict:
    """Train, then write the checkpoint with its validation and test metrics. Data with an empty split fails
    before any training; metrics that come out NaN fail before the run is marked complete.

    `ranks`: this process is one of the ranks torchrun started; the others return after training (an empty
    dict) and rank 0 evaluates and writes. Without it, `run.train.nproc > 1` trains on that many local ranks."""
    source = data_source(run, dataset)
    require_splits(dataset, source=source)
    require_content(run, dataset, source)
    trainer = Trainer(run, progress=progress, checkpoint_dir=out, ranks=ranks)
    model, result = trainer.fit(dataset, resume=resume)
    if ranks is not None and not ranks.is_main:
        return {}
    metrics = {"valid": trainer.validate(model, dataset), "test": test_metrics(model, dataset, run.eval.ks),
               "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "seconds": result.seconds,
               "train_seconds": result.train_seconds, "seconds_to_best": result.seconds_to_best}
    for split in ("valid", "test"):
        undefined = [name for name, value in metrics[split].items() if isinstance(value, float) and math.isnan(value)]
        if undefined:
            raise DataError(f"{source}: {split} metrics {', '.join(undefined)} are NaN after training (no {split} "
                            f"user could be ranked); {out} holds the best weights but is not marked complete")
    # `complete` marks a finished run: per-epoch progress checkpoints in the same folder lack it.
    save_checkpoint(out, model, run, dataset, metrics=metrics, extra={"history": result.history, "complete": True})
    return metrics
