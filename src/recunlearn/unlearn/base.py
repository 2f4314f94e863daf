"""The Unlearner contract: `prepare(model, dataset)` once, then `unlearn(request)` per deletion."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..data.interactions import Dataset, Interactions
from ..models.base import Recommender


@dataclass
class UnlearnResult:
    """The state after a request: a model over the residual data, plus timings and what changed."""

    model: Recommender
    dataset: Dataset                      # `train` is the residual training set
    forgotten: Interactions               # cumulative forgotten pairs since `prepare`
    seconds: dict[str, float]             # e.g. {"unlearn": 0.4, "finetune": 12.0}
    kind: Literal["exact", "approximate"]
    report: dict = field(default_factory=dict)


class Unlearner(ABC):
    name: ClassVar[str]
    kind: ClassVar[Literal["exact", "approximate"]]

    def __init__(self):
        self.prepare_seconds = 0.0
        self.state: UnlearnResult | None = None

    def prepare(self, model: Recommender, dataset: Dataset) -> "Unlearner":
        """One-off set-up before any request (timed into `prepare_seconds`); by default just the start state."""
        self.state = UnlearnResult(model, dataset, Interactions.empty(dataset.n_users, dataset.n_items), {}, self.kind)
        return self

    @abstractmethod
    def unlearn(self, edges: Interactions) -> UnlearnResult:
        """Forget `edges` (training pairs). Requests compose: each starts from the previous result."""

    def _residual(self, edges: Interactions) -> Dataset:
        """The current data without `edges`, after checking that they are current training edges."""
        self._check_request(edges)
        return self.state.dataset.with_train(self.state.dataset.train.subtract(edges))

    def _check_request(self, edges: Interactions) -> None:
        if self.state is None:
            raise RuntimeError(f"{self.name}: call prepare(model, dataset) before unlearn()")
        train = self.state.dataset.train
        present = train.contains(edges.users, edges.items)
        if not present.all():
            k = int(present.argmin())
            raise ValueError(f"request edge (user {edges.users[k]}, item {edges.items[k]}) is not in the current "
                             "training set (never trained on, or already forgotten)")
