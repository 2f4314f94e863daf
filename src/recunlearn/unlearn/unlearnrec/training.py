"""The encoder's two training loops: pre-training of H⁰ and W_η on simulated requests, and the optional
fine-tuning of a per-request copy of E₀ and the MLP on a real request.

Both draw their (user, positive, negative) triples from the residual edges through `sampling.bpr_epoch`:
a request's edges are never fed back as positives."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...data import sampling
from ...data.graph import EdgeIndex, Graph, build_graph
from ...data.interactions import Interactions
from ...models.base import Recommender
from .encoder import IEConfig, InfluenceEncoder, dropped_influence_matrix, idm_values, influence_matrix
from .losses import contrast_nodes, contrastive_loss, model_loss, preserving_loss, unlearning_loss


@dataclass(frozen=True)
class EncoderInputs:
    """What the encoder shifts: E₀ and Ē of the model it starts from, and the requests already encoded from
    them (`pending`, under the cumulative sequential rule)."""

    e0: torch.Tensor
    final: torch.Tensor
    pending: Interactions


@dataclass(frozen=True)
class Episode:
    """A request (simulated or real) with its IDM Â_Δ, its edges indexed for scoring (`index`), and the residual
    graph Â_r."""

    edges: Interactions
    residual: Interactions
    graph: Graph
    idm: torch.Tensor
    index: EdgeIndex

    @classmethod
    def of(cls, edges: Interactions, residual: Interactions, idm_norm: str = "request") -> "Episode":
        """`idm_norm`: IEConfig.idm_norm, the degrees that normalise Â_Δ."""
        values = idm_values(edges, residual if idm_norm == "graph" else None)
        return cls(edges, residual, build_graph(residual), influence_matrix(edges, values), EdgeIndex.of(edges))


def simulated_request(train: Interactions, rho: float, rng: np.random.Generator) -> Interactions:
    """A random `rho` of the training edges (at least one)."""
    mask = np.zeros(len(train), dtype=bool)
    mask[rng.choice(len(train), size=max(1, round(rho * len(train))), replace=False)] = True
    return train.select(mask)


def _batches(residual: Interactions, rng: np.random.Generator, batch_size: int, fraction: float = 1.0):
    """`fraction` of one shuffled BPR pass over the residual edges, as torch tensors (numpy kept for L_c)."""
    edges = min(len(residual), max(1, math.ceil(fraction * len(residual) / batch_size)) * batch_size)
    for users, pos, neg in sampling.bpr_epoch(residual, rng, batch_size, edges=edges):
        yield (users, pos), tuple(torch.from_numpy(a) for a in (users, pos, neg))


def _request_terms(backbone: Recommender, inputs: EncoderInputs, episode: Episode, batch, e0, reg_e0, *,
                   lambda_u: float, lambda_p: float, tau_p: float, pairs: int):
    """L_M + λ_u L_u + λ_p L_p for the shifted `e0`, as {name: term}; L_u over the episode's request edges."""
    user_emb, item_emb = backbone.embed(episode.graph, e0)
    terms = model_loss(backbone, batch, user_emb, item_emb, e0, reg_e0, episode.graph)
    n = backbone.n_users
    terms["unlearn"] = lambda_u * unlearning_loss(user_emb, item_emb, episode.index)
    terms["preserve"] = lambda_p * preserving_loss(user_emb, item_emb, inputs.final[:n], inputs.final[n:],
                                                   batch[0], batch[1], tau_p, pairs)
    return terms


def pretraining_loss(encoder: InfluenceEncoder, backbone: Recommender, inputs: EncoderInputs, episode: Episode,
                     batch_np, batch, cfg: IEConfig, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """The terms of L = L_M + λ_u L_u + λ_p L_p + λ_c L_c for one batch, through the encoder."""
    hs = encoder.propagate(episode.idm)
    e0 = encoder(inputs.e0, inputs.final, episode.idm, hs)
    reg_e0 = e0 if cfg.reg_target == "shifted" else inputs.e0
    terms = _request_terms(backbone, inputs, episode, batch, e0, reg_e0, lambda_u=cfg.lambda_u,
                           lambda_p=cfg.lambda_p, tau_p=cfg.tau_p, pairs=cfg.preserve_batch_ref)
    if cfg.lambda_c > 0:
        # The authors redraw the view's edge drop for every IE layer.
        views = [dropped_influence_matrix(episode.idm, episode.index, cfg.contrast_drop, rng)
                 for _ in range(encoder.layers)]
        nodes = contrast_nodes(*batch_np, backbone.n_users, cfg.contrast_nodes, rng)
        terms["contrast"] = cfg.lambda_c * contrastive_loss(hs, views, nodes, cfg.tau_c)
    return terms


def pretrain_epoch(encoder: InfluenceEncoder, backbone: Recommender, inputs: EncoderInputs, episode: Episode,
                   optimizer: torch.optim.Optimizer, cfg: IEConfig, rng: np.random.Generator,
                   views: torch.Generator) -> float:
    """One pass over the episode's residual edges (the backbone must be attached to its residual graph, so
    that the backbone's own self-supervised views come from it); returns the mean batch loss."""
    backbone.start_epoch(views)
    total, count = 0.0, 0
    for batch_np, batch in _batches(episode.residual, rng, cfg.batch_size):
        loss = sum(pretraining_loss(encoder, backbone, inputs, episode, batch_np, batch, cfg, rng).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item(), count + 1
    return total / count


def finetune(encoder: InfluenceEncoder, backbone: Recommender, inputs: EncoderInputs, episode: Episode,
             cfg: IEConfig, seed: int | list[int], scale: float = 1.0) -> torch.Tensor:
    """Ẽ₀ after fine-tuning a fresh copy of E₀ and of the MLP on the request (H⁰, W_η, γ and the backbone
    frozen, W_η multiplied by `scale`); the shared encoder is left untouched, so every later request starts from
    the pre-trained one.

    With H⁰, W_η and γ frozen the shift ΔE is a constant: it is computed once."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        delta = encoder.shift(episode.idm, inputs.final, scale=scale)
    e0 = nn.Parameter(inputs.e0.detach().clone())
    mlp = copy.deepcopy(encoder.mlp).requires_grad_(True)
    optimizer = torch.optim.Adam([e0, *mlp.parameters()], lr=cfg.finetune_lr)
    views = torch.Generator().manual_seed(int(rng.integers(2**62)))
    backbone.attach(episode.graph)
    full, rest = divmod(cfg.finetune_epochs, 1.0)
    for fraction in [1.0] * int(full) + ([rest] if rest > 0 else []):
        backbone.start_epoch(views)
        for _, batch in _batches(episode.residual, rng, cfg.batch_size, fraction):
            shifted = e0 + encoder.transform(delta, mlp)
            reg_e0 = shifted if cfg.reg_target == "shifted" else e0
            terms = _request_terms(backbone, inputs, episode, batch, shifted, reg_e0,
                                   lambda_u=cfg.finetune_lambda_u, lambda_p=cfg.finetune_lambda_p,
                                   tau_p=cfg.finetune_tau_p, pairs=cfg.preserve_batch_ref)
            optimizer.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            optimizer.step()
    with torch.no_grad():
        return e0 + encoder.transform(delta, mlp)
