"""Fine-tune (approximate, naive): continue training the original model on the residual data."""
from __future__ import annotations

import copy
import time

from ..data.interactions import Interactions
from ..train.config import RunConfig
from ..train.trainer import Trainer
from .base import UnlearnResult, Unlearner


class FineTune(Unlearner):
    name = "finetune"
    kind = "approximate"

    def __init__(self, run: RunConfig, epochs: int = 1, progress: bool = True):
        super().__init__()
        train = run.train.model_copy(update={"epochs": epochs, "eval_every": epochs, "patience": epochs + 1})
        self.run = run.model_copy(update={"train": train})
        self.progress = progress

    def unlearn(self, edges: Interactions) -> UnlearnResult:
        residual = self._residual(edges)
        model = copy.deepcopy(self.state.model)
        for p in model.parameters():
            p.requires_grad_(True)
        start = time.perf_counter()
        model, _ = Trainer(self.run, progress=self.progress).fit(residual, model=model)
        seconds = time.perf_counter() - start
        self.state = UnlearnResult(model, residual, self.state.forgotten.union(edges), {"total": seconds}, self.kind)
        return self.state
