"""Functions that the tests run on spawned gloo ranks (module-level, so that they pickle)."""
from __future__ import annotations

import torch
import torch.distributed as dist

from recunlearn.train.distributed import Ranks, RowBlockPropagation


def split_readout(adj: torch.Tensor, layers: int, x: torch.Tensor, grads: list[torch.Tensor]):
    """The row-split readout of x on this rank, and x's gradient summed over the ranks when rank r's loss
    sends `grads[r]` into the readout (as the training step's all_reduce sums it)."""
    ranks = Ranks.current()
    x = x.clone().requires_grad_()
    readout = RowBlockPropagation(adj, layers, ranks).layer_mean(x)
    readout.backward(grads[ranks.rank])
    gradient = x.grad.clone()
    dist.all_reduce(gradient)
    return readout.detach(), gradient
