"""Data-parallel training over torch.distributed ranks: one rank is the plain loop bit for bit, and two gloo
processes on this machine train what one process trains, to float summation order: the same weights, the
same Adam moments, the same losses, and the same early-stopping decisions taken on rank 0."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

from generated import taste_groups
from recunlearn.train.checkpoint import load_tensors
from recunlearn.train.config import RunConfig
from recunlearn.train.distributed import Ranks
from recunlearn.train.launch import run_on_ranks
from recunlearn.train.trainer import TRAINER_STATE, Trainer

# Batches of 57 split 28 / 29 over two ranks (unequal shares), and 571 training edges end every epoch with a
# batch of one edge, which leaves rank 0 an empty slice.
BATCH, EDGES = 57, 10 * 57 + 1
# Two ranks sum the slices' gradients in another order than one process sums the batch's: after the run's four
# epochs the weights differ by a few 1e-7 (values up to about 1). Summing the ranks' gradients instead of
# averaging them, weighting slices of unequal size equally, or ranks drawing different batches each move
# them by more than 0.1 and change the epoch early stopping picks.
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def run_config(nproc: int = 1, **train) -> RunConfig:
    return RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 16}, "eval": {"ks": [5]},
                                     "train": {"epochs": 8, "batch_size": BATCH, "lr": 0.02, "patience": 2,
                                               "metric": "NDCG@5", "nproc": nproc, **train}})


@pytest.fixture(scope="module")
def data():
    generated = taste_groups(60, 40, 12, seed=0, name="ranks")
    assert len(generated.train) >= EDGES
    return generated.with_train(generated.train.select(np.arange(len(generated.train)) < EDGES))


def trained(data, folder, nproc: int):
    """(model, TrainResult, the last epoch's trainer state: current weights and Adam's moments)."""
    model, result = Trainer(run_config(nproc), progress=False, checkpoint_dir=folder).fit(data)
    return model, result, load_tensors(folder, TRAINER_STATE)


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    return trained(data, tmp_path_factory.mktemp("one") / "ckpt", nproc=1)


@pytest.fixture(scope="module")
def two_ranks(data, tmp_path_factory):
    return trained(data, tmp_path_factory.mktemp("two") / "ckpt", nproc=2)


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_one_rank_takes_the_plain_loops_steps_bit_for_bit(data, tmp_path):
    """The data-parallel step with a world of one (slice = batch, share 1, all_reduce of one) is the plain step."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        ranked, ranked_result = Trainer(run_config(), progress=False, ranks=Ranks.current()).fit(data)
    finally:
        dist.destroy_process_group()
    plain, plain_result = Trainer(run_config(), progress=False).fit(data)
    assert ranked.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(ranked.state_dict()[k], plain.state_dict()[k]) for k in plain.state_dict())
    assert without_seconds(ranked_result.history) == without_seconds(plain_result.history)


def test_two_gloo_ranks_train_the_one_process_weights(one_process, two_ranks):
    (one, one_result, one_state), (two, _, two_state) = one_process, two_ranks
    # the run goes past its best epoch, so the last epoch's weights (the trainer state) are compared too
    assert one_result.epochs_run > one_result.best_epoch
    pairs = ((one.state_dict(), two.state_dict()), (one_state["current"], two_state["current"]))
    for weights_one, weights_two in pairs:
        for name in weights_one:
            assert not torch.equal(weights_one[name], torch.zeros_like(weights_one[name]))
            torch.testing.assert_close(weights_two[name], weights_one[name], **TOLERANCE)


def test_two_gloo_ranks_average_the_gradients(one_process, two_ranks):
    """Adam's moments are the gradients' running mean and mean square: summed gradients would double the one
    and quadruple the other, while Adam's steps (their ratio) would barely change."""
    moments_one, moments_two = (state["optimizer"]["state"][0] for state in (one_process[2], two_ranks[2]))
    assert int(moments_two["step"]) == int(moments_one["step"]) == one_process[1].epochs_run * 11
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(moments_two[key], moments_one[key], rtol=1e-3, atol=1e-9)


def test_two_gloo_ranks_record_the_same_losses_and_stop_together(one_process, two_ranks):
    (_, one, _), (_, two, _) = one_process, two_ranks
    assert (two.best_epoch, two.epochs_run) == (one.best_epoch, one.epochs_run)
    assert one.epochs_run < 8            # early stopping ended the run: every rank left the loop at that epoch
    for record_one, record_two in zip(without_seconds(one.history), without_seconds(two.history)):
        assert record_two.keys() == record_one.keys()
        for key in record_one:
            assert record_two[key] == pytest.approx(record_one[key], rel=1e-5, abs=1e-6), key


def test_an_error_on_a_rank_reaches_the_caller_with_its_type_and_message(data):
    diverging = run_config(2, lr=1e30)
    with pytest.raises(ValueError, match="training diverged in epoch 1"):
        Trainer(diverging, progress=False).fit(data)


def test_run_on_ranks_refuses_no_process():
    with pytest.raises(ValueError, match="at least 1"):
        run_on_ranks(print, 0)
