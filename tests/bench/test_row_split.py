"""The scaling benchmark's experiment (benchmarks/row_split.py): LightGCN's readout split by rows over gloo
ranks computes the whole readout, its gradient, and the one-process training steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from generated import taste_groups
from rank_helpers import BENCHMARKS, split_readout, split_steps
from recunlearn.data import sampling
from recunlearn.data.graph import build_graph, normalized_adjacency, propagate_mean
from recunlearn.models.registry import build_model
from recunlearn.train.config import RunConfig
from recunlearn.train.launch import run_on_ranks
from recunlearn.train.trainer import Trainer, optimizer_for, seed_everything


@pytest.mark.parametrize("world", [2, 3])
def test_the_row_split_readout_is_the_whole_one(world):
    """Each rank propagates its block of rows of Â (blocks of ceil(N / world), the last one padded: 13 nodes
    split 7 + 6 and 5 + 5 + 3) and all-gathers them; the gradient summed over the ranks is the whole readout's
    gradient of the summed losses. A missing scale on the last layer, a wrong block offset or a gradient not
    divided by the world each break it."""
    generator = torch.Generator().manual_seed(0)
    users, items = torch.randint(0, 6, (30,), generator=generator), torch.randint(0, 7, (30,), generator=generator)
    adj = normalized_adjacency(users.numpy(), items.numpy(), 6, 7)
    x = torch.randn(13, 4, generator=generator, dtype=adj.dtype)
    grads = [torch.randn(13, 4, generator=generator, dtype=adj.dtype) for _ in range(world)]
    readout, gradient = run_on_ranks(split_readout, world, adj, 3, x, grads, threads=1)
    torch.testing.assert_close(readout, propagate_mean(adj, x, 3))
    torch.testing.assert_close(gradient, propagate_mean(adj, sum(grads), 3))


def test_two_ranks_with_the_split_readout_take_the_one_process_steps():
    """One epoch, 11 steps of batch 57 over 571 edges: the last batch of one edge leaves rank 0 an empty slice,
    which must still take part in the readout's collectives (else the ranks wait for each other for ever)."""
    generated = taste_groups(60, 40, 12, seed=0, name="split")
    data = generated.with_train(generated.train.select(np.arange(len(generated.train)) < 571))
    run = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 16},
                                    "train": {"batch_size": 57, "lr": 0.02, "seed": 0}})
    split = run_on_ranks(split_steps, 2, run, data, 11, threads=1)
    seed_everything(0)
    model = build_model(run.model, data.n_users, data.n_items).attach(build_graph(data.train))
    optimizer = optimizer_for(model, run.train.lr)
    batches = sampling.bpr_epoch(data.train, np.random.default_rng(0), 57)
    for users, pos, neg in batches:
        Trainer._step(model, optimizer, users, pos, neg)
    for name, weights in model.state_dict().items():
        torch.testing.assert_close(split[name], weights, rtol=1e-4, atol=1e-5)


def test_the_scaling_table_has_a_cell_under_every_column():
    """The recorded rows, older ones (no readout recorded: the trainer's whole readout) and split ones alike."""
    import bench_scaling   # from BENCHMARKS, on the path through rank_helpers
    rows = bench_scaling.read_rows(str(BENCHMARKS / "results" / "scaling.jsonl"))
    lines = [line for line in bench_scaling.table(rows).splitlines() if line.startswith("|")]
    header, body = lines[0], lines[2:]
    assert len(body) == len(rows) and {row.get("readout") for row in rows} >= {None, "whole", "split"}
    assert all(line.count("|") == header.count("|") for line in body)
    readouts = [line.split("|")[5].strip() for line in body]
    assert readouts == ["" if row["ranks"] == 1 else row.get("readout", "whole") for row in rows]
