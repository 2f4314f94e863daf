"""Influence-function unlearning: IFRU / GIF (`influence`) and SCIF (`scif`), one influence step from the
current model towards the minimiser of the residual training loss, restricted to the E₀ rows a request touches.

Sign convention. The training objective is a sum over loss terms, one per training edge (u, i): the expected
per-triple loss over a uniform non-edge j of u (estimated by the mean over the negatives drawn), the term the
trainer averages over a batch (`models.base`: BPR softplus(−(s_ui − s_uj)) + reg/2 (‖e_u‖² + ‖e_i‖² + ‖e_j‖²)
on the 0-layer rows):

    L(θ)  = Σ_{(u,i) ∈ D}      E_{j ∉ N(u)}  ℓ(u, i, j; θ, G)     the current data D on its graph G
    L'(θ) = Σ_{(u,i) ∈ D \\ R}  E_{j ∉ N'(u)} ℓ(u, i, j; θ, G')    the residual data on the residual graph G'

    g  = ∇_θ [L(θ) − L'(θ)]
       = ∇_θ Σ_{R} E_j ℓ(·; G)                                the removed terms
       + ∇_θ Σ_{D \\ R} E_j [ℓ(·; G) − ℓ(·; G')]               the spill-over through the graph (IFRU / GIF)
       + the negative shift: forgotten items become possible negatives of their users (`negative_shift`)
    H  = ∇²_θ L(θ) + λI                                       (current loss, damping λ)
    θ' = θ + H⁻¹ g

At a minimiser θ of L, ∇L'(θ) = −g, so θ' is the Newton step on L' (the loss Retrain minimises) with L's
Hessian: the classic influence function, exact to first order in the removed terms. Removing a term moves θ
against that term's gradient (its loss rises: the forgotten pair's score falls). H is L's Hessian, positive
semi-definite at a minimiser of L; the residual loss's need not be (a removed term the model fits poorly
leaves a saddle behind). The Hessian only measures curvature: nothing is trained, and no triple is drawn
through `sampling.bpr_epoch`; the removed terms are built directly from the request.

Sampling: every current edge gets `negatives` uniform non-edges of its user in the current data (the
Hessian's terms, and the remaining ones among them for the spill-over, compared on both graphs with the same
negatives, and for the negative shift); every removed edge gets `removed_negatives`. Terms whose loss does not
depend on the moving rows (or, for the spill-over, on the graph change) are dropped exactly; `hessian_samples`
caps the Hessian's terms by a uniform subsample, reweighted so that the sum stays unbiased.

IFRU's pruning: only the E₀ rows of the nodes within `hops` of the request's endpoints move (SCIF: the
endpoints and their collaborative neighbours), so the solver works on a [k, d] block instead of all of E₀.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from tqdm.auto import tqdm

from ..config import StrictConfig
from ..data.graph import Graph, build_graph
from ..data.interactions import Dataset, Interactions
from ..data.sampling import sample_negatives
from ..models.base import Recommender
from .base import UnlearnResult, Unlearner
from .influence_math import Solution, conjugate_gradient, hessian_vector_product, largest_eigenvalue, lissa

POWER_ITERATIONS = 20      # for LiSSA's default scale
CHUNK = 1 << 18            # loss terms per backward pass of the removal gradient
DAMPING_GROWTH, DAMPING_RAISES = 10.0, 6   # λ's least growth after a failed solve, and how often it may grow


class InfluenceConfig(StrictConfig):
    solver: Literal["cg", "lissa"] = Field("cg", description="inverse-Hessian solver: conjugate gradient or LiSSA")
    damping: float = Field(0.1, gt=0, description="least λ added to the Hessian of the summed training loss; "
                           "raised (at least tenfold) while the solver meets non-positive curvature; the λ used is "
                           "reported")
    iterations: int = Field(100, ge=1, description="solver iterations at most (each one Hessian-vector product)")
    tolerance: float = Field(1e-3, gt=0, description="stop when ‖(H+λI)x − b‖ ≤ tolerance·‖b‖ (CG) or the series' "
                             "next term is ≤ tolerance·‖b‖ (LiSSA)")
    scale: float | None = Field(None, gt=0, description="LiSSA's scale (above the largest eigenvalue of H + λI); "
                                "default: 1.5 × a power-iteration estimate")
    region: Literal["hops", "collaborative"] = Field("hops", description="which E₀ rows move: the nodes within "
                                                     "`hops` of the request (IFRU), or its endpoints and their "
                                                     "collaborative neighbours (SCIF)")
    hops: int | None = Field(None, ge=0, description="radius of the `hops` region; default: the backbone's "
                             "propagation layers (0 for MF)")
    spillover: bool = Field(True, description="include the change of the remaining terms' loss through the "
                            "residual graph in g (IFRU / GIF)")
    negative_shift: bool = Field(True, description="include the change of the remaining terms' loss because the "
                                 "forgotten items become negatives of their users (as they do for Retrain)")
    negatives: int = Field(1, ge=1, description="negatives per training edge in the Hessian, spill-over and "
                           "negative-shift terms (one per edge, as in a training epoch)")
    removed_negatives: int = Field(16, ge=1, description="negatives per removed edge: few edges, so a closer "
                                   "estimate of their expected loss costs nothing")
    hessian_samples: int | None = Field(None, ge=1, description="at most this many training-edge triples in "
                                        "the Hessian (uniform subsample, reweighted); default: all that "
                                        "depend on the moving rows")
    seed: int = Field(0, description="seed of the negatives and subsamples (mixed with the request's hash)")


class SCIFConfig(InfluenceConfig):
    region: Literal["hops", "collaborative"] = "collaborative"
    spillover: bool = False


# --- which rows move ----------------------------------------------------------------------------------

def endpoints(edges: Interactions) -> np.ndarray:
    """Node ids (users, then items offset by n_users) of the request's users and items."""
    return np.union1d(np.unique(edges.users), np.unique(edges.items) + edges.n_users)


def neighbourhood(train: Interactions, nodes: np.ndarray, hops: int) -> np.ndarray:
    """Sorted node ids within `hops` edges of `nodes` on the bipartite graph of `train`."""
    adjacency = train.to_csr()
    reached = np.zeros(train.n_users + train.n_items, dtype=bool)
    reached[nodes] = True
    for _ in range(hops):
        users, items = reached[: train.n_users], reached[train.n_users:]
        reached = reached | np.concatenate([adjacency @ items.astype(np.float32) > 0,
                                            adjacency.T @ users.astype(np.float32) > 0])
    return np.flatnonzero(reached)


def collaborative_neighbourhood(train: Interactions, edges: Interactions) -> np.ndarray:
    """SCIF's rows: the request's users and items, the users who share an item with one of those users and
    the items that share a user with one of those items."""
    adjacency = train.to_csr().astype(bool).astype(np.float32)
    users = np.zeros(train.n_users, dtype=np.float32)
    items = np.zeros(train.n_items, dtype=np.float32)
    users[edges.users], items[edges.items] = 1, 1
    co_users = adjacency @ (adjacency.T @ users > 0).astype(np.float32) > 0
    co_items = adjacency.T @ (adjacency @ items > 0).astype(np.float32) > 0
    return np.flatnonzero(np.concatenate([(users > 0) | co_users, (items > 0) | co_items]))


def propagation_layers(model: Recommender) -> int:
    """How many hops a node's final embedding reads (0 for MF)."""
    return int(getattr(model.config, "layers", 0))


# --- loss terms ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Triples:
    """(user, positive, negative) loss terms, term k counted weight[k] times in the summed loss."""

    users: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    weight: np.ndarray

    @classmethod
    def draw(cls, edges: Interactions, negatives_from: Interactions, per_edge: int,
             rng: np.random.Generator) -> "Triples":
        """Each edge with `per_edge` uniform non-edges of its user in `negatives_from`, weighted 1/per_edge:
        together an estimate of the edge's expected loss over its negatives."""
        users, pos = np.repeat(edges.users, per_edge), np.repeat(edges.items, per_edge)
        return cls(users, pos, sample_negatives(negatives_from, users, rng), np.full(users.size, 1.0 / per_edge))

    @classmethod
    def none(cls) -> "Triples":
        empty = np.empty(0, dtype=np.int64)
        return cls(empty, empty, empty, np.empty(0))

    def __len__(self) -> int:
        return int(self.users.size)

    def select(self, keep: np.ndarray | slice, reweight: np.ndarray | float = 1.0) -> "Triples":
        weight = self.weight * reweight
        return Triples(self.users[keep], self.pos[keep], self.neg[keep], weight[keep])

    def __add__(self, other: "Triples") -> "Triples":
        return Triples(*(np.concatenate([a, b]) for a, b in zip((self.users, self.pos, self.neg, self.weight),
                                                               (other.users, other.pos, other.neg, other.weight))))

    def without(self, edges: Interactions) -> "Triples":
        """The terms whose (user, positive) is not one of `edges`."""
        return self.select(~edges.contains(self.users, self.pos))

    def touching(self, nodes: np.ndarray, data: Interactions) -> "Triples":
        """The terms with a user, positive or negative among `nodes` (node ids over `data`'s id space)."""
        mark = np.zeros(data.n_users + data.n_items, dtype=bool)
        mark[nodes] = True
        n_users = data.n_users
        return self.select(mark[self.users] | mark[n_users + self.pos] | mark[n_users + self.neg])

    def subsample(self, size: int | None, rng: np.random.Generator) -> "Triples":
        """At most `size` terms, reweighted so that their sum still estimates the sum over all of them."""
        if size is None or len(self) <= size:
            return self
        return self.select(np.sort(rng.choice(len(self), size=size, replace=False)), len(self) / size)


def negative_shift(remaining: Triples, edges: Interactions, residual: Interactions) -> Triples:
    """The change of the remaining terms' loss because the forgotten items become negatives of their users.

    A remaining edge (u, i) contributes E_j ℓ(u, i, j) with j uniform over u's c non-edges; after u loses the
    items F_u, over c' = c + |F_u| of them. So L − L' gains, per remaining edge of u,
        (|F_u| / c') · [E_{j ∉ N(u)} ℓ(u, i, j) − mean_{f ∈ F_u} ℓ(u, i, f)]:
    `remaining`'s terms (any estimate of E_j over the old non-edges) reweighted by |F_u| / c', minus every
    (u, i, f) with weight 1 / c'."""
    forgotten = np.bincount(edges.users, minlength=residual.n_users)
    degree = residual.user_degree()
    non_edges_after = residual.n_items - degree
    share = forgotten / np.maximum(non_edges_after, 1)
    expected = remaining.select(forgotten[remaining.users] > 0, share[remaining.users])
    # every remaining edge (u, i) of a user u with every item f that u forgets
    counts = degree[edges.users]
    first = np.concatenate([[0], np.cumsum(degree)])[edges.users]
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    index = np.repeat(first, counts) + offsets
    users, pos, neg = residual.users[index], residual.items[index], np.repeat(edges.items, counts)
    return expected + Triples(users, pos, neg, -1.0 / non_edges_after[users])


def summed_loss(model: Recommender, e0: torch.Tensor, graph: Graph, triples: Triples) -> torch.Tensor:
    """Σ weight · (BPR + L2) over the triples, per triple the term the trainer averages over a batch (the
    backbone's self-supervised term, if any, is left out: its random views are no deterministic objective)."""
    if len(triples) == 0:
        return e0.new_zeros(())
    users, pos, neg = (torch.from_numpy(a) for a in (triples.users, triples.pos, triples.neg))
    final_users, final_items = model.embed(graph, e0)
    n = model.n_users
    bpr = F.softplus(-(final_users[users] * (final_items[pos] - final_items[neg])).sum(-1))
    l2 = (e0[users].pow(2) + e0[n + pos].pow(2) + e0[n + neg].pow(2)).sum(-1) * (model.config.reg / 2)
    return ((bpr + l2) * torch.from_numpy(triples.weight).to(e0.dtype)).sum()


@dataclass(frozen=True)
class RestrictedRows:
    """E₀ as a function of the rows `nodes` alone, every other row held at its current value."""

    base: torch.Tensor      # [N, d], detached
    nodes: torch.Tensor     # [k] node ids

    def e0(self, rows: torch.Tensor) -> torch.Tensor:
        return self.base.index_put((self.nodes,), rows)

    def start(self) -> torch.Tensor:
        return self.base[self.nodes].clone()


def removal_gradient(model: Recommender, rows: RestrictedRows, removed: Triples, spill: Triples, shift: Triples,
                     graph: Graph, residual_graph: Graph) -> torch.Tensor:
    """g = ∇ [L − L'] w.r.t. the restricted rows, from its three parts: the removed terms (on the current
    graph), the spill-over (the remaining terms on the current graph minus on the residual graph) and the
    negative shift (on the residual graph). Summed chunk by chunk: a large request's terms never sit in memory
    as one autograd graph."""
    x = rows.start().requires_grad_(True)
    total = torch.zeros_like(x)
    for triples, on, sign in ((removed, graph, 1), (shift, residual_graph, 1), (spill, graph, 1),
                              (spill, residual_graph, -1)):
        for start in range(0, len(triples), CHUNK):
            loss = sign * summed_loss(model, rows.e0(x), on, triples.select(slice(start, start + CHUNK)))
            if loss.requires_grad:
                (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
                total += 0 if grad is None else grad
    return total


# --- the method ---------------------------------------------------------------------------------------

class Influence(Unlearner):
    """IFRU / GIF: θ' = θ + (∇²L + λI)⁻¹ ∇(L − L'), on the E₀ rows within `hops` of the request."""

    name = "influence"
    kind = "approximate"
    config_class = InfluenceConfig

    def _unlearn(self, edges: Interactions, residual: Dataset) -> UnlearnResult:
        cfg, model, train = self.config, self.state.model, self.state.dataset.train
        model.eval()
        start = time.perf_counter()
        graph = model.graph if model.graph is not None and model.graph.source_hash == train.hash \
            else build_graph(train)
        residual_graph = build_graph(residual.train)
        rng = np.random.default_rng([cfg.seed, int(edges.hash, 16), int(train.hash, 16)])
        nodes = self.moving_rows(model, train, edges)
        layers = propagation_layers(model)

        current = Triples.draw(train, train, cfg.negatives, rng)
        removed = Triples.draw(edges, train, cfg.removed_negatives, rng)
        remaining = current.without(edges)
        # Only terms within `layers` hops of the endpoints change with the graph; only terms within `layers` hops
        # of the moving rows depend on them: dropping the others changes neither g nor H.
        spill = remaining.touching(neighbourhood(train, endpoints(edges), layers), train) \
            if cfg.spillover and layers > 0 else Triples.none()
        shift = negative_shift(remaining, edges, residual.train) if cfg.negative_shift else Triples.none()
        hessian_terms = current.touching(neighbourhood(train, nodes, layers), train) \
            .subsample(cfg.hessian_samples, rng)

        rows = RestrictedRows(model.embedding.weight.detach(), torch.from_numpy(nodes))
        gradient = removal_gradient(model, rows, removed, spill, shift, graph, residual_graph)
        seconds = {"gradient": time.perf_counter() - start}
        start = time.perf_counter()
        hvp = hessian_vector_product(lambda x: summed_loss(model, rows.e0(x), graph, hessian_terms),
                                     rows.start())
        solution = self.solve(hvp, gradient, rng)
        seconds["solve"] = time.perf_counter() - start

        updated = model.clone()
        with torch.no_grad():
            updated.embedding.weight.copy_(rows.e0(rows.start() + solution.x))   # θ' = θ + H⁻¹ g
        updated.attach(residual_graph).eval()
        result = self._result(updated, residual, edges, updated, moving_rows=int(nodes.size),
                              removed_terms=len(removed), spillover_terms=len(spill), shift_terms=len(shift),
                              hessian_terms=len(hessian_terms), gradient_norm=float(gradient.norm()),
                              step_norm=float(solution.x.norm()), solver=cfg.solver, **solution.summary())
        result.seconds.update(seconds)
        return result

    def moving_rows(self, model: Recommender, train: Interactions, edges: Interactions) -> np.ndarray:
        """The E₀ rows the update may change (node ids), on the current graph."""
        if self.config.region == "collaborative":
            return collaborative_neighbourhood(train, edges)
        hops = propagation_layers(model) if self.config.hops is None else self.config.hops
        return neighbourhood(train, endpoints(edges), hops)

    def solve(self, hvp, gradient: torch.Tensor, rng: np.random.Generator) -> Solution:
        """(H + λI)⁻¹ g, raising λ while the solver meets a direction of non-positive curvature.

        The Hessian of BPR at a model trained by mini-batch Adam is indefinite (the bilinear score has saddle
        directions, and training stops short of a minimum); a Newton step is meaningful only on a positive
        damped matrix, so λ grows until the solver sees one (Levenberg-Marquardt). Where CG found a direction
        v of curvature q = vᵀHv/vᵀv < 0, the next λ is at least −2q (H + λI is then positive along v with
        margin |q|, so a near-singular direction cannot blow the step up), and at least ten times the last one
        (each failed attempt costs the products CG spent before it met v). The λ used is reported."""
        cfg = self.config
        damping, top, products = cfg.damping, None, 0
        bar = tqdm(desc=f"{self.name}: Hessian-vector products", unit="Hv", leave=False, disable=not self.progress)

        def counted(v: torch.Tensor) -> torch.Tensor:
            nonlocal products
            products += 1
            bar.update()
            return hvp(v)
        for _ in range(DAMPING_RAISES + 1):
            bar.set_postfix(damping=f"{damping:.3g}")
            if cfg.solver == "cg":
                solution = conjugate_gradient(counted, gradient, damping, cfg.iterations, cfg.tolerance)
            else:
                if cfg.scale is None and top is None:
                    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
                    top = largest_eigenvalue(counted, gradient, POWER_ITERATIONS, generator)
                scale = cfg.scale or 1.5 * (top + damping)
                solution = lissa(counted, gradient, damping, scale, cfg.iterations, cfg.tolerance)
            solution.products = products
            if not solution.indefinite:
                break
            found = -2 * solution.curvature if solution.curvature is not None else 0.0
            damping = max(DAMPING_GROWTH * damping, found)
        else:
            solution.note += f"; still indefinite at damping {solution.damping:g}"
        bar.close()
        return solution


class SCIF(Influence):
    """SCIF: the influence update on the request's users and items and their collaborative neighbours, with no
    spill-over term (the graph is treated as fixed)."""

    name = "scif"
    config_class = SCIFConfig
