"""Functions that the tests run on spawned gloo ranks (module-level, so that they pickle)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

# The benchmark modules (row_split, bench_scaling) import as top-level modules, in the spawned ranks too.
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from row_split import RowBlockPropagation, split_step  # noqa: E402
from recunlearn.data import sampling  # noqa: E402
from recunlearn.data.graph import build_graph  # noqa: E402
from recunlearn.models.registry import build_model  # noqa: E402
from recunlearn.train.distributed import Ranks  # noqa: E402
from recunlearn.train.trainer import optimizer_for, seed_everything  # noqa: E402


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


def split_steps(run, dataset, steps: int) -> dict:
    """`steps` optimiser steps of LightGCN with the row-split step of row_split.py on these ranks; rank 0
    returns the weights."""
    ranks = Ranks.current()
    seed_everything(run.train.seed)
    model = build_model(run.model, dataset.n_users, dataset.n_items).attach(build_graph(dataset.train))
    ranks.sync_parameters(model)
    optimizer = optimizer_for(model, run.train.lr)
    propagation = RowBlockPropagation.for_model(model, ranks)
    batches = sampling.bpr_epoch(dataset.train, np.random.default_rng(run.train.seed), run.train.batch_size)
    for _, (users, pos, neg) in zip(range(steps), batches):
        split_step(ranks, propagation, model, optimizer, users, pos, neg)
    return model.state_dict()


def backend_and_device() -> tuple[str, int]:
    """The process group's backend and this rank's current CUDA device."""
    return dist.get_backend(), torch.cuda.current_device()
