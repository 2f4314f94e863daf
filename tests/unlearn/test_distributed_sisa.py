"""SISA's sub-models (and so RecEraser's, which trains its shards through SISA's code) trained in two worker
processes, or on two torch.distributed ranks, are those one process trains in turn, bit for bit: each shard's
fit depends on its own seed and edges alone, whichever process runs it."""
from __future__ import annotations

import pytest

from recunlearn.models.registry import build_model
from recunlearn.train.jobs import fit_jobs
from recunlearn.train.launch import run_on_ranks
from recunlearn.unlearn.sisa import Sisa
from shard_helpers import SHARD_RUN, SHARDS, from_shards, identical

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def data(synthetic):
    return synthetic()


def prepared(data, workers: int) -> tuple[Sisa, list]:
    """(SISA prepared with `workers` processes, its sub-models' weights right after `prepare`)."""
    model = build_model(SHARD_RUN.model, data.n_users, data.n_items)
    sisa = Sisa({"shards": SHARDS, "workers": workers}, run=SHARD_RUN, progress=False).prepare(model, data)
    return sisa, weights(sisa)


def weights(sisa: Sisa) -> list:
    return [None if m is None else m.state_dict() for m in sisa.state.scorer.models]


@pytest.fixture(scope="module")
def in_turn(data):
    return prepared(data, workers=1)


@pytest.fixture(scope="module")
def two_workers(data):
    return prepared(data, workers=2)


def test_two_worker_processes_train_the_sub_models_of_one_process_bit_for_bit(in_turn, two_workers):
    (_, sequential), (_, parallel) = in_turn, two_workers
    assert len(parallel) == len(sequential) == SHARDS
    assert not identical(sequential[0], sequential[1])       # sub-models differ: a shard mix-up would show
    assert all(identical(a, b) for a, b in zip(sequential, parallel))


def test_on_two_ranks_every_rank_gathers_every_sub_model_bit_for_bit(data, in_turn):
    sisa, sequential = in_turn
    jobs = [sisa._shard_job(shard, data) for shard in range(SHARDS)]
    outcomes = run_on_ranks(fit_jobs, 2, jobs, 1, False)      # shard i on rank i mod 2, then all_gather
    assert [identical(outcome.weights, expected) for outcome, expected in zip(outcomes, sequential)] == [True] * SHARDS


def test_a_request_retrains_the_same_shards_to_the_same_weights(data, in_turn, two_workers):
    (sequential, _), (parallel, _) = in_turn, two_workers
    request = from_shards(sequential, data, shards=(0, 2), per_shard=3)
    expected, result = sequential.unlearn(request), parallel.unlearn(request)
    assert result.report["retrained_shards"] == expected.report["retrained_shards"] == [0, 2]
    assert all(identical(a, b) for a, b in zip(weights(sequential), weights(parallel)))
    # fits that ran at once leave out their share of the wall time, never more than the request took
    assert 0 <= result.seconds["excluded_validation"] < result.seconds["wall"]
    assert 0 < result.seconds["total"]
