"""Data-parallel training over torch.distributed ranks: what one rank does inside the training loop.

Every rank holds the same model and draws the same global batch (the same seeded sampler), computes the loss
on its own contiguous slice, and the gradients are combined with all_reduce before each rank takes the same
Adam step. A slice's loss is a mean over its triples, so weighting it by the slice's share of the batch makes
the sum over ranks the batch's mean loss: one step equals the one-process step up to float summation order
(the plain average when slices are equal; the weights matter for the last, shorter batch). Validation runs
on rank 0 and its metrics are broadcast, so every rank takes the same early-stopping decisions; only rank 0
writes checkpoints. Starting the ranks is `launch.py`'s concern.

LightGCN's readout is split by rows too (`RowBlockPropagation`): rank r
computes its block of rows of each layer's product Â E^l and the blocks are all-gathered, so each rank does
1/world of the propagation instead of all of it. Its backward is the same polynomial in Â (Â is
symmetric), applied to the ranks' summed gradient: one all_reduce and one all_gather per layer.

Why not torch's DistributedDataParallel: the trainer calls `model.loss(batch)`, not `forward`; a graph
backbone propagates over the whole graph on every rank anyway, so there is no per-layer overlap to gain from
DDP's gradient buckets; and the share weighting of an uneven last batch is explicit here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ..models.lightgcn import LightGCN


def backend_for(device: torch.device | str) -> str:
    """gloo for CPU tensors, NCCL for CUDA ones (NCCL reduces tensors in GPU memory only). The trainer keeps
    its tensors on the CPU today, so its ranks use gloo."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@dataclass(frozen=True)
class Ranks:
    """This process's place in an initialised process group, and the collectives the trainer needs."""

    rank: int
    world_size: int

    @classmethod
    def current(cls) -> "Ranks":
        if not dist.is_initialized():
            raise RuntimeError("no torch.distributed process group: start the ranks with recunlearn.train.launch "
                               "(or torchrun)")
        return cls(dist.get_rank(), dist.get_world_size())

    @classmethod
    def active(cls) -> "Ranks | None":
        """This process's ranks when it runs in an initialised group of more than one process, else None."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls.current()
        return None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that validates, logs and writes."""
        return self.rank == 0

    def bounds(self, batch_size: int) -> tuple[int, int]:
        """This rank's contiguous slice [start, stop) of a batch: sizes differ by one at most, and a batch
        shorter than the world leaves some ranks an empty slice."""
        return batch_size * self.rank // self.world_size, batch_size * (self.rank + 1) // self.world_size

    # --- the training step -------------------------------------------------------------------------
    def step(self, model, optimizer: torch.optim.Optimizer, users: np.ndarray, pos: np.ndarray,
             neg: np.ndarray, propagation: "RowBlockPropagation | None" = None) -> float:
        """One optimiser step on the global batch (users, pos, neg), of which this rank computes its slice;
        returns the batch's mean loss (the same on every rank). `propagation`: the model's readout split by
        rows over the ranks (`RowBlockPropagation.for_model`); None: each rank runs the model's whole readout."""
        start, stop = self.bounds(len(users))
        share = (stop - start) / len(users)
        optimizer.zero_grad(set_to_none=True)
        local_loss = 0.0
        batch = tuple(torch.from_numpy(a[start:stop]) for a in (users, pos, neg))
        if propagation is not None:
            # Every rank takes part in the split readout's collectives, an empty slice too.
            e0 = model.embedding.weight
            final = propagation.layer_mean(e0)
            if stop > start:
                loss, _ = model.loss_terms(batch, final, e0)
                (loss * share).backward()
                local_loss = loss.item() * share
            else:
                final.backward(torch.zeros_like(final))
        elif stop > start:
            loss, _ = model.loss(batch)
            (loss * share).backward()
            local_loss = loss.item() * share
        params = [p for p in model.parameters() if p.requires_grad]
        # Which parameters got a gradient on any rank: Adam leaves a parameter without one untouched, so a
        # rank with an empty slice must not turn "no gradient" into a zero gradient of its own.
        header = torch.tensor([local_loss] + [float(p.grad is not None) for p in params], dtype=torch.float64)
        dist.all_reduce(header)
        for param, present in zip(params, header[1:].tolist()):
            if present:
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                dist.all_reduce(param.grad)
        optimizer.step()
        return header[0].item()

    # --- agreement between ranks -------------------------------------------------------------------
    def sync_parameters(self, model: torch.nn.Module) -> None:
        """Every rank starts from rank 0's weights (they build the same seeded model; this makes sure)."""
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)

    def from_main(self, compute):
        """`compute()` on rank 0, its (picklable) result on every rank: validation decides for all."""
        box = [compute() if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def require_same(self, value: str, what: str) -> None:
        """Fail on every rank when the ranks disagree on `value` (a data hash, a run config)."""
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        if len(set(values)) > 1:
            raise ValueError(f"the {self.world_size} ranks hold different {what} ({', '.join(map(str, values))}): "
                             "every rank must load the same data and settings")


class RowBlockPropagation:
    """mean(x, Âx, …, Â^L x) with this rank's block of rows of a symmetric Â [N, N]: ranks own equal blocks of
    ceil(N / world) rows (the last one padded with empty rows, so that every all_gather moves equal parts), and
    each layer's blocks are all-gathered into the whole layer on every rank."""

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
    def for_model(cls, model, ranks: Ranks) -> "RowBlockPropagation | None":
        """The split of `model`'s readout when it is LightGCN's layer mean over its attached graph; None for
        other readouts, which every rank runs whole."""
        if not isinstance(model, LightGCN) or type(model).readout is not LightGCN.readout or model.graph is None:
            return None
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
