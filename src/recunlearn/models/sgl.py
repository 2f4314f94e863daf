"""SGL-ED (Wu et al., SIGIR 2021): LightGCN plus InfoNCE between two edge-dropout views.

The two views are redrawn every epoch and re-normalised (a dropped graph is a graph of its own).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..data.graph import Graph, normalized_adjacency
from .base import batch_info_nce
from .lightgcn import LightGCN, LightGCNConfig


class SGLConfig(LightGCNConfig):
    name: Literal["sgl"] = "sgl"
    drop_ratio: float = Field(0.1, ge=0, lt=1, description="edge dropout probability per view")
    ssl_temp: float = Field(0.2, gt=0, description="InfoNCE temperature")
    ssl_weight: float = Field(0.1, ge=0, description="weight of the InfoNCE term")


class SGL(LightGCN):
    config_class = SGLConfig

    def __init__(self, config: SGLConfig, n_users: int, n_items: int):
        super().__init__(config, n_users, n_items)
        self.views: tuple[Graph, Graph] | None = None

    def attach(self, graph: Graph) -> "SGL":
        super().attach(graph)
        self.views = None     # views of the previous graph may hold edges the new one lacks (deletions)
        return self

    def start_epoch(self, generator: torch.Generator) -> None:
        if self.graph is None:
            return
        self.views = tuple(self._dropped_view(generator) for _ in range(2))

    def _dropped_view(self, generator: torch.Generator) -> Graph:
        # the views are drawn on the CPU with the trainer's generator, whichever device the model trains on
        coo = self.graph.adj.to_sparse_coo().indices().cpu()
        rows, cols = coo[0], coo[1]
        user_side = rows < self.n_users   # each undirected edge once: (user, item) half
        users, items = rows[user_side], cols[user_side] - self.n_users
        keep = torch.rand(users.numel(), generator=generator) >= self.config.drop_ratio
        adj = normalized_adjacency(users[keep].numpy(), items[keep].numpy(), self.n_users, self.n_items)
        return Graph(adj.to(self.graph.adj.device), self.n_users, self.n_items, self.graph.source_hash,
                     self.graph.edges)

    def extra_loss(self, batch, graph: Graph | None, e0: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.views is None:
            return {}
        users, pos, _ = batch
        (u1, i1), (u2, i2) = (self.embed(view, e0) for view in self.views)
        uu, ii = torch.unique(users), torch.unique(pos)
        ssl = batch_info_nce([(u1[uu], u2[uu]), (i1[ii], i2[ii])], users.numel(), self.config.ssl_temp)
        return {"ssl": self.config.ssl_weight * ssl}
