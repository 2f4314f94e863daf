"""The Recommender contract shared by every backbone, and the BPR / L2 / InfoNCE loss terms."""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..config import StrictConfig
from ..data.graph import Graph


class ModelConfig(StrictConfig):
    """Fields every backbone has. Defaults follow each model's paper (d = 64, L = 3)."""

    name: str
    dim: int = Field(64, ge=1, description="embedding size")
    reg: float = Field(1e-4, ge=0, description="L2 on the batch's 0-layer embeddings, LightGCN style")
    init_std: float = Field(0.1, gt=0, description="std of the normal init of the embedding tables "
                                                   "(LightGCN's default)")


class Recommender(nn.Module):
    """A graph (or MF) recommender: 0-layer embeddings E₀ and a readout over a normalised adjacency.

    `embed(graph)` gives final (U, I); scores are dot products. `graph=None` means the graph the model
    was fitted on (set by `attach`).
    """

    config_class: ClassVar[type[ModelConfig]]

    def __init__(self, config: ModelConfig, n_users: int, n_items: int):
        super().__init__()
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.embedding = nn.Embedding(n_users + n_items, config.dim)
        nn.init.normal_(self.embedding.weight, std=config.init_std)
        self.graph: Graph | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- graph and readout -------------------------------------------------------------------
    def attach(self, graph: Graph) -> "Recommender":
        if (graph.n_users, graph.n_items) != (self.n_users, self.n_items):
            raise ValueError(f"graph has {graph.n_users} users / {graph.n_items} items, model "
                             f"{self.n_users} / {self.n_items}")
        self.graph = graph
        self._cache = None
        return self

    def move_to(self, device: torch.device | str) -> "Recommender":
        """Parameters, buffers and the attached graph on `device`: the trainer fits on a GPU this way and brings
        the fitted model back to the CPU."""
        self.to(device)
        if self.graph is not None:
            self.attach(self.graph.to(device))
        self._cache = None
        return self

    def readout(self, e0: torch.Tensor, graph: Graph | None) -> torch.Tensor:
        """Final node embeddings from 0-layer embeddings [N, d]. Overridden by graph backbones."""
        return e0

    def embed(self, graph: Graph | None = None, e0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        final = self.readout(self.embedding.weight if e0 is None else e0, graph or self.graph)
        return final[: self.n_users], final[self.n_users:]

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached, gradient-free final embeddings on the attached graph (for scoring)."""
        if self._cache is None or self.training:
            with torch.no_grad():
                self._cache = self.embed()
        return self._cache

    def invalidate(self) -> None:
        self._cache = None

    @torch.no_grad()
    def reinitialise(self, nodes: torch.Tensor, generator: torch.Generator) -> None:
        """Draw the 0-layer rows of `nodes` (users, then items offset by n_users) afresh from the initial
        distribution: what a model trained without any of their interactions holds for them."""
        fresh = torch.randn(len(nodes), self.config.dim, generator=generator) * self.config.init_std
        self.embedding.weight[nodes] = fresh.to(self.embedding.weight)
        self._cache = None

    def clone(self) -> "Recommender":
        """An independent copy of the weights; the (immutable) graph is shared, not copied."""
        other = type(self)(self.config.model_copy(), self.n_users, self.n_items)
        other.load_state_dict({k: v.detach().clone() for k, v in self.state_dict().items()})
        if self.graph is not None:
            other.attach(self.graph)
        other.train(self.training)
        return other

    def __deepcopy__(self, memo) -> "Recommender":
        return self.clone()

    # --- training ----------------------------------------------------------------------------
    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], graph: Graph | None = None,
             e0: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BPR + L2 (+ the backbone's self-supervised term). Returns (total, {name: term})."""
        e0 = self.embedding.weight if e0 is None else e0
        return self.loss_terms(batch, self.readout(e0, graph or self.graph), e0, graph)

    def loss_terms(self, batch, final: torch.Tensor, e0: torch.Tensor,
                   graph: Graph | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss from the final embeddings [n_users + n_items, d] already computed (callers that also need
        them save a readout). `final` and `e0` are each indexed once for the whole batch: each index's backward
        scatters into a zeroed [N, d] gradient, so one lookup per user, positive and negative cost three."""
        users, pos, neg = batch
        rows = torch.cat([users, self.n_users + pos, self.n_users + neg])
        bpr = bpr_loss(*final[rows].split(users.numel()))
        reg = self.config.reg * l2_term(*e0[rows].split(users.numel()))
        terms = {"bpr": bpr, "reg": reg}
        terms.update(self.extra_loss(batch, graph or self.graph, e0))
        return sum(terms.values()), terms

    def extra_loss(self, batch, graph: Graph | None, e0: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def start_epoch(self, generator: torch.Generator) -> None:
        """Hook for per-epoch state (SGL redraws its edge-dropout views here)."""

    # --- inference: the Scorer protocol ------------------------------------------------------
    def score(self, users: torch.Tensor, graph: Graph | None = None) -> torch.Tensor:
        """Scores [len(users), n_items]; `graph=None` scores on the attached graph (cached readout)."""
        if graph is None:
            u, i = self.final_embeddings()
        else:
            with torch.no_grad():
                u, i = self.embed(graph)
        return u[users] @ i.T

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.score(users)

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u, i = self.final_embeddings()
        return (u[users] * i[items]).sum(-1)


def bpr_loss(u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return F.softplus(-((u * pos).sum(-1) - (u * neg).sum(-1))).mean()


def l2_term(*embs: torch.Tensor) -> torch.Tensor:
    return sum(e.pow(2).sum() for e in embs) / (2 * embs[0].shape[0])


def batch_info_nce(pairs, batch_size: int, temperature: float) -> torch.Tensor:
    """InfoNCE summed over the rows of each (view 1, view 2) pair, divided by the batch size.

    SGL and SimGCL sum both BPR and InfoNCE over the batch (loss = Σ bpr + λ Σ_{unique u, i} nce). BPR is a
    batch mean here, so the InfoNCE sum is divided by the batch size too. Averaging it over the unique
    nodes instead would scale λ by B / n_unique: about 3x (B = 2048) to 9x (B = 8192) on ml-100k, strong
    enough to keep the BPR term at log 2 for whole epochs."""
    return sum(a.shape[0] * info_nce(a, b, temperature) for a, b in pairs) / batch_size


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with cosine similarity: row k of `a` should match row k of `b` among all rows of `b`."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=logits.device))
