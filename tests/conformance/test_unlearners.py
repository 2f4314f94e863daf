"""The promises of the Unlearner contract, checked for every registered method (architecture.md,
"Contracts"). A new method registered in `unlearn/registry.py` is checked here without a line of test code."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from recunlearn.data.interactions import Interactions
from recunlearn.eval.scorer import Scorer
from recunlearn.unlearn.registry import UNLEARNERS, build_unlearner, unlearner_class

from conformance.conftest import FAST_SETTINGS, RUN, TripwireInteractions

METHODS = sorted(UNLEARNERS)


def make(name: str):
    return build_unlearner(name, FAST_SETTINGS.get(name, {}), run=RUN, progress=False)


def edges_of(data, n: int, seed: int, exclude: Interactions | None = None) -> Interactions:
    pool = data.train if exclude is None else data.train.subtract(exclude)
    mask = np.zeros(len(pool), dtype=bool)
    mask[np.random.default_rng(seed).choice(len(pool), size=n, replace=False)] = True
    return pool.select(mask)


def all_scores(scorer: Scorer) -> torch.Tensor:
    return scorer.score_users(torch.arange(scorer.n_users))


@pytest.mark.parametrize("name", METHODS)
def test_registered_with_name_kind_and_config(name):
    cls = unlearner_class(name)
    assert cls.name == name
    assert cls.kind in ("exact", "approximate", "control")
    cls.config_class()   # every setting has a default


@pytest.mark.parametrize("name", METHODS)
def test_refuses_requests_it_cannot_honour(name, trained):
    model, data = trained
    unlearner = make(name)
    with pytest.raises(RuntimeError, match="prepare"):
        unlearner.unlearn(edges_of(data, 3, seed=1))
    unlearner.prepare(model.clone(), data)
    held_out = data.test.select(np.arange(len(data.test)) < 2)
    with pytest.raises(ValueError, match="not in the current training set"):
        unlearner.unlearn(held_out)
    with pytest.raises(ValueError, match="empty"):
        unlearner.unlearn(Interactions.empty(data.n_users, data.n_items))
    assert len(unlearner.state.forgotten) == 0      # a refused request changes nothing


@pytest.mark.parametrize("name", METHODS)
def test_forgotten_edges_leave_the_residual_and_are_never_positives(name, trained, positives_drawn):
    model, data = trained
    unlearner = make(name).prepare(model.clone(), data)
    positives_drawn.clear()                          # preparation may train on simulated requests
    edges = edges_of(data, 12, seed=2)
    result = unlearner.unlearn(edges)
    assert result.forgotten.hash == edges.hash
    assert result.dataset.train.hash == data.train.subtract(edges).hash
    assert not result.dataset.train.contains(edges.users, edges.items).any()
    for users, items in positives_drawn:
        assert not edges.contains(users, items).any(), f"{name} trained on a forgotten edge as a positive"
    assert result.kind == unlearner.kind
    assert (result.model is not None) == unlearner.has_model   # the CLI decides before any work from has_model
    assert result.seconds["total"] > 0
    assert isinstance(result.scorer, Scorer)
    scores = all_scores(result.scorer)
    assert scores.shape == (data.n_users, data.n_items) and torch.isfinite(scores).all()
    pairs = result.scorer.score_pairs(torch.from_numpy(edges.users), torch.from_numpy(edges.items))
    torch.testing.assert_close(pairs, scores[edges.users, edges.items])


@pytest.mark.parametrize("name", METHODS)
def test_prepare_never_reads_the_test_split(name, trained):
    model, data = trained
    tripwire = TripwireInteractions(data.test.users, data.test.items, data.n_users, data.n_items)
    TripwireInteractions.reads.clear()
    make(name).prepare(model.clone(), replace(data, test=tripwire))
    assert TripwireInteractions.reads == [], f"{name}.prepare read the test split: {TripwireInteractions.reads[:5]}"


@pytest.mark.parametrize("name", METHODS)
def test_sequential_requests_compose(name, trained):
    model, data = trained
    unlearner = make(name).prepare(model.clone(), data)
    first = edges_of(data, 8, seed=3)
    second = edges_of(data, 8, seed=4, exclude=first)
    unlearner.unlearn(first)
    result = unlearner.unlearn(second)
    assert result.forgotten.hash == first.union(second).hash
    assert result.dataset.train.hash == data.train.subtract(first).subtract(second).hash
    with pytest.raises(ValueError, match="not in the current training set"):
        unlearner.unlearn(first.select(np.arange(len(first)) < 1))   # already forgotten
    assert unlearner.state.forgotten.hash == first.union(second).hash


@pytest.mark.parametrize("name", METHODS)
def test_save_load_round_trip(name, trained, tmp_path):
    model, data = trained
    unlearner = make(name).prepare(model.clone(), data)
    first = edges_of(data, 8, seed=5)
    before = unlearner.unlearn(first)
    unlearner.save(tmp_path / name)
    loaded = unlearner_class(name).load(tmp_path / name, model.clone(), data, run=RUN, progress=False)
    assert loaded.state.forgotten.hash == first.hash
    assert loaded.state.dataset.train.hash == before.dataset.train.hash
    assert loaded.prepare_seconds == unlearner.prepare_seconds
    torch.testing.assert_close(all_scores(loaded.state.scorer), all_scores(before.scorer))
    # the next request continues identically from the saved state
    second = edges_of(data, 8, seed=6, exclude=first)
    torch.testing.assert_close(all_scores(loaded.unlearn(second).scorer), all_scores(unlearner.unlearn(second).scorer))


def test_only_methods_with_a_one_off_step_ask_for_preparation():
    assert unlearner_class("unlearnrec").has_preparation()
    assert not any(unlearner_class(name).has_preparation() for name in ("retrain", "finetune", "suppress"))
