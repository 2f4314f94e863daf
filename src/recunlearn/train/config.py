"""Training and run configuration."""
from __future__ import annotations

import re
from typing import Annotated, Any, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from ..config import StrictConfig
from ..eval.ranking import METRICS
from ..models.freedom import FreedomConfig
from ..models.lightgcn import LightGCNConfig
from ..models.mf import MFConfig
from ..models.sgl import SGLConfig
from ..models.simgcl import SimGCLConfig
from ..models.vbpr import VBPRConfig

# Backbones whose training loss is a mean of per-triple terms (BPR, L2 on the triple's rows, content BPR): the
# loss of a slice of a batch, weighted by the slice's share, sums to the batch's, which data parallelism needs.
PER_TRIPLE_LOSS_MODELS = frozenset({"mf", "lightgcn", "freedom", "vbpr"})
# Backbones whose whole state moves to a GPU with `Recommender.move_to` (the multi-modal ones also hold item
# graphs and feature tables outside their parameters).
GPU_MODELS = frozenset({"mf", "lightgcn", "sgl", "simgcl"})

AnyModelConfig = Annotated[Union[MFConfig, LightGCNConfig, SGLConfig, SimGCLConfig, FreedomConfig, VBPRConfig],
                           Field(discriminator="name")]


class TrainConfig(StrictConfig):
    """Adam on BPR (+ backbone terms); early stopping on a validation metric with patience."""

    epochs: int = Field(300, ge=1, description="maximum number of epochs")
    batch_size: int = Field(2048, ge=1)
    lr: float = Field(1e-3, gt=0)
    eval_every: int = Field(1, ge=1, description="validate every N epochs")
    patience: int = Field(10, ge=1, description="validations without improvement before stopping")
    lr_decay: float = Field(1.0, gt=0, le=1, description="multiply lr by this when lr_decay_patience "
                            "+ 1 validations in a row bring no improvement (1 = constant lr)")
    lr_decay_patience: int = Field(2, ge=0, description="validations without improvement that lr tolerates "
                                   "before it decays at the next one")
    min_lr: float = Field(0.0, ge=0, description="lr never decays below this")
    metric: str = Field("Recall@20", description="validation metric that early stopping follows")
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch threads (default: torch's own choice; with "
                                "nproc > 1, torch's choice shared out between the processes)")
    deterministic: bool = False
    device: str = Field("cpu", description="where the epochs and validation passes run: cpu, or cuda / cuda:N (an NVIDIA "
                        "GPU); the fitted model comes back on the CPU, where unlearning and serving run")
    nproc: int = Field(1, ge=1, description="data-parallel processes (torch.distributed ranks: gloo on CPU, NCCL "
                       "on CUDA, one GPU per rank): "
                       "each takes a slice of every batch and gradients are averaged, so a step is the "
                       "one-process step up to float summation order; 1 = the plain loop")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise ValueError(f"train.device={value!r} is not a device this trainer runs on: write cpu, cuda (the "
                             "first GPU) or cuda:N (GPU number N)")
        return value

    @model_validator(mode="after")
    def _every_rank_has_a_slice(self) -> "TrainConfig":
        if self.nproc > self.batch_size:
            raise ValueError(f"train.nproc={self.nproc} processes need train.batch_size >= {self.nproc} (each "
                             f"takes a slice of every batch), not {self.batch_size}: lower the number of processes "
                             "or raise train.batch_size")
        return self


class DataConfig(StrictConfig):
    name: str = "ml-100k"
    path: str | None = Field(None, description="your own interaction file, or a folder with train/test[/valid] "
                                               "files, in any supported format; `name` then only labels it")
    seed: int = Field(0, description="seed of the split where the dataset ships none")
    valid_ratio: float = Field(0.1, gt=0, lt=1, description="validation share carved from a shipped train set")
    modalities: list[str] = Field([], description="computed item features to add: `text` (titles and genres "
                                                  "through a local sentence-embedding model; MovieLens)")
    feature_files: dict[str, str] = Field({}, description="your own item features: modality name -> .npy or "
                                                          "Parquet file (see data/content.py)")
    suppression: "SuppressionRef | None" = Field(None, description="the erasure service's suppression list "
                                                                  "this data is filtered through (set by "
                                                                  "`recunlearn train --ledger`)")


class SuppressionRef(StrictConfig):
    """Which suppression rows a ledger-backed run applied: loading its checkpoint applies exactly these again."""

    ledger: str = Field(description="SQLAlchemy URL of the service's ledger, password hidden "
                                    "(RECUNLEARN_LEDGER_URL overrides it)")
    through_row: int = Field(ge=0, description="the last suppression row applied (rows are never changed)")
    sha256: str = Field(description="of the applied list: a ledger that reads back otherwise is refused")


class EvalConfig(StrictConfig):
    ks: list[Annotated[int, Field(ge=1)]] = Field([10, 20], min_length=1, description="cut-offs K of the metrics")
    batch_size: int = Field(1024, ge=1, description="users ranked at once")


class RunConfig(StrictConfig):
    """Everything a training run needs; saved with the checkpoint and printed at the start."""

    data: DataConfig = DataConfig()
    model: AnyModelConfig = LightGCNConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_backbone(cls, data: Any) -> Any:
        """A model mapping without `name` (`--set model.dim=32`) configures the default backbone."""
        if isinstance(data, dict) and isinstance(data.get("model"), dict) and "name" not in data["model"]:
            data = {**data, "model": {"name": LightGCNConfig().name, **data["model"]}}
        return data

    @model_validator(mode="after")
    def _loss_splits_over_ranks(self) -> "RunConfig":
        """Data parallelism computes the loss per slice of a batch: only a mean over the batch's triples splits."""
        if self.train.nproc > 1 and self.model.name not in PER_TRIPLE_LOSS_MODELS:
            raise ValueError(f"train.nproc={self.train.nproc}: {self.model.name}'s loss is not a mean over the "
                             "batch's triples (a contrastive term compares the batch's users and items with one "
                             "another), so a slice's loss is not its share of the batch's; train "
                             f"{self.model.name} with one process (train.nproc=1), or data-parallel one of "
                             f"{', '.join(sorted(PER_TRIPLE_LOSS_MODELS))}")
        return self

    @model_validator(mode="after")
    def _device_holds_the_model(self) -> "RunConfig":
        if self.train.device != "cpu" and self.model.name not in GPU_MODELS:
            raise ValueError(f"train.device={self.train.device}: {self.model.name} trains on the CPU only (its item "
                             f"graphs and features stay in host memory); set train.device=cpu, or train one of "
                             f"{', '.join(sorted(GPU_MODELS))} on the GPU")
        if self.train.device.startswith("cuda:") and self.train.nproc > 1:
            raise ValueError(f"train.device={self.train.device} with train.nproc={self.train.nproc}: data-parallel "
                             "ranks take one GPU each, rank r GPU r; write train.device=cuda")
        return self

    def on_device(self, device: str | None) -> "RunConfig":
        """This run with its training moved to `device` (None: unchanged), validated like any run: the device
        where a method's own training runs (Retrain, Fine-tune, shard sub-models) rather than where the model
        was trained, so a model trained on a GPU unlearns on a machine without one."""
        if device is None or device == self.train.device:
            return self
        try:
            return RunConfig.model_validate({**self.model_dump(), "train": {**self.train.model_dump(),
                                                                            "device": device}})
        except ValidationError as err:
            raise ValueError(err.errors()[0]["msg"].removeprefix("Value error, ")) from None

    @model_validator(mode="after")
    def _metric_is_computed(self) -> "RunConfig":
        """Early stopping follows a metric that validation computes, so a typo fails now, not after an epoch."""
        metric, ks = self.train.metric, self.eval.ks
        computed = [f"{name}@{k}" for name in METRICS for k in ks]
        if metric in computed:
            return self
        name, _, k = metric.partition("@")
        canonical = next((known for known in METRICS if known.lower() == name.lower()), None)
        if canonical is not None and k.isdigit() and int(k) >= 1:
            if f"{canonical}@{int(k)}" in computed:
                advice = f"write it as train.metric={canonical}@{int(k)}"
            else:
                advice = (f"add {int(k)} to eval.ks (--set 'eval.ks={sorted({*ks, int(k)})}') or set "
                          f"train.metric={canonical}@{ks[-1]}")
            raise ValueError(f"train.metric={metric} is not computed with eval.ks={ks}: {advice}")
        raise ValueError(f"train.metric={metric} is not a validation metric: choose one of {', '.join(computed)} "
                         f"(NAME@K with NAME in {', '.join(METRICS)} and K in eval.ks)")
