"""The promises of the Recommender contract, checked for every registered backbone."""
from __future__ import annotations

import io

import pytest
import torch

from recunlearn.data.graph import build_graph
from recunlearn.models.registry import MODELS, build_model, model_config

from conformance.conftest import generated_dataset

NAMES = sorted(MODELS)


@pytest.fixture(scope="module")
def data():
    return generated_dataset()


def built(name, data, seed=0):
    torch.manual_seed(seed)
    model = build_model(model_config(name, {"dim": 8}), data.n_users, data.n_items, content=data)
    return model.attach(build_graph(data.train))


@pytest.mark.parametrize("name", NAMES)
def test_embed_score_and_pairs_agree(name, data):
    model = built(name, data).eval()
    users, items = model.embed()
    assert users.shape == (data.n_users, 8) and items.shape == (data.n_items, 8)
    batch = torch.tensor([0, 3, 7])
    scores = model.score_users(batch)
    torch.testing.assert_close(scores, users[batch] @ items.T)
    pick = torch.tensor([1, 5, 2])
    torch.testing.assert_close(model.score_pairs(batch, pick), scores[torch.arange(3), pick])
    # scoring on an explicit graph equals scoring on the attached one when it is the same graph
    torch.testing.assert_close(model.score(batch, build_graph(data.train)), scores)


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_and_reaches_every_embedding_it_uses(name, data):
    model = built(name, data).train()
    model.start_epoch(torch.Generator().manual_seed(0))
    batch = (torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8]))
    total, terms = model.loss(batch)
    assert torch.isfinite(total) and {"bpr", "reg"} <= set(terms)
    total.backward()
    assert model.embedding.weight.grad[0].abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_weights_round_trip_through_weights_only_load(name, data):
    model = built(name, data).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = built(name, data, seed=1).eval()
    other.load_state_dict(torch.load(buffer, weights_only=True))
    other.invalidate()
    torch.testing.assert_close(other.score_users(torch.arange(5)), model.score_users(torch.arange(5)))


@pytest.mark.parametrize("name", NAMES)
def test_clone_is_independent(name, data):
    model = built(name, data).eval()
    copy = model.clone()
    with torch.no_grad():
        copy.embedding.weight.add_(1.0)
    copy.invalidate()
    assert not torch.equal(copy.score_users(torch.arange(3)), model.score_users(torch.arange(3)))
