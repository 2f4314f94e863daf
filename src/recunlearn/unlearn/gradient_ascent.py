"""Gradient ascent (approximate, naive): from the current model, a few Adam steps that ascend the BPR loss on
the forget set's (user, forgotten item, random negative) triples, with the readout over the residual graph.

Nothing holds the ascent back: the more steps, the lower the forgotten pairs score, and the more every other
score moves with them (the over-forgetting this baseline exists to show)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from pydantic import Field

from ..config import StrictConfig
from ..data.graph import build_graph
from ..data.interactions import Dataset, Interactions
from ..data.sampling import sample_negatives
from ..models.base import bpr_loss
from .base import UnlearnResult, Unlearner


class GradientAscentConfig(StrictConfig):
    steps: int = Field(10, ge=1, description="Adam steps, each on one batch of forget-set triples")
    lr: float | None = Field(None, gt=0, description="learning rate (default: the original run's)")
    batch_size: int = Field(2048, ge=1, description="triples per step (a smaller forget set is one batch)")
    seed: int = Field(0, description="seed of the triples' order and of their negatives")


def forget_triples(forget: Interactions, train: Interactions, rng: np.random.Generator, batch_size: int,
                   steps: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """`steps` batches of (user, forgotten item, negative), in shuffled passes over `forget`; negatives are
    items the user has no edge with in `train` (which still holds the forgotten edges, so none is drawn)."""
    done = 0
    while len(forget):                  # an empty forget set has no triple: no step at all
        order = rng.permutation(len(forget))
        users, items = forget.users[order], forget.items[order]
        negatives = sample_negatives(train, users, rng)
        for start in range(0, len(order), batch_size):
            batch = slice(start, start + batch_size)
            yield tuple(torch.from_numpy(a[batch]) for a in (users, items, negatives))
            done += 1
            if done == steps:
                return


class GradientAscent(Unlearner):
    name = "gradient-ascent"
    kind = "approximate"
    config_class = GradientAscentConfig
    needs_run = True

    def _unlearn(self, edges: Interactions, residual: Dataset) -> UnlearnResult:
        cfg = self.config
        model = self.state.model.clone().attach(build_graph(residual.train))   # composes: from the last result
        for p in model.parameters():
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr or self.run.train.lr)
        rng = np.random.default_rng(cfg.seed)
        # The triples are built here, not drawn through `sampling.bpr_epoch`: ascending on a forgotten edge is
        # not training on it as a positive, and `bpr_epoch` stays the one source of training positives that
        # the conformance suite watches.
        losses = []                              # the forget set's BPR before each step
        for users, items, negatives in forget_triples(edges, self.state.dataset.train, rng, cfg.batch_size,
                                                      cfg.steps):
            user_emb, item_emb = model.embed()
            loss = bpr_loss(user_emb[users], item_emb[items], item_emb[negatives])
            optimizer.zero_grad(set_to_none=True)
            (-loss).backward()                   # ascend
            optimizer.step()
            losses.append(loss.item())
        model.invalidate()
        model.eval()
        return self._result(model, residual, edges, model, steps=len(losses),
                            forget_bpr_first=losses[0] if losses else None, forget_bpr_last=losses[-1] if losses else None)
