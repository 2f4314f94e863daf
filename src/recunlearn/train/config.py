"""Training and run configuration."""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, model_validator

from ..config import StrictConfig
from ..models.lightgcn import LightGCNConfig
from ..models.mf import MFConfig
from ..models.sgl import SGLConfig
from ..models.simgcl import SimGCLConfig

AnyModelConfig = Annotated[Union[MFConfig, LightGCNConfig, SGLConfig, SimGCLConfig], Field(discriminator="name")]


class TrainConfig(StrictConfig):
    """Adam on BPR (+ backbone terms); early stopping on a validation metric with patience."""

    epochs: int = Field(300, ge=1, description="maximum number of epochs")
    batch_size: int = Field(2048, ge=1)
    lr: float = Field(1e-3, gt=0)
    eval_every: int = Field(1, ge=1, description="validate every N epochs")
    patience: int = Field(10, ge=1, description="validations without improvement before stopping")
    lr_decay: float = Field(1.0, gt=0, le=1, description="multiply lr by this after lr_decay_patience "
                            "validations without improvement (1 = constant lr)")
    lr_decay_patience: int = Field(2, ge=0, description="validations without improvement before lr decays")
    min_lr: float = Field(0.0, ge=0, description="lr never decays below this")
    metric: str = Field("Recall@20", description="validation metric that early stopping follows")
    seed: int = 0
    threads: int | None = Field(None, description="torch threads (default: torch's own choice)")
    deterministic: bool = False


class DataConfig(StrictConfig):
    name: str = "ml-100k"
    path: str | None = Field(None, description="your own interaction file, or a folder with train/test[/valid] "
                                               "files, in any supported format; `name` then only labels it")
    seed: int = Field(0, description="seed of the split where the dataset ships none")
    valid_ratio: float = Field(0.1, gt=0, lt=1, description="validation share carved from a shipped train set")


class EvalConfig(StrictConfig):
    ks: list[int] = [10, 20]
    batch_size: int = 1024


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
