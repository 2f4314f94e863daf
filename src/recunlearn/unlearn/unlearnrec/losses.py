"""UnlearnRec's loss terms: the backbone's model loss L_M, the unlearning loss L_u, the preserving loss L_p
and the encoder's contrastive regularisation L_c."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...data.graph import EdgeIndex, Graph, edge_scores, spmm
from ...models.base import Recommender, bpr_loss, l2_term


def model_loss(backbone: Recommender, batch, user_emb, item_emb, e0: torch.Tensor, reg_e0: torch.Tensor,
               graph: Graph) -> dict[str, torch.Tensor]:
    """L_M: the backbone's BPR + L2 (+ its self-supervised term, computed from the shifted `e0`).

    The L2 term is taken on `reg_e0`, which may differ from `e0`: the authors regularise the backbone's own
    (frozen) parameters, so their L2 sends no gradient into the encoder (`IEConfig.reg_target`)."""
    users, pos, neg = batch
    n = backbone.n_users
    terms = {"bpr": bpr_loss(user_emb[users], item_emb[pos], item_emb[neg]),
             "reg": backbone.config.reg * l2_term(reg_e0[users], reg_e0[n + pos], reg_e0[n + neg])}
    terms.update(backbone.extra_loss(batch, graph, e0))
    return terms


def unlearning_loss(user_emb, item_emb, edges: EdgeIndex) -> torch.Tensor:
    """L_u = −mean log σ(−ŷ_ui) over all request edges."""
    return F.softplus(edge_scores(user_emb, item_emb, edges)).mean()


def preserving_loss(user_emb, item_emb, orig_user, orig_item, users, pos, tau: float, pairs: int) -> torch.Tensor:
    """L_p = Σ_b (ℓ_b^new − ℓ_b^orig)²: keep each positive pair's in-batch softmax score ℓ_b (over the positive
    items of the pairs) where the original model has it.

    The authors sum over their whole batch of `pairs` (1024) pairs. A larger CPU batch is already shuffled, so
    its first `pairs` pairs are such a batch: L_p keeps the authors' scale against the mean-reduced L_M and L_u
    at any batch size (a sum over all B pairs would weigh B / `pairs` times more), at O(pairs²) cost."""
    users, pos = users[:pairs], pos[:pairs]
    new = _in_batch_log_softmax(user_emb, item_emb, users, pos, tau)
    with torch.no_grad():
        old = _in_batch_log_softmax(orig_user, orig_item, users, pos, tau)
    return (new - old).pow(2).sum()


def _in_batch_log_softmax(user_emb, item_emb, users, pos, tau: float) -> torch.Tensor:
    logits = (user_emb[users] / tau) @ item_emb[pos].T     # scale the [B, d] side, not the [B, B] logits
    return torch.diagonal(F.log_softmax(logits, dim=1))


def contrastive_loss(hs: list[torch.Tensor], views: list[torch.Tensor], nodes: list[torch.Tensor],
                     tau: float) -> torch.Tensor:
    """L_c: for each IE layer l, InfoNCE between H^l (stop-gradient) and H'^l = Â'_Δ H^{l-1}, where
    `views[l-1]` is that layer's own edge-dropped IDM; over each node set of `nodes` (users, items) apart."""
    total = hs[0].new_zeros(())
    for layer, view in enumerate(views, start=1):
        anchor = hs[layer].detach()
        other = spmm(view, hs[layer - 1])
        for subset in nodes:
            total = total + _info_nce(anchor[subset], other[subset], tau)
    return total


def _info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE with cosine similarity: row k of `a` should match row k of `b` among all rows of `b`."""
    a, b = F.normalize(a, dim=-1) / tau, F.normalize(b, dim=-1)
    return F.cross_entropy(a @ b.T, torch.arange(a.shape[0]))


def contrast_nodes(users: np.ndarray, pos: np.ndarray, n_users: int, limit: int,
                   rng: np.random.Generator) -> list[torch.Tensor]:
    """The batch's unique users and unique items (as node ids), each cut to a random `limit` of them."""
    sets = []
    for ids, offset in ((np.unique(users), 0), (np.unique(pos), n_users)):
        if ids.size > limit:
            ids = np.sort(rng.choice(ids, size=limit, replace=False))
        sets.append(torch.from_numpy(ids + offset))
    return sets
