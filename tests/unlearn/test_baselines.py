"""The baselines every unlearning method is compared with: Retrain (exact, cached) and Fine-tune (naive)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from recunlearn.data.interactions import Dataset, Interactions
from recunlearn.train.cache import cache_root
from recunlearn.train.checkpoint import read_meta
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer
from recunlearn.unlearn.finetune import FineTune
from recunlearn.unlearn.retrain import Retrain

N_USERS, N_ITEMS = 60, 40


def make_run(**train) -> RunConfig:
    settings = {"epochs": 8, "batch_size": 128, "lr": 0.02, "patience": 8, **train}
    return RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 16}, "train": settings})


def request_of(train: Interactions, n: int, seed: int) -> Interactions:
    mask = np.zeros(len(train), dtype=bool)
    mask[np.random.default_rng(seed).choice(len(train), size=n, replace=False)] = True
    return train.select(mask)


def weights(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def not_a_training_edge(data: Dataset) -> Interactions:
    """A test-split pair: a real interaction, but never a training edge."""
    return data.test.select(np.arange(len(data.test)) == 0)


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def trained(synthetic):
    data = synthetic()
    model, _ = Trainer(make_run(epochs=20, patience=20), progress=False).fit(data)
    return model, data


@pytest.fixture
def fit_calls(monkeypatch):
    """Every Trainer.fit call, with the training seconds it measured."""
    calls = []
    real_fit = Trainer.fit

    def spy(self, dataset, *args, **kwargs):
        model, result = real_fit(self, dataset, *args, **kwargs)
        calls.append({"train_hash": dataset.train.hash, "seconds": result.seconds})
        return model, result

    monkeypatch.setattr(Trainer, "fit", spy)
    return calls


# ------------------------------------------------------------------------------------------------- Retrain

def test_retrain_trains_from_scratch_on_the_residual_graph(trained, fit_calls, model_cache):
    model, data = trained
    edges = request_of(data.train, 20, seed=1)
    residual = data.train.subtract(edges)
    result = Retrain(run=make_run(), progress=False).prepare(model, data).unlearn(edges)
    assert result.kind == "exact" and result.report["cached"] is False
    assert result.dataset.train.hash == residual.hash and len(result.dataset.train) == len(data.train) - 20
    assert result.model.graph.source_hash == residual.hash
    assert result.model.graph.nnz == 2 * len(residual)
    assert result.forgotten.hash == edges.hash
    assert [call["train_hash"] for call in fit_calls] == [residual.hash]
    # from scratch with an independent seed (the original's + 1): the same weights as a fresh training run
    # on the residual data with that seed, and not those of a run with the original's seed
    assert result.report["seed"] == 1
    fresh, _ = Trainer(make_run(seed=1), progress=False).fit(data.with_train(residual))
    for name, value in fresh.state_dict().items():
        torch.testing.assert_close(result.model.state_dict()[name], value)
    twin, _ = Trainer(make_run(), progress=False).fit(data.with_train(residual))
    assert not torch.equal(twin.embedding.weight, result.model.embedding.weight)
    # the reference was stored in the cache, keyed by its data, with its training time
    (entry,) = list(model_cache.glob("lightgcn-*"))
    assert read_meta(entry)["train_hash"] == residual.hash
    # timed without early stopping's validation passes; the time to the best epoch is reported too
    assert 0 < result.seconds["total"] <= fit_calls[0]["seconds"]
    assert 0 < result.report["seconds_to_best"] <= result.seconds["total"]


def test_retrain_of_the_same_residual_data_hits_the_cache(trained, fit_calls, monkeypatch):
    model, data = trained
    edges = request_of(data.train, 20, seed=1)
    first = Retrain(run=make_run(), progress=False).prepare(model, data).unlearn(edges)
    assert first.report["cached"] is False and len(fit_calls) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(Trainer, "fit", no_training)
    second = Retrain(run=make_run(), progress=False).prepare(model, data).unlearn(edges)
    assert second.report["cached"] is True and second.report["timing_reused"] is True
    assert first.report["timing_reused"] is False
    assert second.report["best_epoch"] == first.report["best_epoch"]
    # the time reported is the training time recorded when the reference was first trained
    assert 0 < second.seconds["total"] <= fit_calls[0]["seconds"]
    for name, value in first.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], value)
    assert second.model.graph.source_hash == first.dataset.train.hash


def test_retrain_cache_is_keyed_by_run_config_and_data(trained, fit_calls, model_cache):
    model, data = trained
    edges = request_of(data.train, 20, seed=1)
    Retrain(run=make_run(), progress=False).prepare(model, data).unlearn(edges)
    other_lr = Retrain(run=make_run(lr=0.01), progress=False).prepare(model, data).unlearn(edges)
    assert other_lr.report["cached"] is False
    other_request = Retrain(run=make_run(), progress=False).prepare(model, data).unlearn(request_of(data.train, 20, 2))
    assert other_request.report["cached"] is False
    assert len(fit_calls) == 3 and len(list(model_cache.glob("lightgcn-*"))) == 3
    assert cache_root() == model_cache


def test_retrain_requests_compose(trained, fit_calls):
    model, data = trained
    first = request_of(data.train, 10, seed=2)
    second = request_of(data.train.subtract(first), 10, seed=3)
    retrain = Retrain(run=make_run(), progress=False).prepare(model, data)
    retrain.unlearn(first)
    result = retrain.unlearn(second)
    assert result.forgotten.hash == first.union(second).hash
    assert result.dataset.train.hash == data.train.subtract(first).subtract(second).hash
    assert fit_calls[-1]["train_hash"] == result.dataset.train.hash


# ----------------------------------------------------------------------------------------------- Fine-tune

@pytest.fixture
def batches(batch_spy):
    """Every (users, positives) batch the trainer draws."""
    return batch_spy()


def positives(seen) -> Interactions:
    users = np.concatenate([s[0] for s in seen])
    items = np.concatenate([s[1] for s in seen])
    return Interactions.from_arrays(users, items, N_USERS, N_ITEMS, on_duplicate="drop"), users.size


def test_finetune_never_sees_forgotten_edges_as_positives(trained, batches):
    model, data = trained
    edges = request_of(data.train, 20, seed=1)
    result = FineTune({"epochs": 2}, run=make_run(), progress=False).prepare(model, data).unlearn(edges)
    pairs, drawn = positives(batches)
    residual = data.train.subtract(edges)
    assert drawn == 2 * len(residual)               # two full passes over the residual edges
    assert pairs.hash == residual.hash              # exactly the residual edges, never a forgotten one
    assert not edges.contains(pairs.users, pairs.items).any()
    assert result.kind == "approximate" and result.dataset.train.hash == residual.hash
    assert result.model.graph.source_hash == residual.hash


def test_finetune_trains_a_copy_and_leaves_the_original_untouched(trained):
    model, data = trained
    before = weights(model)
    graph = model.graph
    result = FineTune({"epochs": 1}, run=make_run(), progress=False).prepare(model, data).unlearn(request_of(data.train, 20, 1))
    assert result.model is not model
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    assert model.graph is graph                     # still attached to the full training graph
    changed = result.model.state_dict()["embedding.weight"] - before["embedding.weight"]
    assert changed.abs().max() > 0                  # the copy did train
    # it is the original model trained on for one epoch over the residual data (same seeds, same result)
    replay = copy.deepcopy(model)
    for p in replay.parameters():
        p.requires_grad_(True)
    replay, _ = Trainer(make_run(epochs=1), progress=False, validate=False).fit(result.dataset, model=replay)
    for name, value in replay.state_dict().items():
        torch.testing.assert_close(result.model.state_dict()[name], value)


def test_finetune_requests_compose(trained, batches):
    model, data = trained
    first = request_of(data.train, 10, seed=2)
    second = request_of(data.train.subtract(first), 10, seed=3)
    finetune = FineTune({"epochs": 1}, run=make_run(), progress=False).prepare(model, data)
    one = finetune.unlearn(first)
    after_first = weights(one.model)
    batches.clear()
    two = finetune.unlearn(second)
    assert two.forgotten.hash == first.union(second).hash
    assert two.dataset.train.hash == data.train.subtract(first).subtract(second).hash
    pairs, _ = positives(batches)
    assert pairs.hash == two.dataset.train.hash     # the first request stays forgotten
    # the second request starts from the first result, which it leaves as it was
    for name, value in one.model.state_dict().items():
        torch.testing.assert_close(value, after_first[name], rtol=0, atol=0)
    assert two.model is not one.model


# -------------------------------------------------------------------------------------------- both refuse

@pytest.mark.parametrize("method", [Retrain, FineTune])
def test_edges_outside_the_current_training_set_are_refused(trained, method, fit_calls):
    model, data = trained
    unlearner = method(run=make_run(), progress=False)
    with pytest.raises(RuntimeError, match="call prepare"):
        unlearner.unlearn(request_of(data.train, 5, seed=1))
    unlearner.prepare(model, data)
    with pytest.raises(ValueError, match="not in the current training set"):
        unlearner.unlearn(not_a_training_edge(data))
    first = request_of(data.train, 5, seed=1)
    unlearner.unlearn(first)
    calls = len(fit_calls)
    # already forgotten: one such edge in a request refuses the whole request, before any training
    mixed = first.select(np.arange(len(first)) == 0).union(request_of(data.train.subtract(first), 5, seed=2))
    with pytest.raises(ValueError, match="not in the current training set"):
        unlearner.unlearn(mixed)
    assert len(fit_calls) == calls
    assert unlearner.state.forgotten.hash == first.hash
