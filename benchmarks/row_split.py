"""An experiment of the scaling benchmark: LightGCN's readout split by rows over data-parallel ranks.

The library's data-parallel step (`Ranks.step`) has every rank run the whole readout, forward and backward,
and split only the per-triple part of a step. Here rank r instead computes its block of rows of each layer's
product Â E^l, and the blocks are all-gathered into the whole layer on every rank; the backward is the same
polynomial in Â (Â is symmetric) applied to the ranks' summed gradient: one all_reduce and one all_gather per
layer. Each rank then does 1/world of the propagation but moves a layer's worth of embeddings per collective.
`bench_scaling.py --readout split` measures it against the library's whole readout; BENCHMARKS.md section 11
has the result, which is why it stays an experiment and not the trainer's step.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from recunlearn.models.lightgcn import LightGCN
from recunlearn.train.distributed import Ranks


class RowBlockPropagation:
    """mean(x, Âx, …, Â^L x) with this rank's block of rows of a symmetric Â [N, N]: ranks own equal blocks of
    ceil(N / world) rows (the last one padded with empty rows, so that every all_gather moves equal parts)."""

    def __init__(self, adj: torch.Tensor, layers: int, ranks: Ranks):
        self.n, self.layers, self.world = adj.shape[0], layers, ranks.world_size
        self.block = -(-self.n // self.world)
        self.start, self.stop = min(ranks.rank * self.block, self.n), min((ranks.rank + 1) * self.block, self.n)
        crow, cols, values = adj.crow_indices(), adj.col_indices(), adj.values()
        first, last = int(crow[self.start]), int(crow[self.stop])
        padding = crow.new_full((self.block - (self.stop - self.start),), last - first)
        self.rows = torch.sparse_csr_tensor(torch.cat([crow[self.start:self.stop + 1] - first, padding]),
                                            cols[first:last], values[first:last], size=(self.block, self.n),
                                            check_invariants=False)

    @classmethod
    def for_model(cls, model, ranks: Ranks) -> "RowBlockPropagation":
        if not isinstance(model, LightGCN) or type(model).readout is not LightGCN.readout or model.graph is None:
            raise ValueError(f"the row-split readout is LightGCN's layer mean; {type(model).__name__} has another")
        return cls(model.graph.adj, model.config.layers, ranks)

    def layer_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The readout of x [N, d] (the same on every rank), differentiable in x."""
        return _RowBlockLayerMean.apply(x, self)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Horner's rule as in `data.graph`, x + Â(x + Â(…)) scaled by 1/(L+1), one block of rows at a time."""
        own = torch.nn.functional.pad(x[self.start:self.stop], (0, 0, 0, self.block - (self.stop - self.start)))
        total = x
        for layer in range(self.layers):
            scale = 1.0 / (self.layers + 1) if layer == self.layers - 1 else 1.0
            part = torch.addmm(own, self.rows, total, beta=scale, alpha=scale)
            parts = [torch.empty_like(part) for _ in range(self.world)]
            dist.all_gather(parts, part)
            total = torch.cat(parts)[:self.n]
        return total if self.layers else x.clone()


class _RowBlockLayerMean(torch.autograd.Function):
    """y = P(Â) x on every rank. Each rank's loss gives its own gradient g_r of y, and the total is P(Â) Σ g_r;
    every rank returns a world-th of it, so that the step's all_reduce of the parameters' gradients sums it
    back (the loss's other terms, such as L2 on the batch's rows, are per rank and summed there too)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, propagation: RowBlockPropagation) -> torch.Tensor:
        ctx.propagation = propagation
        return propagation.apply(x.detach())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return ctx.propagation.apply(total) / ctx.propagation.world, None


def split_step(ranks: Ranks, propagation: RowBlockPropagation, model, optimizer: torch.optim.Optimizer,
               users: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """`Ranks.step` with the row-split readout: every rank takes part in the readout's collectives (an empty
    slice too), then the gradients are summed and every rank takes the same Adam step."""
    start, stop = ranks.bounds(len(users))
    share = (stop - start) / len(users)
    optimizer.zero_grad(set_to_none=True)
    e0 = model.embedding.weight
    final = propagation.layer_mean(e0)
    local_loss = 0.0
    if stop > start:
        loss, _ = model.loss_terms(tuple(torch.from_numpy(a[start:stop]) for a in (users, pos, neg)), final, e0)
        (loss * share).backward()
        local_loss = loss.item() * share
    else:
        final.backward(torch.zeros_like(final))
    total = torch.tensor([local_loss], dtype=torch.float64)
    dist.all_reduce(total)
    for param in (p for p in model.parameters() if p.grad is not None):   # LightGCN: E₀, on every rank
        dist.all_reduce(param.grad)
    optimizer.step()
    return total.item()
