"""LightGCN (He et al., SIGIR 2020): E^l = Â E^{l-1}; final embedding = mean of E^0..E^L."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..data.graph import Graph, propagate_mean
from .base import ModelConfig, Recommender


class LightGCNConfig(ModelConfig):
    name: Literal["lightgcn"] = "lightgcn"
    layers: int = Field(3, ge=1, description="propagation layers (no layer at all is MF: model.name=mf)")


class LightGCN(Recommender):
    config_class = LightGCNConfig

    def readout(self, e0: torch.Tensor, graph: Graph | None) -> torch.Tensor:
        if graph is None:
            raise ValueError("LightGCN needs a graph: call attach(graph) or pass one")
        return propagate_mean(graph.adj, e0, self.config.layers)
