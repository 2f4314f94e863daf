"""SISA (exact; Bourtoule et al., "Machine Unlearning", S&P 2021) for recommenders: the training interactions
are split into S shards at random, one sub-model of the original backbone is trained per shard, and the
average of the sub-models' scores answers queries. A request retrains, from scratch and with the shard's own
seed, only the shards that held forgotten edges, on what is left of them: each retrained sub-model is the
one SISA would have trained on that shard's residual data, and the untouched ones never saw the request.

The ensemble is a Scorer, not an embedding model (each sub-model reads out over its own shard's graph), so
a result has no `model`.

Sub-models are independent, so `workers` > 1 trains them in that many processes at once (under torchrun,
shard i on rank i mod world size instead), with the same weights as one process trains them in turn."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from ..config import StrictConfig
from ..data.graph import build_graph
from ..data.interactions import Dataset, Interactions
from ..models.base import Recommender
from ..models.registry import build_model
from ..train.config import RunConfig
from ..train.distributed import Ranks
from ..train.jobs import FitJob, fit_jobs
from ..train.trainer import Trainer
from .base import UnlearnResult, Unlearner

SHARDS_FILE = "shards.pt"


class SisaConfig(StrictConfig):
    shards: int = Field(10, ge=1, description="number of shards S (the paper's default)")
    seed: int = Field(0, description="seed of the shard assignment and of each sub-model's training")
    epochs: int | None = Field(None, ge=1, description="fixed epochs per sub-model with no validation pass "
                               "(default: the original run's early stopping on validation, as Retrain)")
    workers: int = Field(1, ge=1, description="processes that train sub-models at once, each taking the next "
                         "shard; the weights are bit-identical to one process's at the same torch threads per "
                         "process")


def assign_shards(n_edges: int, shards: int, seed: int) -> np.ndarray:
    """The shard of each training edge: a random permutation dealt out in turn, so sizes differ by one."""
    assignment = np.empty(n_edges, dtype=np.int64)
    assignment[np.random.default_rng(seed).permutation(n_edges)] = np.arange(n_edges) % shards
    return assignment


def shard_seed(seed: int, shard: int) -> int:
    """Shard `shard`'s training seed: fixed by (seed, shard), so a retrain repeats the shard's first training."""
    return int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])


@dataclass
class ShardFit:
    weights: dict[str, torch.Tensor] | None   # None: the shard has no edge left, so no sub-model
    train_seconds: float = 0.0                # the epochs alone
    excluded_seconds: float = 0.0             # validation passes and bookkeeping inside the fit


class ShardEnsemble:
    """A Scorer: the mean of the sub-models' scores (shards without a sub-model are left out)."""

    def __init__(self, models: list[Recommender | None]):
        self.models = models
        self.live = [m for m in models if m is not None]
        if not self.live:
            raise ValueError("every shard is empty: no sub-model is left to score with")
        self.n_users, self.n_items = self.live[0].n_users, self.live[0].n_items

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.score_users(users) for m in self.live]).mean(0)

    @torch.no_grad()
    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.score_pairs(users, items) for m in self.live]).mean(0)


class Sisa(Unlearner):
    name = "sisa"
    kind = "exact"
    has_model = False
    config_class = SisaConfig
    needs_run = True

    # --- shards ------------------------------------------------------------------------------------
    def shard_edges(self, shard: int, train: Interactions) -> Interactions:
        """The edges of `train` (the original training set or what is left of it) in shard `shard`."""
        edges = self.original_data.train.select(self.assignment == shard)
        return edges.select(train.contains(edges.users, edges.items))

    def shard_run(self, shard: int) -> RunConfig:
        """The original run with the shard's seed (and the fixed epoch count, when one is set), on one process:
        shards run side by side (`workers`), not each over several data-parallel ranks."""
        update = {"seed": shard_seed(self.config.seed, shard), "nproc": 1}
        if self.config.epochs is not None:
            update["epochs"] = self.config.epochs
        return self.run.model_copy(update={"train": self.run.train.model_copy(update=update)})

    def _shard_job(self, shard: int, data: Dataset) -> FitJob | None:
        """Shard `shard`'s training from scratch on its edges still in `data.train` (None: no edge is left)."""
        edges = self.shard_edges(shard, data.train)
        if len(edges) == 0:
            return None
        return FitJob(self.shard_run(shard), data.with_train(edges), validate=self.config.epochs is None)

    def _train_shard(self, shard: int, data: Dataset) -> ShardFit:
        """Train shard `shard`'s sub-model in this process."""
        job = self._shard_job(shard, data)
        if job is None:
            return ShardFit(None)
        model, fit = Trainer(job.run, progress=self.progress, validate=job.validate).fit(job.dataset)
        return ShardFit(model.state_dict(), fit.train_seconds, fit.seconds - fit.train_seconds)

    def _submodel(self, shard: int, weights: dict | None, train: Interactions) -> Recommender | None:
        """Shard `shard`'s sub-model from its weights, reading out over the shard's edges left in `train`."""
        if weights is None:
            return None
        model = build_model(self.run.model, self.original_data.n_users, self.original_data.n_items)
        model.load_state_dict(weights)
        return model.attach(build_graph(self.shard_edges(shard, train))).eval()

    def _fit_shards(self, shards: list[int], data: Dataset) -> dict[int, ShardFit]:
        if self.config.workers == 1 and Ranks.active() is None:
            bar = tqdm(shards, desc=f"{self.name} shards", disable=not self.progress)
            return {shard: self._train_shard(shard, data) for shard in bar}
        return self._fit_shards_at_once(shards, data)

    def _fit_shards_at_once(self, shards: list[int], data: Dataset) -> dict[int, ShardFit]:
        """`_train_shard` of every shard, in `workers` processes (or on the torch.distributed ranks). Fits that
        run at once overlap, so the validation seconds a request leaves out are each fit's validation seconds
        scaled to its share of the wall time the fits took together."""
        jobs = {shard: self._shard_job(shard, data) for shard in shards}
        live = [shard for shard in shards if jobs[shard] is not None]
        start = time.perf_counter()
        outcomes = fit_jobs([jobs[shard] for shard in live], self.config.workers, self.progress,
                            desc=f"{self.name} shards")
        wall = time.perf_counter() - start
        busy = sum(outcome.seconds for outcome in outcomes)
        overlap = min(1.0, wall / busy) if busy > 0 else 1.0
        fits = {shard: ShardFit(None) for shard in shards}
        for shard, outcome in zip(live, outcomes):
            fits[shard] = ShardFit(outcome.weights, outcome.train_seconds,
                                   (outcome.seconds - outcome.train_seconds) * overlap)
        return fits

    # --- the contract ------------------------------------------------------------------------------
    def prepare(self, model: Recommender, dataset: Dataset) -> "Sisa":
        super().prepare(model, dataset)
        # the shard ensemble answers queries from the start, not the original model
        self.state = replace(self.state, scorer=self._prepared, model=None)
        del self._prepared
        return self

    def _prepare(self, model: Recommender, dataset: Dataset) -> None:
        # the shard of each edge of the original training set, in its (user, item) order
        self.assignment = assign_shards(len(dataset.train), self.config.shards, self.config.seed)
        fits = self._fit_shards(list(range(self.config.shards)), dataset)
        self._prepared = ShardEnsemble([self._submodel(k, fits[k].weights, dataset.train) for k in fits])

    def _retrain_affected(self, edges: Interactions, residual: Dataset) -> tuple[dict[int, ShardFit], list]:
        """The fits of the shards that held any of `edges`, retrained from scratch on their residual edges, and
        the sub-models with theirs replaced (the untouched shards keep their sub-models as they are)."""
        touched = edges.contains(self.original_data.train.users, self.original_data.train.items)
        affected = sorted(int(k) for k in np.unique(self.assignment[touched]))
        fits = self._fit_shards(affected, residual)
        models = list(self.state.scorer.models)
        for shard, fit in fits.items():
            models[shard] = self._submodel(shard, fit.weights, residual.train)
        return fits, models

    def _unlearn(self, edges: Interactions, residual: Dataset) -> UnlearnResult:
        start = time.perf_counter()
        fits, models = self._retrain_affected(edges, residual)
        affected = sorted(fits)
        ensemble = ShardEnsemble(models)
        ensemble.score_users(torch.zeros(1, dtype=torch.long))   # readout of the new sub-models, timed
        excluded = sum(fit.excluded_seconds for fit in fits.values())
        result = self._result(ensemble, residual, edges, None, retrained_shards=affected,
                              shard_seconds={k: fit.train_seconds for k, fit in fits.items()},
                              shards=self.config.shards)
        # from the request to a queryable ensemble, without the sub-models' validation passes (as Retrain)
        result.seconds.update(total=time.perf_counter() - start - excluded, excluded_validation=excluded)
        return result

    # --- persistence: shard assignment and sub-model weights ----------------------------------------
    def _save_extra(self, path: Path) -> None:
        weights = [None if m is None else m.state_dict() for m in self.state.scorer.models]
        torch.save({"assignment": torch.from_numpy(self.assignment), "weights": weights}, path / SHARDS_FILE)

    def _load_extra(self, path: Path, model: Recommender, dataset: Dataset) -> None:
        saved = torch.load(path / SHARDS_FILE, weights_only=True)
        self.assignment = saved["assignment"].numpy()
        self._saved_weights = saved["weights"]

    def _restore(self, original: Recommender, current, residual: Dataset, forgotten: Interactions) -> UnlearnResult:
        models = [self._submodel(k, w, residual.train) for k, w in enumerate(self._saved_weights)]
        del self._saved_weights
        return UnlearnResult(ShardEnsemble(models), residual, forgotten, {}, self.kind)
