"""MMRecUn (Sinha et al., AAAI 2025): reverse BPR on the forget set with forward BPR on the retain set.

From the current model, with the forget set's edges removed from the user-item graph first, each epoch runs the
backbone's optimiser over L = α L_fwd + β L_rev: forward BPR (+ the backbone's own terms) on a fresh sample
of retain edges (`retain_ratio` × the forget set, which is what makes it cheaper than a retrain) and reverse
BPR on the forget set, where the forgotten item and a sampled negative swap roles.

Early stopping: a seeded part of the forget set (`forget_valid`) is kept out of the loss; after each step its
Recall@20 (residual training items masked) is compared with the level a retrained model would give it, and
training stops once it is at or below that level. The level is estimated without a retrain and without the
test split: an edge whose user or item keeps no training edge in the residual (a whole user or item erased)
counts at the level the model gives it right after those rows were reset (chance, k / n_items, without the
reset); any other edge at the Recall@20 the model reaches on the validation split's pairs of the same users
(positives it never trained on, which is what a forgotten edge becomes).

Users and items that keep no training edge (a whole user's history, a taken-down item) get fresh 0-layer rows
first (`reset_isolated`): a retrained model never trains their rows, so it holds them at their initial
distribution; reverse BPR then moves what they left in the rest of the model.

Item take-downs (`remove_items`): items whose every training edge is forgotten leave the catalogue (they score
below every other item, so they are never recommended again) and, for a multi-modal backbone, every
modality's item-item graph. Modality constraints: the residual data's withdrawn feature rows replace the
model's (zeroed, out of the item-item graph); nothing is forgotten, so the model adapts by `adapt_epochs` of
forward BPR over the training edges of the items whose features were withdrawn.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from ..config import StrictConfig
from ..data import sampling
from ..data.graph import build_graph
from ..data.interactions import Dataset, Interactions
from ..data.requests import Request
from ..eval.ranking import evaluate
from ..models.base import Recommender, bpr_loss
from ..models.modal import ContentRecommender
from ..models.registry import attach_content
from .base import UnlearnResult, Unlearner, without_removed

REMOVED_FILE = "removed_items.npy"


class ReverseBPRConfig(StrictConfig):
    max_epochs: int = Field(10, ge=1, description="epochs at most (early stopping usually ends sooner)")
    lr: float | None = Field(1e-3, gt=0, description="Adam learning rate (None: the original run's); chosen on a "
                                                    "probe request, benchmarks/probe_reverse_bpr.py")
    alpha: float = Field(1.0, ge=0, description="weight of forward BPR on the retain set")
    beta: float = Field(1.0, ge=0, description="weight of reverse BPR on the forget set")
    retain_ratio: float = Field(10.0, gt=0, description="retain edges sampled per epoch, as a multiple of the "
                                                        "forget set")
    batch_size: int | None = Field(None, ge=1, description="retain triples per step (default: the original "
                                                           "run's); the forget set is spread over an epoch's steps")
    forget_valid: float = Field(0.2, ge=0, lt=1, description="share of the forget set kept out of the loss to "
                                                             "decide early stopping (0: no early stopping)")
    adapt_epochs: int = Field(1, ge=0, description="a modality constraint (no edge to forget): epochs of forward "
                                                   "BPR over the training edges of the items whose features it "
                                                   "withdrew, so that they fit their new inputs")
    k: int = Field(20, ge=1, description="cut-off of the forget-set recall that early stopping follows")
    reset_isolated: bool = Field(True, description="users and items left without any training edge get fresh "
                                                   "0-layer rows, as a model retrained without them holds")
    remove_items: bool = Field(True, description="items whose every training edge is forgotten leave the "
                                                 "catalogue and the item-item graphs")
    seed: int = Field(0, description="seed of the retain samples, the negatives and the validation split")


class ReverseBPR(Unlearner):
    name = "reverse-bpr"
    kind = "approximate"
    config_class = ReverseBPRConfig
    needs_run = True
    adapts_to_withdrawals = True
    _kind: str | None = None                       # the kind of the request being applied
    removed: np.ndarray = np.empty(0, np.int64)    # items out of the catalogue, over every request so far

    def unlearn(self, request: Request | Interactions) -> UnlearnResult:
        self._kind = request.kind if isinstance(request, Request) else None
        return super().unlearn(request)

    def _unlearn(self, edges: Interactions, residual: Dataset) -> UnlearnResult:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        model = self.state.model.clone()
        attach_content(model, residual)                      # a modality constraint's withdrawn rows
        model.attach(build_graph(residual.train))            # forgotten edges leave the graph first
        removed = self._removed_items(edges, residual)
        reset = self._reset_isolated(model, edges, residual) if cfg.reset_isolated else {"users": 0, "items": 0}
        if len(removed) and isinstance(model, ContentRecommender):
            for name in model.modality_names:
                model.withdraw(name, removed)
        for p in model.parameters():
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr or self.run.train.lr)

        forget, held = self._split_forget(edges, rng)
        model.eval()
        target = self._target_level(model, held, residual) if len(held) else None
        # the check runs after every step: one epoch of reverse BPR can carry the forget set far past the level
        # a retrained model gives it (over-forgetting, itself a sign of deletion)
        stop = (lambda: self._recall(model, held, residual) <= target) if target is not None else None
        history, stopped = [], None
        anchor = self._newly_withdrawn_edges(residual) if len(edges) == 0 else None
        for epoch in range(cfg.adapt_epochs if anchor is not None else cfg.max_epochs):
            loss, steps, done = self._epoch(model, optimizer, forget, residual, rng, stop, retain=anchor)
            history.append({"epoch": epoch + 1, "loss": loss, "steps": steps})
            if done:
                stopped = epoch + 1
                break
        model.requires_grad_(False)
        model.invalidate()
        model.eval()
        self.removed = np.union1d(self.removed, removed).astype(np.int64)
        result = self._result(without_removed(model, self.removed), residual, edges, model, epochs_run=len(history),
                              stopped_early_at=stopped, target_forget_recall=target, removed_items=int(len(removed)),
                              reset_users=reset["users"], reset_items=reset["items"], history=history)
        result.removed_items = self.removed
        return result

    # --- the working state: the catalogue removals travel with it ------------------------------------
    def _save_extra(self, path: Path) -> None:
        np.save(path / REMOVED_FILE, self.removed)

    def _load_extra(self, path: Path, model: Recommender, dataset: Dataset) -> None:
        self.removed = np.load(path / REMOVED_FILE) if (path / REMOVED_FILE).is_file() else np.empty(0, np.int64)

    def _restore(self, original: Recommender, current: Recommender | None, residual: Dataset,
                 forgotten: Interactions) -> UnlearnResult:
        result = super()._restore(original, current, residual, forgotten)
        result.scorer, result.removed_items = without_removed(result.model, self.removed), self.removed
        return result

    # --- parts -------------------------------------------------------------------------------------
    def _removed_items(self, edges: Interactions, residual: Dataset) -> np.ndarray:
        """Items of an item take-down whose every training edge is now forgotten."""
        if not self.config.remove_items or self._kind != "item" or not len(edges):
            return np.empty(0, dtype=np.int64)
        items = np.unique(edges.items)
        return items[residual.train.item_degree()[items] == 0]

    def _reset_isolated(self, model: Recommender, edges: Interactions, residual: Dataset) -> dict[str, int]:
        """Fresh 0-layer rows for the request's users and items that keep no training edge: what a retrain
        holds for them (it never trains their rows), which no amount of reverse BPR reproduces."""
        users, items = np.unique(edges.users), np.unique(edges.items)
        users = users[residual.train.user_degree()[users] == 0]
        items = items[residual.train.item_degree()[items] == 0]
        if len(users) or len(items):
            nodes = torch.from_numpy(np.concatenate([users, items + residual.n_users]))
            model.reinitialise(nodes, torch.Generator().manual_seed(self.config.seed))
        return {"users": int(len(users)), "items": int(len(items))}

    def _split_forget(self, edges: Interactions, rng: np.random.Generator) -> tuple[Interactions, Interactions]:
        """(edges for the reverse loss, edges held out to decide early stopping)."""
        n_held = int(round(self.config.forget_valid * len(edges)))
        if n_held == 0 or n_held == len(edges):
            return edges, Interactions.empty(edges.n_users, edges.n_items)
        held = np.zeros(len(edges), dtype=bool)
        held[rng.choice(len(edges), size=n_held, replace=False)] = True
        return edges.select(~held), edges.select(held)

    def _newly_withdrawn_edges(self, residual: Dataset) -> Interactions:
        """Training edges of the items whose features this request withdrew (in any modality)."""
        before = self.state.dataset.withdrawn
        items = [np.setdiff1d(now, before.get(name, [])) for name, now in residual.withdrawn.items()]
        items = np.unique(np.concatenate(items)) if items else np.empty(0, np.int64)
        return residual.train.select(np.isin(residual.train.items, items))

    def _epoch(self, model: Recommender, optimizer, forget: Interactions, residual: Dataset,
               rng: np.random.Generator, stop=None, retain: Interactions | None = None) -> tuple[float, int, bool]:
        """One epoch: (mean loss, steps taken, whether `stop()` said to stop after a step). The forward part
        runs on `retain` when given, else on a fresh sample of `retain_ratio` × the forget set."""
        cfg, train = self.config, residual.train
        batch_size = cfg.batch_size or self.run.train.batch_size
        if retain is None:
            size = min(len(train), max(1, math.ceil(cfg.retain_ratio * max(len(forget), 1))))
            retain = train.select(np.isin(np.arange(len(train)), rng.choice(len(train), size=size, replace=False)))
        size = len(retain)
        if size == 0:
            return 0.0, 0, False
        steps = -(-size // batch_size)
        # the forget set is spread over the epoch's steps: one pass per epoch, whatever its size
        order = rng.permutation(len(forget))
        f_users, f_items = forget.users[order], forget.items[order]
        f_neg = sampling.sample_negatives(self.state.dataset.train, f_users, rng) if len(forget) else f_users
        f_batches = np.array_split(np.arange(len(forget)), steps)
        model.train()
        model.start_epoch(torch.Generator().manual_seed(int(rng.integers(2**31))))
        total, done, step = 0.0, False, -1
        for step, (users, pos, _) in enumerate(sampling.bpr_epoch(retain, rng, batch_size)):
            neg = sampling.sample_negatives(train, users, rng)     # negatives against all residual edges
            batch = tuple(torch.from_numpy(a) for a in (users, pos, neg))
            e0 = model.embedding.weight
            final = model.readout(e0, model.graph)
            fwd, _ = model.loss_terms(batch, final, e0)
            u_emb, i_emb = final[: model.n_users], final[model.n_users:]
            loss = cfg.alpha * fwd
            part = f_batches[step] if step < len(f_batches) else np.empty(0, dtype=np.int64)
            if len(part):
                fu, fi, fn = (torch.from_numpy(a[part]) for a in (f_users, f_items, f_neg))
                loss = loss + cfg.beta * bpr_loss(u_emb[fu], i_emb[fn], i_emb[fi])   # the roles swapped
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            if stop is not None:
                model.eval()
                model.invalidate()
                done = stop()
                model.train()
                if done:
                    break
        model.eval()
        model.invalidate()
        return total / (step + 1), step + 1, done

    def _recall(self, model: Recommender, held: Interactions, residual: Dataset) -> float:
        return evaluate(model, held, residual.train, ks=[self.config.k], metrics=("Recall",))[f"Recall@{self.config.k}"]

    def _target_level(self, model: Recommender, held: Interactions, residual: Dataset) -> float:
        """The forget-set Recall@k a retrained model is expected to give `held` (see the module notes)."""
        k = self.config.k
        user_deg, item_deg = residual.train.user_degree(), residual.train.item_degree()
        erased = (user_deg[held.users] == 0) | (item_deg[held.items] == 0)
        chance = min(1.0, k / residual.n_items)
        level = {}
        if erased.any():
            # rows reset: the level of a model that never trained them (chance when nothing was reset)
            part = held.select(erased)
            level[True] = evaluate(model, part, residual.train, ks=[k], metrics=("Recall",))[f"Recall@{k}"] \
                if self.config.reset_isolated else chance
        if (~erased).any():
            users = np.unique(held.users[~erased])
            probe = evaluate(self.state.model, residual.valid, residual.train, ks=[k], metrics=("Recall",), users=users)
            level[False] = probe[f"Recall@{k}"] if probe["users"] else chance
        share = float(erased.mean())
        return share * level.get(True, 0.0) + (1 - share) * level.get(False, 0.0)
