"""BPR triple sampling: negatives are never training items, every edge once per epoch, seeded."""
from __future__ import annotations

import numpy as np
import pytest

from recunlearn.data.interactions import Interactions
from recunlearn.data.registry import load_dataset
from recunlearn.data.sampling import bpr_epoch, sample_negatives


@pytest.fixture(scope="module")
def train(data_root) -> Interactions:
    return load_dataset("ml-100k", data_root).train


def epoch_arrays(train: Interactions, seed: int, batch_size: int = 4096):
    batches = list(bpr_epoch(train, np.random.default_rng(seed), batch_size))
    return batches, tuple(np.concatenate(part) for part in zip(*batches))


def test_negatives_are_never_training_items_of_the_user(train):
    rng = np.random.default_rng(0)
    for _ in range(3):
        _, (users, pos, neg) = epoch_arrays(train, int(rng.integers(1 << 30)))
        assert not train.contains(users, neg).any()
        assert neg.min() >= 0 and neg.max() < train.n_items


def test_negatives_for_the_most_active_user_avoid_its_many_items(train):
    heavy = int(np.argmax(train.user_degree()))
    assert train.user_degree()[heavy] > 0.25 * train.n_items  # hundreds of items: rejection must kick in
    users = np.full(50_000, heavy)
    neg = sample_negatives(train, users, np.random.default_rng(1))
    seen = set(train.items[train.users == heavy].tolist())
    assert seen.isdisjoint(neg.tolist())
    assert len(np.unique(neg)) > 0.9 * (train.n_items - len(seen))  # spread over the allowed items


def test_every_training_edge_appears_exactly_once_per_epoch(train):
    batches, (users, pos, neg) = epoch_arrays(train, seed=3, batch_size=5000)
    assert len(users) == len(train)
    pairs = Interactions.from_arrays(users, pos, train.n_users, train.n_items)  # raises on a duplicate pair
    np.testing.assert_array_equal(pairs.keys, train.keys)
    # batches of the requested size, the last one holding the remainder
    assert [len(b[0]) for b in batches[:-1]] == [5000] * (len(batches) - 1)
    assert len(batches[-1][0]) == len(train) - 5000 * (len(batches) - 1)
    assert all(b[0].dtype == b[1].dtype == b[2].dtype == np.int64 for b in batches)


def test_epoch_order_is_shuffled(train):
    _, (users, _, _) = epoch_arrays(train, seed=0)
    assert not np.all(np.diff(users) >= 0)
    # the first batch already mixes many users
    assert len(np.unique(users[:4096])) > 500


def test_same_seed_same_triples_other_seed_other_triples(train):
    _, a = epoch_arrays(train, seed=11)
    _, b = epoch_arrays(train, seed=11)
    _, c = epoch_arrays(train, seed=12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[2], c[2])


def test_user_with_every_item_keeps_a_random_item_instead_of_looping():
    full = Interactions.from_arrays(np.repeat([0], 5), np.arange(5), n_users=2, n_items=5)
    neg = sample_negatives(full, np.zeros(10, dtype=np.int64), np.random.default_rng(0), max_rounds=3)
    assert neg.shape == (10,) and ((neg >= 0) & (neg < 5)).all()
    other = sample_negatives(full, np.ones(10, dtype=np.int64), np.random.default_rng(0))
    assert ((other >= 0) & (other < 5)).all()   # user 1 has no items: any item is a true negative


def test_negatives_are_the_plain_rejection_sampler_draw_for_draw(train):
    """Only clashing draws are checked again: the same draws as re-checking every user on every round."""
    def every_round_rechecks_all(users, rng, max_rounds=20):
        neg = rng.integers(0, train.n_items, size=users.size)
        for _ in range(max_rounds):
            clash = np.flatnonzero(train.contains(users, neg))
            if clash.size == 0:
                break
            neg[clash] = rng.integers(0, train.n_items, size=clash.size)
        return neg

    users = train.users[np.random.default_rng(3).permutation(len(train))]
    np.testing.assert_array_equal(sample_negatives(train, users, np.random.default_rng(7)),
                                  every_round_rechecks_all(users, np.random.default_rng(7)))


def test_part_of_an_epoch_is_the_passs_first_edges_and_draws_only_their_negatives(train, monkeypatch):
    """`edges=k`: the same shuffled order's first k edges, in batches, with negatives drawn for those k alone
    (a quarter-epoch fine-tuning no longer pays the whole pass's negatives)."""
    from recunlearn.data import sampling

    whole = list(bpr_epoch(train, np.random.default_rng(5), 1000))
    drawn_for = []
    real = sampling.sample_negatives
    monkeypatch.setattr(sampling, "sample_negatives",
                        lambda data, users, rng: drawn_for.append(len(users)) or real(data, users, rng))
    part = list(sampling.bpr_epoch(train, np.random.default_rng(5), 1000, edges=2500))
    assert drawn_for == [2500]
    assert [len(users) for users, _, _ in part] == [1000, 1000, 500]
    users, pos, neg = (np.concatenate(a) for a in zip(*part))
    full_users, full_pos, _ = (np.concatenate(a) for a in zip(*whole))
    np.testing.assert_array_equal(users, full_users[:2500])
    np.testing.assert_array_equal(pos, full_pos[:2500])
    assert not train.contains(users, neg).any()
