"""RecEraser (exact; Chen et al., "Recommendation Unlearning", WWW 2022): SISA for recommenders with shards
that keep collaborative structure and a learned aggregator.

`prepare` partitions the training data by balanced k-means (BKM) on the original model's final embeddings,
by user, by item or by interaction, so that similar users / items / interactions share a shard and every
shard stays under a capacity. One sub-model of the original backbone is trained per shard, as in SISA. An
attention aggregator then learns, per user and per item, weights over the sub-models' (transferred)
embeddings; it is trained with BPR on the training data, the sub-models frozen, and the score is the
aggregated user embedding times the aggregated item embedding.

A request retrains, from scratch and with their own seeds, exactly the shards that held forgotten edges, on
what is left of them, and then retrains the aggregator from scratch on the residual data: the result is
the RecEraser one would have built on the residual data with the same partition. Like SISA the result is a
Scorer, not an embedding model (each sub-model reads out over its own shard's graph), so it has no `model`.

Shards train through SISA's code, so `workers` > 1 trains them in parallel processes with the same weights;
the aggregator, which needs every sub-model, then trains in this process.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm

from ..data import sampling
from ..data.graph import build_graph
from ..data.interactions import Dataset, Interactions
from ..data.split import require_splits
from ..eval.ranking import evaluate
from ..eval.scorer import EmbeddingScorer
from ..models.base import Recommender, bpr_loss
from .base import UnlearnResult
from .sisa import SisaConfig, Sisa, shard_seed

AGGREGATOR_FILE = "aggregator.pt"
Partition = Literal["user", "item", "interaction"]


class RecEraserConfig(SisaConfig):
    partition: Partition = Field("interaction", description="what the balanced clustering groups: users (all "
                                 "their interactions in one shard), items, or single interactions (user-item pairs)")
    capacity: float = Field(1.2, ge=1.0, description="a shard holds at most capacity x n / shards of the "
                            "partitioned units (the authors' code uses 1.2)")
    iterations: int = Field(10, ge=1, description="rounds of balanced k-means (assign, then move the centroids)")
    attention_dim: int | None = Field(None, ge=1, description="hidden size of the attention MLP "
                                      "(default: the backbone's embedding size)")
    aggregator_epochs: int | None = Field(None, ge=1, description="fixed aggregator epochs with no validation "
                                          "pass (default: the original run's early stopping on validation)")
    aggregator_lr: float | None = Field(None, gt=0, description="Adam learning rate of the aggregator "
                                        "(default: the original run's)")


# --- balanced partition --------------------------------------------------------------------------------
def balanced_kmeans(blocks: list[tuple[np.ndarray, np.ndarray]], shards: int, capacity: float, iterations: int,
                    seed: int) -> np.ndarray:
    """The shard of each point, by balanced k-means: point p is the concatenation of the rows
    `embeddings[index[p]]` of each (embeddings, index) block (one block for users or items, a user and an item
    block for interactions). Each round sorts every (point, shard) pair by squared distance to the shard's
    centroid and assigns greedily, nearest pairs first, while the shard has room; centroids then move to the
    mean of their points. Distances are computed per node and gathered, so interactions never materialise."""
    n = len(blocks[0][1])
    limit = math.ceil(capacity * n / shards)
    anchors = np.random.default_rng(seed).choice(n, size=shards, replace=False)
    centroids = [emb[index[anchors]] for emb, index in blocks]
    assignment = np.zeros(n, dtype=np.int64)
    for _ in range(iterations):
        dist = sum(_squared_distances(emb, c)[index] for (emb, index), c in zip(blocks, centroids))
        assignment = _greedy_assign(dist, limit)
        counts = np.bincount(assignment, minlength=shards)
        for b, (emb, index) in enumerate(blocks):
            # sums per shard as (node-by-shard counts)^T @ embeddings: no [n_points, d] gather
            per_node = np.bincount(index * shards + assignment, minlength=len(emb) * shards).reshape(len(emb), shards)
            sums = per_node.T.astype(np.float64) @ emb
            live = counts > 0                       # an empty shard keeps its centroid
            centroids[b][live] = sums[live] / counts[live, None]
    return assignment


def _squared_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d = (points ** 2).sum(1)[:, None] - 2 * points @ centroids.T + (centroids ** 2).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _greedy_assign(dist: np.ndarray, limit: int) -> np.ndarray:
    """Visit the (point, shard) pairs from nearest to farthest and assign each unassigned point to its pair's
    shard while that shard holds fewer than `limit` points (limit x shards >= points, so every point lands)."""
    n, shards = dist.shape
    order = np.argsort(dist, axis=None, kind="stable")
    assignment = [-1] * n
    counts = [0] * shards
    left = n
    for point, shard in zip((order // shards).tolist(), (order % shards).tolist()):
        if assignment[point] < 0 and counts[shard] < limit:
            assignment[point] = shard
            counts[shard] += 1
            left -= 1
            if left == 0:
                break
    return np.asarray(assignment, dtype=np.int64)


def partition_edges(train: Interactions, users: np.ndarray, items: np.ndarray, partition: Partition, shards: int,
                    capacity: float, iterations: int, seed: int) -> np.ndarray:
    """The shard of each edge of `train` (in its order), from balanced k-means over `partition` units on the
    final embeddings `users` [n_users, d] and `items` [n_items, d]. A user (item) partition clusters the users
    (items) that have training edges and sends each edge to its user's (item's) shard."""
    users, items = users.astype(np.float64), items.astype(np.float64)
    if partition == "interaction":
        units, noun = len(train), "training interactions"
    else:
        nodes = np.unique(train.users if partition == "user" else train.items)
        units, noun = len(nodes), f"{partition}s with training interactions"
    if shards > units:
        raise ValueError(f"receraser: {shards} shards but only {units} {noun} to partition; use at most {units} shards")
    if partition == "interaction":
        return balanced_kmeans([(users, train.users), (items, train.items)], shards, capacity, iterations, seed)
    emb, edge_nodes = (users, train.users) if partition == "user" else (items, train.items)
    node_shard = np.full(len(emb), -1, dtype=np.int64)
    node_shard[nodes] = balanced_kmeans([(emb, nodes)], shards, capacity, iterations, seed)
    return node_shard[edge_nodes]


# --- attention aggregator ------------------------------------------------------------------------------
class Aggregator(nn.Module):
    """Per shard a transfer (sub-models are trained apart, so their embedding spaces differ), then attention
    over shards: for a node, softmax over k of hᵀ ReLU(W t_k + b) weighs its transferred embeddings t_k.
    Users and items have separate attention networks."""

    def __init__(self, shards: int, dim: int, attention_dim: int, generator: torch.Generator):
        super().__init__()
        # the transfer starts as the identity: at first each shard's embedding is taken as it is
        self.transfer = nn.Parameter(torch.eye(dim).repeat(shards, 1, 1))
        self.transfer_bias = nn.Parameter(torch.zeros(shards, 1, dim))
        self.user_attention = self._attention(dim, attention_dim, generator)
        self.item_attention = self._attention(dim, attention_dim, generator)

    @staticmethod
    def _attention(dim: int, hidden: int, generator: torch.Generator) -> nn.Sequential:
        net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1, bias=False))
        with torch.no_grad():
            for layer in (net[0], net[2]):
                bound = 1 / math.sqrt(layer.in_features)
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
            net[0].bias.zero_()
        return net

    def combine(self, embeddings: torch.Tensor, attention: nn.Module) -> torch.Tensor:
        """[shards, n, d] sub-model embeddings of n nodes -> [n, d] aggregated embeddings."""
        transferred = torch.bmm(embeddings, self.transfer) + self.transfer_bias
        weights = torch.softmax(attention(transferred), dim=0)          # [shards, n, 1]
        return (weights * transferred).sum(0)

    def combine_rows(self, embeddings: torch.Tensor, rows: torch.Tensor, attention: nn.Module) -> torch.Tensor:
        """Aggregated embeddings of `rows` (repeats allowed), computed once per distinct node: a batch of
        edges names the same users and items many times."""
        distinct, inverse = torch.unique(rows, return_inverse=True)
        return self.combine(embeddings[:, distinct], attention)[inverse]

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.combine(users, self.user_attention), self.combine(items, self.item_attention)


class RecEraserScorer(EmbeddingScorer):
    """Scores with the aggregated embeddings; keeps the sub-models (None for an emptied shard) and the aggregator
    that produced them, which a request partly reuses."""

    def __init__(self, models: list[Recommender | None], aggregator: Aggregator):
        self.models, self.aggregator = models, aggregator
        with torch.no_grad():
            user_emb, item_emb = aggregator(*stacked_embeddings(models))
        super().__init__(user_emb, item_emb)


def stacked_embeddings(models: list[Recommender | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """The live sub-models' final embeddings, [live shards, n_users, d] and [live shards, n_items, d]."""
    live = [m for m in models if m is not None]
    if not live:
        raise ValueError("every shard is empty: no sub-model is left to aggregate")
    pairs = [m.final_embeddings() for m in live]
    return torch.stack([u for u, _ in pairs]), torch.stack([i for _, i in pairs])


@dataclass
class AggregatorFit:
    scorer: RecEraserScorer
    epochs: int
    train_seconds: float          # the epochs alone
    excluded_seconds: float       # validation passes inside the fit


class RecEraser(Sisa):
    name = "receraser"
    kind = "exact"
    has_model = False
    config_class = RecEraserConfig
    needs_run = True

    def aggregator_seed(self) -> int:
        # index `shards` is no shard's: the aggregator's seed differs from every sub-model's
        return shard_seed(self.config.seed, self.config.shards)

    def _new_aggregator(self, shards: int) -> Aggregator:
        dim = self.run.model.dim
        generator = torch.Generator().manual_seed(self.aggregator_seed())
        return Aggregator(shards, dim, self.config.attention_dim or dim, generator)

    def _fit_aggregator(self, models: list[Recommender | None], data: Dataset) -> AggregatorFit:
        """Train a fresh aggregator by BPR on `data.train` over the frozen sub-models: early stopping on
        validation as the original run (best state kept), or `aggregator_epochs` epochs without validation."""
        cfg, validate = self.run.train, self.config.aggregator_epochs is None
        if validate:
            require_splits(data, ("train", "valid"))
        user_stack, item_stack = stacked_embeddings(models)
        aggregator = self._new_aggregator(len(user_stack))
        optimizer = torch.optim.Adam(aggregator.parameters(), lr=self.config.aggregator_lr or cfg.lr)
        rng = np.random.default_rng(self.aggregator_seed())
        epochs = self.config.aggregator_epochs or cfg.epochs
        best, best_state, bad, best_epoch, train_seconds, excluded = -1.0, None, 0, epochs, 0.0, 0.0
        bar = tqdm(range(epochs), desc=f"{self.name} aggregator", disable=not self.progress)
        for epoch in bar:
            epoch_start = time.perf_counter()
            for users, pos, neg in sampling.bpr_epoch(data.train, rng, cfg.batch_size):
                users, pos, neg = (torch.from_numpy(a) for a in (users, pos, neg))
                u = aggregator.combine_rows(user_stack, users, aggregator.user_attention)
                items = aggregator.combine_rows(item_stack, torch.cat([pos, neg]), aggregator.item_attention)
                loss = bpr_loss(u, items[: len(pos)], items[len(pos):])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            train_seconds += time.perf_counter() - epoch_start
            if not validate or ((epoch + 1) % cfg.eval_every and epoch + 1 != epochs):
                continue
            valid_start = time.perf_counter()
            with torch.no_grad():
                scorer = EmbeddingScorer(*aggregator(user_stack, item_stack))
            value = evaluate(scorer, data.valid, data.train, ks=self.run.eval.ks,
                             batch_size=self.run.eval.batch_size)[cfg.metric]
            if value > best:
                best, best_epoch, bad, best_state = value, epoch + 1, 0, copy.deepcopy(aggregator.state_dict())
            else:
                bad += 1
            bar.set_postfix({cfg.metric: f"{value:.4f}", "best": f"{best:.4f}@{best_epoch}"})
            excluded += time.perf_counter() - valid_start
            if bad >= cfg.patience:
                break
        if best_state is not None:
            aggregator.load_state_dict(best_state)
        aggregator.eval()
        scorer = RecEraserScorer(models, aggregator)
        return AggregatorFit(scorer, best_epoch, train_seconds, excluded)

    # --- the contract ------------------------------------------------------------------------------
    def _prepare(self, model: Recommender, dataset: Dataset) -> None:
        # the pre-trained embeddings that the partition clusters: the original model's final ones
        with torch.no_grad():
            users, items = model.embed(model.graph or build_graph(dataset.train))
        c = self.config
        self.assignment = partition_edges(dataset.train, users.numpy(), items.numpy(), c.partition, c.shards,
                                          c.capacity, c.iterations, c.seed)
        fits = self._fit_shards(list(range(c.shards)), dataset)
        models = [self._submodel(k, fits[k].weights, dataset.train) for k in fits]
        self._prepared = self._fit_aggregator(models, dataset).scorer

    def _unlearn(self, edges: Interactions, residual: Dataset) -> UnlearnResult:
        start = time.perf_counter()
        fits, models = self._retrain_affected(edges, residual)
        aggregator = self._fit_aggregator(models, residual)
        scorer = aggregator.scorer
        scorer.score_users(torch.zeros(1, dtype=torch.long))     # a queryable scorer, timed
        excluded = sum(fit.excluded_seconds for fit in fits.values()) + aggregator.excluded_seconds
        result = self._result(scorer, residual, edges, None, retrained_shards=sorted(fits),
                              shard_seconds={k: fit.train_seconds for k, fit in fits.items()},
                              aggregator_seconds=aggregator.train_seconds, aggregator_epochs=aggregator.epochs,
                              shards=self.config.shards)
        # from the request to a queryable scorer, without validation passes (as Retrain and SISA)
        result.seconds.update(total=time.perf_counter() - start - excluded, excluded_validation=excluded)
        return result

    # --- persistence: partition, sub-model weights and the aggregator --------------------------------
    def _save_extra(self, path: Path) -> None:
        super()._save_extra(path)
        torch.save(self.state.scorer.aggregator.state_dict(), path / AGGREGATOR_FILE)

    def _load_extra(self, path: Path, model: Recommender, dataset: Dataset) -> None:
        super()._load_extra(path, model, dataset)
        self._saved_aggregator = torch.load(path / AGGREGATOR_FILE, weights_only=True)

    def _restore(self, original: Recommender, current, residual: Dataset, forgotten: Interactions) -> UnlearnResult:
        models = [self._submodel(k, w, residual.train) for k, w in enumerate(self._saved_weights)]
        aggregator = self._new_aggregator(sum(m is not None for m in models))
        aggregator.load_state_dict(self._saved_aggregator)
        del self._saved_weights, self._saved_aggregator
        return UnlearnResult(RecEraserScorer(models, aggregator.eval()), residual, forgotten, {}, self.kind)
