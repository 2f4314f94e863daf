"""SimGCL (Yu et al., SIGIR 2022): contrast two views made by adding small random noise at every layer.

Final embeddings average layers 1..L (SimGCL leaves E^0 out of the readout).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..data.graph import Graph, spmm
from .base import ModelConfig, Recommender, info_nce


class SimGCLConfig(ModelConfig):
    name: Literal["simgcl"] = "simgcl"
    layers: int = 3
    eps: float = 0.1           # noise magnitude
    ssl_temp: float = 0.2
    ssl_weight: float = 0.2


class SimGCL(Recommender):
    config_class = SimGCLConfig

    def readout(self, e0: torch.Tensor, graph: Graph | None, noisy: bool = False) -> torch.Tensor:
        if graph is None:
            raise ValueError("SimGCL needs a graph: call attach(graph) or pass one")
        layers, e = [], e0
        for _ in range(self.config.layers):
            e = spmm(graph.adj, e)
            if noisy:
                noise = F.normalize(torch.rand_like(e), dim=-1)
                e = e + torch.sign(e) * noise * self.config.eps
            layers.append(e)
        return torch.stack(layers).mean(0)

    def extra_loss(self, batch, graph: Graph | None, e0: torch.Tensor) -> dict[str, torch.Tensor]:
        users, pos, _ = batch
        v1 = self.readout(e0, graph, noisy=True)
        v2 = self.readout(e0, graph, noisy=True)
        uu, ii = torch.unique(users), torch.unique(pos) + self.n_users
        ssl = info_nce(v1[uu], v2[uu], self.config.ssl_temp) + info_nce(v1[ii], v2[ii], self.config.ssl_temp)
        return {"ssl": self.config.ssl_weight * ssl}
