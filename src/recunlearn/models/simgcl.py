"""SimGCL (Yu et al., SIGIR 2022): contrast two views made by adding small random noise at every layer.

Final embeddings average layers 0..L, as in LightGCN and in the SSLRec and RecBole-GNN implementations of
SimGCL. The SimGCL paper averages layers 1..L (`readout_e0=False`); on the dense MovieLens graphs that
readout trains poorly: the propagated layers of a random E^0 are small and nearly parallel
(over-smoothing), so the cosine InfoNCE gradient on E^0 dwarfs the BPR gradient and the BPR term stays at
log 2 (the measurements are in BENCHMARKS.md, section 1 "Quality").
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..data.graph import Graph, spmm
from .base import ModelConfig, Recommender, batch_info_nce


class SimGCLConfig(ModelConfig):
    name: Literal["simgcl"] = "simgcl"
    layers: int = Field(3, ge=1, description="propagation layers, each perturbed by noise")
    eps: float = Field(0.1, ge=0, description="noise magnitude")
    ssl_temp: float = Field(0.2, gt=0, description="InfoNCE temperature")
    ssl_weight: float = Field(0.2, ge=0, description="weight of the InfoNCE term")
    readout_e0: bool = True    # E^0 in the layer mean (False: the paper's layers 1..L)


def layer_mean(layers: list[torch.Tensor]) -> torch.Tensor:
    """The mean of the layer embeddings, by a running sum: `torch.stack(...).mean(0)` first copies every layer
    into one [L+1, N, d] tensor, forward and backward."""
    total = layers[0]
    for layer in layers[1:]:
        total = total + layer
    return total / len(layers)


class SimGCL(Recommender):
    config_class = SimGCLConfig

    def readout(self, e0: torch.Tensor, graph: Graph | None, noisy: bool = False) -> torch.Tensor:
        if graph is None:
            raise ValueError("SimGCL needs a graph: call attach(graph) or pass one")
        layers, e = ([e0] if self.config.readout_e0 else []), e0
        for _ in range(self.config.layers):
            e = spmm(graph.adj, e)
            if noisy:
                noise = F.normalize(torch.rand_like(e), dim=-1)
                e = e + torch.sign(e) * noise * self.config.eps
            layers.append(e)
        return layer_mean(layers)

    def extra_loss(self, batch, graph: Graph | None, e0: torch.Tensor) -> dict[str, torch.Tensor]:
        users, pos, _ = batch
        v1 = self.readout(e0, graph, noisy=True)
        v2 = self.readout(e0, graph, noisy=True)
        uu, ii = torch.unique(users), torch.unique(pos) + self.n_users
        ssl = batch_info_nce([(v1[uu], v2[uu]), (v1[ii], v2[ii])], users.numel(), self.config.ssl_temp)
        return {"ssl": self.config.ssl_weight * ssl}
