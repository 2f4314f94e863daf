"""Normalised bipartite adjacency Â = D^-1/2 [[0, A], [Aᵀ, 0]] D^-1/2 as torch sparse CSR, and propagation.

Nodes 0..n_users-1 are users, n_users..n_users+n_items-1 are items. A node of degree 0 gets an
all-zero row (its inverse square-root degree is set to 0, never inf).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .interactions import Interactions


@dataclass(frozen=True, eq=False)
class Graph:
    """A symmetric normalised adjacency over users + items; `adj` is a torch CSR tensor [N, N]."""

    adj: torch.Tensor
    n_users: int
    n_items: int
    source_hash: str
    edges: Interactions | None = None     # the interactions the graph was built from (seen items)

    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items

    @property
    def nnz(self) -> int:
        return int(self.adj.values().numel())

    def to(self, device: torch.device | str) -> "Graph":
        """The same graph with its adjacency on `device` (a GPU for training); the edges stay in host memory."""
        return self if self.adj.device == torch.device(device) else replace(self, adj=self.adj.to(device))


def edge_norm(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
              edge_weight: np.ndarray | None = None) -> np.ndarray:
    """Per-edge value w_ui / sqrt(d_u d_i) of the symmetric normalisation (degrees from these edges)."""
    w = np.ones(users.size, dtype=np.float32) if edge_weight is None else np.asarray(edge_weight, np.float32)
    deg_u = np.bincount(users, weights=w, minlength=n_users)
    deg_i = np.bincount(items, weights=w, minlength=n_items)
    with np.errstate(divide="ignore"):
        inv_u = np.where(deg_u > 0, 1.0 / np.sqrt(deg_u), 0.0)
        inv_i = np.where(deg_i > 0, 1.0 / np.sqrt(deg_i), 0.0)
    return (w * inv_u[users] * inv_i[items]).astype(np.float32)


def bipartite_csr(users: np.ndarray, items: np.ndarray, values: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """Symmetric CSR [[0, B], [Bᵀ, 0]] with B[u, i] = value, from (user, item)-sorted edge arrays."""
    n = n_users + n_items
    # Rows of the user half are already in CSR order; the item half is the same edges sorted by item.
    by_item = np.argsort(items, kind="stable")
    cols = np.concatenate([items + n_users, users[by_item]])
    vals = np.concatenate([values, values[by_item]]).astype(np.float32)
    counts = np.concatenate([np.bincount(users, minlength=n_users), np.bincount(items, minlength=n_items)])
    return csr_tensor(counts, cols, torch.from_numpy(vals), (n, n))


def csr_tensor(row_counts: np.ndarray, cols: np.ndarray, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A torch CSR from each row's number of entries and the entries' columns and values in row order."""
    crow = np.zeros(len(row_counts) + 1, dtype=np.int64)
    np.cumsum(row_counts, out=crow[1:])
    index = csr_index_dtype(max(shape), len(cols))
    return torch.sparse_csr_tensor(torch.from_numpy(crow.astype(index)), torch.from_numpy(cols.astype(index)),
                                   values, size=shape, check_invariants=False)


def csr_index_dtype(n_nodes: int, nnz: int) -> type:
    """int32 indices where they fit: the CPU sparse kernels take int32, and int64 indices are converted to it
    (a copy of both index arrays) on every product."""
    return np.int32 if max(n_nodes, nnz) < np.iinfo(np.int32).max else np.int64


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
                         edge_weight: np.ndarray | None = None) -> torch.Tensor:
    """Vectorised CSR build of D^-1/2 Ā D^-1/2 from (user, item) index arrays (optionally weighted)."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    key = users * n_items + items
    if users.size and np.any(key[1:] < key[:-1]):   # Interactions are already (user, item)-sorted
        order = np.argsort(key, kind="stable")
        users, items = users[order], items[order]
        edge_weight = None if edge_weight is None else np.asarray(edge_weight)[order]
    values = edge_norm(users, items, n_users, n_items, edge_weight)
    return bipartite_csr(users, items, values, n_users, n_items)


def build_graph(train: Interactions) -> Graph:
    adj = normalized_adjacency(train.users, train.items, train.n_users, train.n_items)
    return Graph(adj, train.n_users, train.n_items, train.hash, train)


class _SymmetricSpMM(torch.autograd.Function):
    """y = Â x for a symmetric Â: the backward is Âᵀ g = Â g, another forward product.

    The stock CSR backward transposes Â (a CSC conversion) on every call, which makes it several times
    slower than the forward; symmetry lets us skip that entirely.
    """

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return product(adj, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # through spmm again: a double backward (Hessian-vector products) then also skips the transpose
        return None, spmm(ctx.adj, grad)


def spmm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Â x, differentiable in x only (Â is fixed data). Requires a symmetric Â."""
    if x.requires_grad:
        return _SymmetricSpMM.apply(adj, x)
    return product(adj, x)


class _LayerMean(torch.autograd.Function):
    """y = mean(x, Âx, …, Â^L x) = P(Â) x, LightGCN's readout as one operator. P(Â) is a polynomial in a
    symmetric Â, so it is symmetric too: the backward is P(Â) g, the same computation."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor, layers: int) -> torch.Tensor:
        ctx.adj, ctx.layers = adj, layers
        return _layer_mean(adj, x, layers)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, propagate_mean(ctx.adj, grad, ctx.layers), None


def _layer_mean(adj: torch.Tensor, x: torch.Tensor, layers: int) -> torch.Tensor:
    """Horner's rule, x + Â(x + Â(x + Âx)), one sparse product per layer with the sum fused into it; the last
    product also scales by 1/(L+1). No layer's embeddings are kept, neither here nor for the backward."""
    total = x
    for layer in range(layers):
        scale = 1.0 / (layers + 1) if layer == layers - 1 else 1.0
        total = torch.addmm(x, adj, total, beta=scale, alpha=scale)
    return total if layers else x.clone()


def propagate_mean(adj: torch.Tensor, x: torch.Tensor, layers: int) -> torch.Tensor:
    """mean(x, Âx, …, Â^L x) for a symmetric Â, differentiable in x (twice too: Hessian-vector products)."""
    if x.requires_grad:
        return _LayerMean.apply(adj, x, layers)
    return _layer_mean(adj, x, layers)


@dataclass(frozen=True, eq=False)
class EdgeIndex:
    """A set of (user, item) edges as two CSR patterns: users → items, rows in the edges' (user, item) order,
    and items → users; `item_order` puts per-edge values from the first order into the second's."""

    by_user: torch.Tensor       # CSR [n_users, n_items]
    by_item: torch.Tensor       # CSR [n_items, n_users]
    item_order: torch.Tensor    # int64 [n_edges]

    @classmethod
    def of(cls, edges: Interactions) -> "EdgeIndex":
        """From (user, item)-sorted, distinct edges (as every Interactions holds them)."""
        users, items = np.asarray(edges.users), np.asarray(edges.items)
        item_order = np.argsort(items, kind="stable")
        ones = torch.ones(len(users))
        return cls(csr_tensor(np.bincount(users, minlength=edges.n_users), items, ones, (edges.n_users, edges.n_items)),
                   csr_tensor(np.bincount(items, minlength=edges.n_items), users[item_order], ones,
                              (edges.n_items, edges.n_users)),
                   torch.from_numpy(item_order.astype(np.int64)))

    def with_values(self, values: torch.Tensor, by: str = "user") -> torch.Tensor:
        """The users → items (or, `by="item"`, items → users) matrix with per-edge `values` in edge order."""
        if by == "item":
            pattern, values = self.by_item, values[self.item_order]
        else:
            pattern = self.by_user
        return torch.sparse_csr_tensor(pattern.crow_indices(), pattern.col_indices(), values, size=pattern.shape,
                                       check_invariants=False)


class _EdgeScores(torch.autograd.Function):
    """s_e = <u_e, i_e> for every edge, by a sampled dense product. Gathering both endpoints' rows instead
    reads and writes two [n_edges, d] copies, and its backward scatters them back one row at a time; here
    the backward is two sparse products with the incoming gradient as the edge values."""

    @staticmethod
    def forward(ctx, user_emb: torch.Tensor, item_emb: torch.Tensor, index: EdgeIndex) -> torch.Tensor:
        ctx.save_for_backward(user_emb, item_emb)
        ctx.index = index
        pattern = index.by_user
        if pattern.dtype != user_emb.dtype:
            pattern = index.with_values(user_emb.new_ones(index.item_order.numel()))
        return torch.sparse.sampled_addmm(pattern, user_emb, item_emb.T, beta=0.0).values()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        user_emb, item_emb = ctx.saved_tensors
        grad = grad.contiguous()
        grad_user = product(ctx.index.with_values(grad), item_emb) if ctx.needs_input_grad[0] else None
        grad_item = product(ctx.index.with_values(grad, by="item"), user_emb) if ctx.needs_input_grad[1] else None
        return grad_user, grad_item, None


def edge_scores(user_emb: torch.Tensor, item_emb: torch.Tensor, index: EdgeIndex) -> torch.Tensor:
    """<user_emb[u], item_emb[i]> for each edge (u, i) of `index`, in edge order; differentiable once."""
    return _EdgeScores.apply(user_emb.contiguous(), item_emb.contiguous(), index)


def product(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Â x without autograd. `adj @ x` zero-fills an output and copies it before the sparse kernel writes it;
    addmm with beta=0 writes into uninitialised memory (beta=0 ignores its input, NaNs included)."""
    return torch.addmm(x.new_empty(adj.shape[0], x.shape[1]), adj, x, beta=0)
