"""VBPR (He & McAuley, AAAI 2016) without the bias terms, graph-free: score = γ_u·γ_i + θ_u·(E f_i), where f_i
concatenates the item's modality features and E is a learned linear map. The embedding table's user rows hold
[γ_u ; θ_u]; an item's row holds γ_i in its first half (its second half is unused)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..data.graph import Graph
from .modal import ContentConfig, ContentRecommender


class VBPRConfig(ContentConfig):
    name: Literal["vbpr"] = "vbpr"


class VBPR(ContentRecommender):
    config_class = VBPRConfig

    def __init__(self, config: VBPRConfig, n_users: int, n_items: int, features=None, withdrawn=None,
                 item_graph=None):
        super().__init__(config, n_users, n_items, features, withdrawn, item_graph)
        self.id_dim = config.dim - config.dim // 2 if self.modality_names else config.dim
        width = sum(self.feature(name).shape[1] for name in self.modality_names)
        self.projection = nn.Linear(width, config.dim - self.id_dim, bias=False) if width else None
        if self.projection is not None:
            nn.init.normal_(self.projection.weight, std=config.init_std / width ** 0.5)

    def _refresh(self, rebuild: bool = True) -> None:
        super()._refresh(rebuild=False)    # VBPR has no item-item graph

    def readout(self, e0: torch.Tensor, graph: Graph | None) -> torch.Tensor:
        if self.projection is None:
            return e0
        items = e0[self.n_users:, : self.id_dim]
        visual = self.projection(torch.cat([self.feature(name) for name in self.modality_names], dim=1))
        return torch.cat([e0[: self.n_users], torch.cat([items, visual], dim=1)])
