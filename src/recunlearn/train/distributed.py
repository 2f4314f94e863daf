"""Data-parallel training over torch.distributed ranks: what one rank does inside the training loop.

Every rank holds the same model and draws the same global batch (the same seeded sampler), computes the loss
on its own contiguous slice, and the gradients are combined with all_reduce before each rank takes the same
Adam step. A slice's loss is a mean over its triples, so weighting it by the slice's share of the batch makes
the sum over ranks the batch's mean loss: one step equals the one-process step up to float summation order
(the plain average when slices are equal; the weights matter for the last, shorter batch). Validation runs
on rank 0 and its metrics are broadcast, so every rank takes the same early-stopping decisions; only rank 0
writes checkpoints. Starting the ranks is `launch.py`'s concern.

Why not torch's DistributedDataParallel: the trainer calls `model.loss(batch)`, not `forward`; a graph
backbone propagates over the whole graph on every rank anyway, so there is no per-layer overlap to gain from
DDP's gradient buckets; and the share weighting of an uneven last batch is explicit here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


def backend_for(device: torch.device | str) -> str:
    """gloo for CPU tensors, NCCL for CUDA ones (NCCL reduces tensors in GPU memory only)."""
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
             neg: np.ndarray) -> float:
        """One optimiser step on the global batch (users, pos, neg), of which this rank computes its slice;
        returns the batch's mean loss (the same on every rank)."""
        start, stop = self.bounds(len(users))
        share = (stop - start) / len(users)
        optimizer.zero_grad(set_to_none=True)
        local_loss = 0.0
        device = model.embedding.weight.device     # NCCL reduces on the GPU, gloo on the CPU
        if stop > start:
            batch = tuple(torch.from_numpy(a[start:stop]).to(device) for a in (users, pos, neg))
            loss, _ = model.loss(batch)
            (loss * share).backward()
            local_loss = loss.item() * share
        params = [p for p in model.parameters() if p.requires_grad]
        # Which parameters got a gradient on any rank: Adam leaves a parameter without one untouched, so a
        # rank with an empty slice must not turn "no gradient" into a zero gradient of its own.
        header = torch.tensor([local_loss] + [float(p.grad is not None) for p in params], dtype=torch.float64,
                              device=device)
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
