"""A FREEDOM / LATTICE-style multi-modal graph recommender (Zhou & Shen, MM 2023; Zhang et al., MM 2021).

Items get two parts: their ID embedding propagated over the user-item graph (LightGCN), and their ID embedding
propagated over the frozen kNN item-item graph built from the modalities' features (FREEDOM), optionally with
their projected content added before that propagation (`content_in_graph`, LATTICE-like). Users are LightGCN
embeddings. Score = inner product. Loss: BPR + L2 + FREEDOM's modality BPR term, which aligns users with the
projected content (one linear projection per modality) of their items.

The defaults (3 + 2 layers, content not added to the propagated IDs) were chosen on tiktok's validation split.

With `modalities: []` the model has no content and is LightGCN.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..data.graph import Graph, propagate_mean, spmm
from .base import bpr_loss
from .modal import ContentConfig, ContentRecommender


class FreedomConfig(ContentConfig):
    name: Literal["freedom"] = "freedom"
    layers: int = Field(3, ge=1, description="propagation layers over the user-item graph")
    item_layers: int = Field(2, ge=1, description="propagation layers over the item-item graph")
    content_weight: float = Field(0.01, ge=0, description="weight of the modality BPR term (FREEDOM's "
                                                          "reg_weight on the per-modality BPR losses)")
    content_in_graph: bool = Field(False, description="the projected content joins the ID embeddings propagated over "
                                                     "the item-item graph (False: IDs only, as FREEDOM)")


class Freedom(ContentRecommender):
    config_class = FreedomConfig

    def __init__(self, config: FreedomConfig, n_users: int, n_items: int, features=None, withdrawn=None,
                 item_graph=None):
        super().__init__(config, n_users, n_items, features, withdrawn, item_graph)
        self.projections = nn.ModuleDict({
            name: nn.Linear(self.feature(name).shape[1], config.dim, bias=False) for name in self.modality_names})
        for layer in self.projections.values():
            nn.init.xavier_uniform_(layer.weight)
        self._users_final: torch.Tensor | None = None

    def content(self) -> dict[str, torch.Tensor]:
        """Each modality's projected features [n_items, d] (withdrawn rows are zeros, so project to zero)."""
        return {name: proj(self.feature(name)) for name, proj in self.projections.items()}

    def readout(self, e0: torch.Tensor, graph: Graph | None) -> torch.Tensor:
        if graph is None:
            raise ValueError("freedom needs a graph: call attach(graph) or pass one")
        final = propagate_mean(graph.adj, e0, self.config.layers)
        item_graph = self.item_graph()
        if item_graph is None:
            return final
        h = e0[self.n_users:]
        if self.config.content_in_graph:
            content = self.content()
            h = h + sum(content.values()) / len(content)
        for _ in range(self.config.item_layers):
            h = spmm(item_graph, h)
        return torch.cat([final[: self.n_users], final[self.n_users:] + h])

    def extra_loss(self, batch, graph: Graph | None, e0: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.item_graph() is None or self.config.content_weight == 0 or self._users_final is None:
            return {}
        users, pos, neg = batch
        u = self._users_final      # the batch's final user embeddings, set by loss_terms
        term = sum(bpr_loss(u[users], c[pos], c[neg]) for c in self.content().values())
        return {"content": self.config.content_weight * term}

    def loss_terms(self, batch, final, e0, graph=None):
        self._users_final = final[: self.n_users]
        try:
            return super().loss_terms(batch, final, e0, graph)
        finally:
            self._users_final = None
