"""The Influence Encoder: the request's influence dependency matrix (IDM) Â_Δ, and the module that turns it
into a shift of the backbone's 0-layer embeddings (docs/unlearnrec.md has the formulas)."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from ...config import StrictConfig
from ...data.graph import EdgeIndex, bipartite_csr, edge_norm, normalized_adjacency, spmm
from ...data.interactions import Interactions


class IEConfig(StrictConfig):
    """UnlearnRec's settings: the paper's values where it has one; docs/unlearnrec.md lists every other default
    and how it was chosen."""

    # --- the encoder ---
    layers: int | None = Field(None, ge=1, description="IE propagation layers L (default: the backbone's layers)")
    mlp_layers: int = Field(2, ge=1, description="K identity-initialised MLP layers")
    leaky_slope: float = Field(0.99, description="LeakyReLU negative slope of the MLP")
    withdraw_init: float = Field(0.002, description="initial per-node withdraw rate W_η when withdraw_calibration "
                                                    "is 'none'; otherwise the start of the calibration search")
    gamma: float = Field(0.1, ge=0, description="withdraw strength γ")
    withdraw_calibration: Literal["validation", "none"] = Field(
        "validation", description="before pre-training, set the initial W_η (one value for every node) so that on a "
                                  "held-out simulated request the zero-shot model ranks the request edges against "
                                  "validation edges at chance (AUC 0.5; validation), or start from `withdraw_init` "
                                  "(none)")
    withdraw_scaling: Literal["none", "request"] = Field(
        "none", description="none: every request uses the prepared W_η (the paper). request: preparation also finds, "
                            "on held-out probes, the factor on W_η at which a model forgets like one that never saw "
                            "the probe (random probes of `scaling_probe_sizes`; a probe of whole users' histories), "
                            "and each request takes the factor of its size and shape")
    scaling_probe_sizes: tuple[float, ...] = Field(
        (0.2, 1.0, 5.0), min_length=1, description="sizes of the random scaling probes, as multiples of probe_rho")
    scaling_max: float = Field(4.0, ge=1, description="the largest factor on W_η the scaling search tries")
    idm_norm: Literal["request", "graph"] = Field(
        "request", description="degrees that normalise Â_Δ: the request's own (the paper's D_Δ; an isolated request "
                               "edge then weighs 1 and an edge of a user's whole history 1/sqrt(d_u d_i^Δ), so the "
                               "withdraw strength per edge depends on the request's size and shape) or the training "
                               "graph's before the request (graph: each edge weighs what it weighed in Â)")
    reset_erased_users: bool = Field(
        True, description="users left without any training edge get fresh 0-layer rows from the backbone's initial "
                          "distribution, which is what a retrained model holds for them (a user without positives is "
                          "never in a training batch); false: the encoder's output for them, as in the paper")
    h0_scope: Literal["all", "request"] = Field(
        "all", description="nodes whose H⁰ enters H̄: all (the paper's Σ_{l=0..L} H^l) or only the request's")
    sequential: Literal["compose", "cumulative"] = Field(
        "cumulative", description="a later request: compose (encode it alone from the current state, as the paper "
                                  "states) or cumulative (encode all requests since the last fine-tuning together, "
                                  "from the state the encoder last started from: shifts never stack)")
    # --- pre-training ---
    epochs: int = Field(10, ge=1, description="pre-training epochs over the residual edges (the authors run hundreds)")
    sim_every: int = Field(5, ge=1, description="epochs between fresh simulated requests")
    sim_rho: float = Field(0.1, gt=0, lt=1, description="fraction of training edges per simulated request")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate of H⁰ and W_η")
    batch_size: int = Field(8192, ge=1, description="BPR triples per step, pre-training and fine-tuning (authors: "
                                                     "512 or 1024; larger batches make CPU epochs cheap)")
    lambda_u: float = Field(0.5, description="weight of the unlearning loss L_u")
    lambda_p: float = Field(0.02, description="weight of the preserving loss L_p")
    lambda_c: float = Field(1e-3, description="weight of the encoder's contrastive loss L_c")
    tau_p: float = Field(1.0, gt=0, description="temperature of L_p's in-batch softmax")
    preserve_batch_ref: int = Field(
        1024, ge=2, description="the authors' batch size for L_p: L_p is their sum over this many pairs (the first "
                                "of each shuffled batch), so λ_p weighs as in their runs at any batch size")
    reg_target: Literal["backbone", "shifted"] = Field(
        "backbone", description="what L_M's L2 term regularises: the backbone's own E₀ (the authors': no gradient "
                                "into H⁰ or W_η; the trainable E₀ copy when fine-tuning) or the shifted Ẽ₀")
    tau_c: float = Field(1.0, gt=0, description="temperature of L_c")
    contrast_drop: float = Field(0.05, ge=0, lt=1, description="IDM edge drop of L_c's view, redrawn per IE layer")
    contrast_nodes: int = Field(256, ge=2, description="at most this many unique users and, separately, items "
                                                        "of a batch enter L_c (a random subset): its cost is "
                                                        "quadratic in the nodes")
    probe_rho: float = Field(0.01, gt=0, lt=1, description="fraction of training edges in the held-out simulated "
                                                        "requests that selection and withdraw calibration look at")
    select_every: int = Field(5, ge=1, description="epochs between checks on the held-out simulated request")
    select_recall_tolerance: float = Field(
        0.01, ge=0, lt=1, description="selection considers the checks whose validation Recall@20 is within this "
                                      "fraction of the best check's")
    seed: int = Field(0, description="seed of the simulated requests, the held-out probes and fine-tuning")
    # --- requests ---
    finetune_epochs: float = Field(0.0, ge=0, description="fine-tuning epochs after the zero-shot step "
                                                         "(fractions run part of a shuffled pass; 0: zero-shot; "
                                                         "paper: 1)")
    finetune_lr: float = Field(1e-4, gt=0, description="Adam learning rate of the per-request E₀ and MLP copies")
    finetune_lambda_u: float = Field(0.2, description="λ_u when fine-tuning")
    finetune_lambda_p: float = Field(0.01, description="λ_p when fine-tuning")
    finetune_tau_p: float = Field(10.0, gt=0, description="τ_p when fine-tuning")

    @model_validator(mode="after")
    def _scaling_probes_fit(self) -> "IEConfig":
        outside = [size for size in self.scaling_probe_sizes if not 0 < size * self.probe_rho < 1]
        if outside:
            raise ValueError(f"scaling_probe_sizes {outside} times probe_rho {self.probe_rho} must lie strictly between "
                             "0 and 1 (each is a fraction of the training edges): use smaller multiples")
        return self


# Read only when a request arrives: configs differing only here share one pre-trained encoder.
REQUEST_TIME_FIELDS = frozenset({"sequential", "reset_erased_users", "finetune_epochs", "finetune_lr", "finetune_lambda_u", "finetune_lambda_p",
                                 "finetune_tau_p"})


def influence_matrix(edges: Interactions, values: np.ndarray | None = None) -> torch.Tensor:
    """Â_Δ: the bipartite adjacency of the request edges alone (2|E_Δ| non-zeros), with `values` per edge
    (default: normalised by the request's own degrees, `idm_values(edges)`)."""
    if values is None:
        return normalized_adjacency(edges.users, edges.items, edges.n_users, edges.n_items)
    return bipartite_csr(edges.users, edges.items, values, edges.n_users, edges.n_items)


def dropped_influence_matrix(idm: torch.Tensor, edges: EdgeIndex, drop: float,
                             rng: np.random.Generator) -> torch.Tensor:
    """Â'_Δ: each edge of the IDM `idm` (a bipartite CSR over `edges`, as `influence_matrix` builds it) dropped
    with probability `drop`, kept values rescaled by 1/(1-drop), so that the view keeps Â_Δ's normalisation.

    A dropped edge stays in the pattern with the value 0: products come out the same as without it, and the
    view reuses Â_Δ's indices instead of building and sorting new ones for every view."""
    keep = torch.from_numpy(rng.random(edges.item_order.numel()) >= drop).float() / (1.0 - drop)
    values = idm.values() * torch.cat([keep, keep[edges.item_order]])
    return torch.sparse_csr_tensor(idm.crow_indices(), idm.col_indices(), values, size=idm.shape,
                                   check_invariants=False)


def idm_values(edges: Interactions, residual: Interactions | None = None) -> np.ndarray:
    """Â_Δ's value of each request edge: 1/sqrt(d_u d_i) with the request's own degrees, or, given the
    residual edges, with the degrees of the graph before the request (residual + request)."""
    if residual is None:
        return edge_norm(edges.users, edges.items, edges.n_users, edges.n_items)
    deg_u = np.bincount(residual.users, minlength=edges.n_users) + np.bincount(edges.users, minlength=edges.n_users)
    deg_i = np.bincount(residual.items, minlength=edges.n_items) + np.bincount(edges.items, minlength=edges.n_items)
    return (1.0 / np.sqrt(deg_u[edges.users] * deg_i[edges.items].astype(np.float64))).astype(np.float32)


class InfluenceEncoder(nn.Module):
    """H⁰ [N, d] (init 0), withdraw rates W_η [N, 1] and an identity-initialised K-layer MLP; γ fixed."""

    def __init__(self, n_nodes: int, dim: int, layers: int, cfg: IEConfig):
        super().__init__()
        self.layers, self.h0_scope, self.gamma = layers, cfg.h0_scope, cfg.gamma
        self.h0 = nn.Parameter(torch.zeros(n_nodes, dim))
        self.withdraw = nn.Parameter(torch.full((n_nodes, 1), cfg.withdraw_init))
        self.mlp = nn.ModuleList(nn.Linear(dim, dim) for _ in range(cfg.mlp_layers))
        for layer in self.mlp:
            nn.init.eye_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.act = nn.LeakyReLU(cfg.leaky_slope)

    def propagate(self, idm: torch.Tensor) -> list[torch.Tensor]:
        """H^0..H^L with H^l = Â_Δ H^{l-1}."""
        hs = [self.h0]
        for _ in range(self.layers):
            hs.append(spmm(idm, hs[-1]))
        return hs

    def shift(self, idm: torch.Tensor, final_emb: torch.Tensor, hs: list[torch.Tensor] | None = None,
              scale: float = 1.0) -> torch.Tensor:
        """ΔE = Σ_l H^l − γ E_w^L, with E_w^0 = Ē ⊙ (scale · W_η) propagated L times over Â_Δ."""
        hs = hs if hs is not None else self.propagate(idm)
        ew = final_emb * (scale * self.withdraw)
        for _ in range(self.layers):
            ew = spmm(idm, ew)
        h0 = hs[0]
        if self.h0_scope == "request":   # untouched nodes keep their embedding: shifts cannot compound
            h0 = h0 * (idm.crow_indices().diff() > 0).unsqueeze(1)
        return h0 + torch.stack(hs[1:]).sum(0) - self.gamma * ew

    def transform(self, delta: torch.Tensor, mlp: nn.ModuleList | None = None) -> torch.Tensor:
        """MLP(ΔE); `mlp` replaces the encoder's own (fine-tuning trains a per-request copy)."""
        for layer in (self.mlp if mlp is None else mlp):
            delta = self.act(layer(delta))
        return delta

    def forward(self, e0: torch.Tensor, final_emb: torch.Tensor, idm: torch.Tensor,
                hs: list[torch.Tensor] | None = None, scale: float = 1.0) -> torch.Tensor:
        """Ẽ₀ = E₀ + MLP(ΔE), the withdraw rates multiplied by `scale`."""
        return e0 + self.transform(self.shift(idm, final_emb, hs, scale))
