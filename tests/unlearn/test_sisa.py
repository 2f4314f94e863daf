"""SISA: a random partition of the training edges, one sub-model per shard, scores averaged; a request
retrains exactly the shards that held forgotten edges, from scratch, and leaves the others untouched."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recunlearn.models.registry import build_model
from recunlearn.train.trainer import Trainer
from recunlearn.unlearn.sisa import ShardEnsemble, Sisa, assign_shards, shard_seed
from shard_helpers import SHARD_RUN, SHARDS, from_shards, identical

RUN = SHARD_RUN
pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def data(synthetic):
    return synthetic()


@pytest.fixture(scope="module")
def prepared(data):
    """SISA prepared with the default early stopping; the original model's weights play no part in it."""
    return prepare(data)


def prepare(data, **config) -> Sisa:
    model = build_model(RUN.model, data.n_users, data.n_items)
    return Sisa({"shards": SHARDS, **config}, run=RUN, progress=False).prepare(model, data)


def weights(scorer: ShardEnsemble) -> list[dict[str, torch.Tensor] | None]:
    return [None if m is None else {k: v.clone() for k, v in m.state_dict().items()} for m in scorer.models]


@pytest.fixture
def fits(monkeypatch):
    """The training set and seed of every Trainer.fit call."""
    calls = []
    real_fit = Trainer.fit

    def spy(self, dataset, *args, **kwargs):
        calls.append({"train": dataset.train, "seed": self.cfg.seed, "validates": self.validates,
                      "epochs": self.cfg.epochs})
        return real_fit(self, dataset, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", spy)
    return calls


def test_shards_are_a_reproducible_random_partition(data, prepared):
    n = len(data.train)
    assignment = assign_shards(n, SHARDS, seed=0)
    assert set(np.unique(assignment)) == set(range(SHARDS))
    assert np.bincount(assignment).max() - np.bincount(assignment).min() <= 1      # balanced
    assert np.array_equal(assignment, assign_shards(n, SHARDS, seed=0))
    assert not np.array_equal(assignment, assign_shards(n, SHARDS, seed=1))
    assert np.array_equal(prepared.assignment, assignment)
    # the shards' edges cover the training set, each edge in exactly one shard
    parts = [prepared.shard_edges(k, data.train) for k in range(SHARDS)]
    assert sum(len(p) for p in parts) == n
    union = parts[0]
    for part in parts[1:]:
        union = union.union(part)
    assert union.hash == data.train.hash
    # not a split by user or by item: interactions are dealt out, so a user's edges spread over shards
    assert max(len(np.unique(assignment[data.train.users == u])) for u in range(data.n_users)) > 1


def test_prepare_trains_one_sub_model_per_shard_with_its_own_seed(data, fits):
    sisa = prepare(data)
    assert [call["seed"] for call in fits] == [shard_seed(0, k) for k in range(SHARDS)]
    assert [call["train"].hash for call in fits] == [sisa.shard_edges(k, data.train).hash for k in range(SHARDS)]
    assert all(call["validates"] for call in fits)                     # default: early stopping on validation
    assert isinstance(sisa.state.scorer, ShardEnsemble) and sisa.state.model is None
    assert len({shard_seed(0, k) for k in range(SHARDS)}) == SHARDS


def test_fixed_epochs_train_without_validation(data, fits):
    prepare(data, epochs=2)
    assert all(call["epochs"] == 2 and not call["validates"] for call in fits)


def test_ensemble_scores_are_the_mean_of_the_sub_models(data, prepared):
    ensemble = prepared.state.scorer
    users = torch.arange(data.n_users)
    brute = torch.zeros(data.n_users, data.n_items)
    for model in ensemble.models:
        u, i = model.embed()
        for user in range(data.n_users):
            for item in range(data.n_items):
                brute[user, item] += float(u[user] @ i[item]) / SHARDS
    torch.testing.assert_close(ensemble.score_users(users), brute)
    pairs = (torch.from_numpy(data.train.users), torch.from_numpy(data.train.items))
    torch.testing.assert_close(ensemble.score_pairs(*pairs), brute[pairs])


def test_a_request_retrains_exactly_the_affected_shards(data, fits):
    sisa = prepare(data)
    kept, before = list(sisa.state.scorer.models), weights(sisa.state.scorer)
    edges = from_shards(sisa, data, (0, 2), per_shard=3)
    fits.clear()
    result = sisa.unlearn(edges)
    assert result.report["retrained_shards"] == [0, 2]
    assert sorted(result.report["shard_seconds"]) == [0, 2]
    assert [call["seed"] for call in fits] == [shard_seed(0, 0), shard_seed(0, 2)]
    assert [call["train"].hash for call in fits] == \
        [sisa.shard_edges(k, data.train).subtract(edges).hash for k in (0, 2)]
    after = weights(result.scorer)
    for shard in (1, 3):
        assert identical(after[shard], before[shard]), f"shard {shard} held no forgotten edge but changed"
        assert result.scorer.models[shard] is kept[shard]
    assert not any(identical(after[k], before[k]) for k in (0, 2))
    assert result.model is None and result.kind == "exact"


def test_the_retrained_shards_are_exactly_a_training_without_the_request(data, prepared):
    """Exact unlearning: each retrained sub-model is what training the shard's residual edges from scratch
    with the shard's seed gives; the ensemble then equals SISA trained on the residual data."""
    edges = from_shards(prepared, data, (1, 3), per_shard=4)
    result = prepare(data).unlearn(edges)
    for shard in (1, 3):
        residual_shard = prepared.shard_edges(shard, data.train).subtract(edges)
        run = RUN.model_copy(update={"train": RUN.train.model_copy(update={"seed": shard_seed(0, shard)})})
        fresh, _ = Trainer(run, progress=False).fit(data.with_train(residual_shard))
        assert identical(fresh.state_dict(), result.scorer.models[shard].state_dict())
        assert result.scorer.models[shard].graph.source_hash == residual_shard.hash
    expected = ShardEnsemble([m if k not in (1, 3) else result.scorer.models[k]
                              for k, m in enumerate(prepared.state.scorer.models)])
    users = torch.arange(data.n_users)
    torch.testing.assert_close(result.scorer.score_users(users), expected.score_users(users), rtol=0, atol=0)


def test_sequential_requests_retrain_on_everything_forgotten_so_far(data, prepared, fits):
    first = from_shards(prepared, data, (0,), per_shard=3)
    second = from_shards(prepared, data.with_train(data.train.subtract(first)), (0,), per_shard=3)
    sisa = prepare(data)
    sisa.unlearn(first)
    fits.clear()
    sisa.unlearn(second)
    assert [call["train"].hash for call in fits] == \
        [prepared.shard_edges(0, data.train).subtract(first).subtract(second).hash]


def test_timing_counts_the_retraining_without_validation_passes(data, prepared):
    result = prepare(data).unlearn(from_shards(prepared, data, (2,), per_shard=2))
    seconds = result.seconds
    assert 0 < seconds["total"] <= seconds["wall"] - seconds["excluded_validation"]
    assert seconds["excluded_validation"] > 0                 # early stopping validated, outside the count
    assert result.report["shard_seconds"][2] <= seconds["total"]


def test_save_and_load_continue_exactly(data, prepared, tmp_path):
    sisa = prepare(data)
    sisa.save(tmp_path / "fresh")
    loaded = Sisa.load(tmp_path / "fresh", build_model(RUN.model, data.n_users, data.n_items), data, run=RUN,
                       progress=False)
    assert np.array_equal(loaded.assignment, sisa.assignment)
    assert all(identical(a, b) for a, b in zip(weights(loaded.state.scorer), weights(sisa.state.scorer)))
    first = from_shards(sisa, data, (3,), per_shard=2)
    sisa.unlearn(first)
    sisa.save(tmp_path / "after")
    loaded = Sisa.load(tmp_path / "after", build_model(RUN.model, data.n_users, data.n_items), data, run=RUN,
                       progress=False)
    assert all(identical(a, b) for a, b in zip(weights(loaded.state.scorer), weights(sisa.state.scorer)))
    assert loaded.state.scorer.models[3].graph.source_hash == sisa.state.scorer.models[3].graph.source_hash
    second = from_shards(sisa, data.with_train(data.train.subtract(first)), (0, 3), per_shard=2)
    mine, theirs = sisa.unlearn(second), loaded.unlearn(second)
    assert mine.report["retrained_shards"] == theirs.report["retrained_shards"] == [0, 3]
    assert all(identical(a, b) for a, b in zip(weights(mine.scorer), weights(theirs.scorer)))


def test_an_emptied_shard_leaves_the_ensemble(data):
    sisa = prepare(data, shards=60, epochs=1)          # about ten edges a shard
    emptied = sisa.shard_edges(5, data.train)
    result = sisa.unlearn(emptied)
    assert result.scorer.models[5] is None and len(result.scorer.live) == 59
    assert torch.isfinite(result.scorer.score_users(torch.arange(data.n_users))).all()
