"""Fine-tune (approximate, naive): continue training the current model on the residual data for a fixed
number of epochs, with no validation pass."""
from __future__ import annotations

from pydantic import Field

from ..config import StrictConfig
from ..data.interactions import Dataset, Interactions
from ..train.trainer import Trainer
from .base import UnlearnResult, Unlearner


class FineTuneConfig(StrictConfig):
    epochs: int = Field(1, ge=1, description="epochs over the residual training edges")
    lr: float | None = Field(None, gt=0, description="learning rate (default: the original run's)")


class FineTune(Unlearner):
    name = "finetune"
    adapts_to_withdrawals = True      # training reads the data's withdrawn feature rows as withdrawn
    kind = "approximate"
    config_class = FineTuneConfig
    needs_run = True

    def _unlearn(self, edges: Interactions, residual: Dataset) -> UnlearnResult:
        cfg = self.config
        train = self.run.train.model_copy(update={"epochs": cfg.epochs, "lr": cfg.lr or self.run.train.lr})
        model = self.state.model.clone()
        for p in model.parameters():
            p.requires_grad_(True)
        model, _ = Trainer(self.run.model_copy(update={"train": train}), progress=self.progress,
                           validate=False).fit(residual, model=model)
        return self._result(model, residual, edges, model)
