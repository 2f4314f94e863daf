"""LightGCN (He et al., SIGIR 2020): E^l = Â E^{l-1}; final embedding = mean of E^0..E^L."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..data.graph import Graph, spmm
from .base import ModelConfig, Recommender


class LightGCNConfig(ModelConfig):
    name: Literal["lightgcn"] = "lightgcn"
    layers: int = Field(3, ge=1, description="propagation layers (no layer at all is MF: model.name=mf)")


def layer_stack(e0: torch.Tensor, adj: torch.Tensor, layers: int) -> list[torch.Tensor]:
    out = [e0]
    for _ in range(layers):
        out.append(spmm(adj, out[-1]))
    return out


class LightGCN(Recommender):
    config_class = LightGCNConfig

    def readout(self, e0: torch.Tensor, graph: Graph | None) -> torch.Tensor:
        if graph is None:
            raise ValueError("LightGCN needs a graph: call attach(graph) or pass one")
        return torch.stack(layer_stack(e0, graph.adj, self.config.layers)).mean(0)
