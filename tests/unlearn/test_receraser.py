"""RecEraser: a balanced partition that keeps collaborative structure (balanced k-means on the original
model's embeddings), one sub-model per shard, an attention aggregator over the sub-models; a request
retrains exactly the shards that held forgotten edges, from scratch, and then the aggregator."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recunlearn.data import sampling
from recunlearn.train.trainer import Trainer
from recunlearn.unlearn.receraser import (Aggregator, RecEraser, RecEraserScorer, _greedy_assign, balanced_kmeans,
                                          partition_edges)
from recunlearn.unlearn.sisa import assign_shards, shard_seed
from shard_helpers import SHARD_RUN, SHARDS, from_shards, identical

RUN = SHARD_RUN
pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def original(trained_lightgcn):
    """(the original model, the data): its final embeddings are what the partition clusters."""
    return trained_lightgcn


@pytest.fixture(scope="module")
def embeddings(original):
    model, _ = original
    with torch.no_grad():
        users, items = model.embed()
    return users.numpy(), items.numpy()


@pytest.fixture(scope="module")
def prepared(original):
    return prepare(original)


def prepare(original, **config) -> RecEraser:
    model, data = original
    return RecEraser({"shards": SHARDS, **config}, run=RUN, progress=False).prepare(model.clone(), data)


def weights(module) -> dict[str, torch.Tensor] | None:
    return None if module is None else {k: v.clone() for k, v in module.state_dict().items()}


@pytest.fixture
def fits(monkeypatch):
    """The training set and seed of every Trainer.fit call (the sub-models)."""
    calls = []
    real_fit = Trainer.fit

    def spy(self, dataset, *args, **kwargs):
        calls.append({"train": dataset.train, "seed": self.cfg.seed})
        return real_fit(self, dataset, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", spy)
    return calls


@pytest.fixture
def epochs_drawn(monkeypatch):
    """The training set of every BPR epoch drawn (sub-models and aggregator alike)."""
    drawn = []
    real = sampling.bpr_epoch

    def spy(train, rng, batch_size, **options):
        drawn.append(train)
        return real(train, rng, batch_size, **options)

    monkeypatch.setattr(sampling, "bpr_epoch", spy)
    return drawn


def within_shard_spread(points: np.ndarray, assignment: np.ndarray) -> float:
    """Mean squared distance of a point to its shard's mean (the k-means objective; lower: tighter shards)."""
    return sum(((points[assignment == k] - points[assignment == k].mean(0)) ** 2).sum()
               for k in np.unique(assignment)) / len(points)


# --- the partition -----------------------------------------------------------------------------------
def test_greedy_assignment_takes_nearest_pairs_first_within_capacity():
    dist = np.array([[0.0, 5.0], [1.0, 6.0], [2.0, 0.5], [3.0, 9.0]])
    # nearest first: (0,A) (2,B) (1,A), then A is full at 2: point 3 goes to B despite being nearer A
    assert _greedy_assign(dist, limit=2).tolist() == [0, 0, 1, 1]
    assert _greedy_assign(dist, limit=4).tolist() == [0, 0, 1, 0]


@pytest.mark.parametrize("partition", ["interaction", "user", "item"])
def test_partition_is_balanced_and_puts_each_unit_in_exactly_one_shard(original, embeddings, partition):
    _, data = original
    users, items = embeddings
    capacity = 1.2
    assignment = partition_edges(data.train, users, items, partition, SHARDS, capacity, 10, seed=0)
    assert assignment.shape == (len(data.train),) and set(np.unique(assignment)) <= set(range(SHARDS))
    if partition == "interaction":
        units = np.bincount(assignment, minlength=SHARDS)
        assert units.sum() == len(data.train)
        n = len(data.train)
    else:
        nodes = data.train.users if partition == "user" else data.train.items
        for node in np.unique(nodes):                          # a user's (item's) edges stay together
            assert len(np.unique(assignment[nodes == node])) == 1
        node_shard = {int(v): int(assignment[np.flatnonzero(nodes == v)[0]]) for v in np.unique(nodes)}
        units = np.bincount(list(node_shard.values()), minlength=SHARDS)
        n = len(node_shard)
    assert units.max() <= math.ceil(capacity * n / SHARDS)
    assert np.array_equal(assignment, partition_edges(data.train, users, items, partition, SHARDS, capacity, 10,
                                                      seed=0))


def test_exact_capacity_gives_equal_shards(original, embeddings):
    _, data = original
    assignment = partition_edges(data.train, *embeddings, "interaction", SHARDS, 1.0, 10, seed=0)
    sizes = np.bincount(assignment, minlength=SHARDS)
    assert sizes.max() - sizes.min() <= SHARDS          # ceil(n / K) each, the last one takes the rest


def test_partition_keeps_collaborative_structure_better_than_random(original, embeddings):
    _, data = original
    users, items = embeddings
    points = np.concatenate([users[data.train.users], items[data.train.items]], axis=1)
    clustered = partition_edges(data.train, users, items, "interaction", SHARDS, 1.2, 10, seed=0)
    random = assign_shards(len(data.train), SHARDS, seed=0)
    assert within_shard_spread(points, clustered) < 0.8 * within_shard_spread(points, random)
    # two shards by user: the generated data's two taste groups (users 0-29, 30-59) end up apart
    by_user = partition_edges(data.train, users, items, "user", 2, 1.0, 10, seed=0)
    group = (data.train.users >= 30).astype(int)
    agreement = max(np.mean(by_user == group), np.mean(by_user != group))
    assert agreement > 0.9


def test_balanced_kmeans_of_separated_clusters_finds_them():
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(size=(20, 2)) for c in centres])
    assignment = balanced_kmeans([(points, np.arange(60))], 3, 1.0, 5, seed=1)
    for block in range(3):
        assert len(np.unique(assignment[block * 20:(block + 1) * 20])) == 1
    assert len(np.unique(assignment)) == 3


def test_more_shards_than_units_is_a_clear_error(original, embeddings):
    _, data = original
    with pytest.raises(ValueError, match=r"receraser: 100 shards but only 60 users with training interactions"):
        partition_edges(data.train, *embeddings, "user", 100, 1.2, 10, seed=0)
    with pytest.raises(ValueError, match="validation error"):
        RecEraser({"partition": "session"}, run=RUN)


# --- sub-models and the aggregator ---------------------------------------------------------------------
def test_prepare_trains_one_sub_model_per_shard_of_the_partition(original, embeddings, fits):
    model, data = original
    eraser = prepare(original)
    expected = partition_edges(data.train, *embeddings, "interaction", SHARDS, 1.2, 10, seed=0)
    assert np.array_equal(eraser.assignment, expected)
    assert [call["seed"] for call in fits] == [shard_seed(0, k) for k in range(SHARDS)]
    assert [call["train"].hash for call in fits] == [eraser.shard_edges(k, data.train).hash for k in range(SHARDS)]
    scorer = eraser.state.scorer
    assert isinstance(scorer, RecEraserScorer) and eraser.state.model is None
    assert eraser.aggregator_seed() not in {shard_seed(0, k) for k in range(SHARDS)}


def test_scores_are_the_attention_weighted_aggregates(original, prepared):
    """The score is (Σ_k α_uk t_uk)·(Σ_k β_ik t_ik), t = the shard's transferred embedding and α (β) the
    softmax over shards of hᵀ ReLU(W t + b), written out here one node and one shard at a time."""
    _, data = original
    scorer = prepared.state.scorer
    agg = scorer.aggregator

    def aggregate(node: int, of_users: bool) -> torch.Tensor:
        attention = agg.user_attention if of_users else agg.item_attention
        ts, logits = [], []
        for k, model in enumerate(scorer.models):
            e = model.final_embeddings()[0 if of_users else 1][node]
            t = e @ agg.transfer[k] + agg.transfer_bias[k, 0]
            ts.append(t)
            logits.append(attention[2].weight[0] @ torch.relu(attention[0].weight @ t + attention[0].bias))
        alpha = torch.softmax(torch.stack(logits), 0)
        return sum(a * t for a, t in zip(alpha, ts))

    with torch.no_grad():
        items = torch.stack([aggregate(i, False) for i in range(data.n_items)])
        for user in (0, 17, 45):
            torch.testing.assert_close(scorer.score_users(torch.tensor([user]))[0], aggregate(user, True) @ items.T)
    pairs = (torch.from_numpy(data.train.users), torch.from_numpy(data.train.items))
    all_scores = scorer.score_users(torch.arange(data.n_users))
    torch.testing.assert_close(scorer.score_pairs(*pairs), all_scores[pairs])


def test_the_aggregator_learns_from_the_training_data(original, prepared):
    """It learned something: its BPR loss on the training edges is below that of its untrained start."""
    _, data = original
    scorer = prepared.state.scorer
    fresh = RecEraserScorer(scorer.models, prepared._new_aggregator(SHARDS).eval())
    users, pos = torch.from_numpy(data.train.users), torch.from_numpy(data.train.items)
    rng = np.random.default_rng(0)
    neg = torch.from_numpy(sampling.sample_negatives(data.train, data.train.users, rng))

    def loss(s):
        return torch.nn.functional.softplus(s.score_pairs(users, neg) - s.score_pairs(users, pos)).mean()

    assert loss(scorer) < loss(fresh)


# --- requests ------------------------------------------------------------------------------------------
def test_a_request_retrains_exactly_the_affected_shards_and_the_aggregator(original, fits, epochs_drawn):
    model, data = original
    eraser = prepare(original)
    kept = list(eraser.state.scorer.models)
    before = [weights(m) for m in kept]
    old_aggregator = weights(eraser.state.scorer.aggregator)
    edges = from_shards(eraser, data, (0, 2), per_shard=3)
    fits.clear()
    epochs_drawn.clear()
    result = eraser.unlearn(edges)
    assert result.report["retrained_shards"] == [0, 2]
    assert [call["seed"] for call in fits] == [shard_seed(0, 0), shard_seed(0, 2)]
    assert [call["train"].hash for call in fits] == \
        [eraser.shard_edges(k, data.train).subtract(edges).hash for k in (0, 2)]
    for shard in (1, 3):                                   # untouched: the same objects, the same weights
        assert result.scorer.models[shard] is kept[shard]
        assert identical(weights(result.scorer.models[shard]), before[shard])
    # each retrained sub-model is, bit for bit, a from-scratch training of the shard's residual edges
    for shard in (0, 2):
        residual_shard = eraser.shard_edges(shard, data.train).subtract(edges)
        run = RUN.model_copy(update={"train": RUN.train.model_copy(update={"seed": shard_seed(0, shard)})})
        fresh, _ = Trainer(run, progress=False).fit(data.with_train(residual_shard))
        assert identical(fresh.state_dict(), weights(result.scorer.models[shard]))
        assert result.scorer.models[shard].graph.source_hash == residual_shard.hash
    # the aggregator is trained afresh on the whole residual data, and is the one a fresh fit gives
    residual = data.with_train(data.train.subtract(edges))
    assert residual.train.hash in {train.hash for train in epochs_drawn}
    assert not identical(weights(result.scorer.aggregator), old_aggregator)
    again = eraser._fit_aggregator(result.scorer.models, residual).scorer
    assert identical(weights(again.aggregator), weights(result.scorer.aggregator))
    users = torch.arange(data.n_users)
    torch.testing.assert_close(result.scorer.score_users(users), again.score_users(users), rtol=0, atol=0)
    assert result.model is None and result.kind == "exact"


def test_forgotten_edges_never_reach_any_training_set(original, epochs_drawn):
    model, data = original
    eraser = prepare(original, partition="user")
    first = data.train.select(data.train.users == 5)                     # a whole user's history
    rng = np.random.default_rng(3)
    rest = data.train.subtract(first)
    second = rest.select(rng.random(len(rest)) < 0.05)
    forgotten = first.union(second)
    for request, gone in ((first, first), (second, forgotten)):      # forgotten so far, at each request
        epochs_drawn.clear()
        result = eraser.unlearn(request)
        assert epochs_drawn, "no training happened"
        for train in epochs_drawn:
            assert not train.contains(gone.users, gone.items).any()
    for shard, sub_model in enumerate(result.scorer.models):
        if sub_model is not None:
            graph_edges = eraser.shard_edges(shard, result.dataset.train)
            assert sub_model.graph.source_hash == graph_edges.hash
            assert not graph_edges.contains(forgotten.users, forgotten.items).any()


def test_a_user_partition_retrains_one_shard_for_a_user_erasure(original):
    _, data = original
    eraser = prepare(original, partition="user", aggregator_epochs=2)
    history = data.train.select(data.train.users == 11)
    shard = int(eraser.assignment[data.train.users == 11][0])
    result = eraser.unlearn(history)
    assert result.report["retrained_shards"] == [shard]
    assert result.report["aggregator_epochs"] == 2


def test_timing_counts_training_without_validation_passes(original, prepared):
    _, data = original
    result = prepare(original).unlearn(from_shards(prepared, data, (1,), per_shard=2))
    seconds = result.seconds
    assert 0 < seconds["total"] <= seconds["wall"] - seconds["excluded_validation"]
    assert seconds["excluded_validation"] > 0
    assert result.report["shard_seconds"][1] + result.report["aggregator_seconds"] <= seconds["total"]


def test_save_and_load_continue_exactly(original, tmp_path):
    model, data = original
    eraser = prepare(original, aggregator_epochs=3)
    first = from_shards(eraser, data, (3,), per_shard=2)
    eraser.unlearn(first)
    eraser.save(tmp_path / "after")
    loaded = RecEraser.load(tmp_path / "after", model.clone(), data, run=RUN, progress=False)
    assert np.array_equal(loaded.assignment, eraser.assignment)
    assert identical(weights(loaded.state.scorer.aggregator), weights(eraser.state.scorer.aggregator))
    users = torch.arange(data.n_users)
    torch.testing.assert_close(loaded.state.scorer.score_users(users), eraser.state.scorer.score_users(users),
                               rtol=0, atol=0)
    second = from_shards(eraser, data.with_train(data.train.subtract(first)), (0, 3), per_shard=2)
    mine, theirs = eraser.unlearn(second), loaded.unlearn(second)
    assert mine.report["retrained_shards"] == theirs.report["retrained_shards"] == [0, 3]
    torch.testing.assert_close(mine.scorer.score_users(users), theirs.scorer.score_users(users), rtol=0, atol=0)


def test_an_emptied_shard_leaves_the_aggregation(original):
    _, data = original
    eraser = prepare(original, shards=40, epochs=1, aggregator_epochs=1)
    emptied = eraser.shard_edges(5, data.train)
    result = eraser.unlearn(emptied)
    assert result.scorer.models[5] is None
    assert result.scorer.aggregator.transfer.shape[0] == 39
    assert torch.isfinite(result.scorer.score_users(torch.arange(data.n_users))).all()


def test_aggregator_shapes():
    agg = Aggregator(3, 8, 4, torch.Generator().manual_seed(0))
    users, items = torch.randn(3, 5, 8), torch.randn(3, 7, 8)
    u, i = agg(users, items)
    assert u.shape == (5, 8) and i.shape == (7, 8)
    rows = torch.tensor([4, 0, 4, 2])
    torch.testing.assert_close(agg.combine_rows(users, rows, agg.user_attention), u[rows])
