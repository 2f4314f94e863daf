"""Splits: joint id maps, the seeded 8:1:1 split per user, validation carved from a shipped train set."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from recunlearn.data.interactions import DataError, Interactions
from recunlearn.data.loaders import read_udata
from recunlearn.data.split import (build_id_maps, carve_validation, make_dataset, split_per_user,
                                   users_without_train)


def frame(pairs: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["user", "item"])


def per_user(users: list[int]) -> pd.DataFrame:
    """Users 0, 1, ... with the given numbers of interactions, on items 0..n-1."""
    return frame([(u, i) for u, n in enumerate(users) for i in range(n)])


def degrees(data: Interactions) -> list[int]:
    return data.user_degree().tolist()


def as_pairs(data: Interactions, dataset) -> set[tuple]:
    return set(zip(dataset.user_ids.label(data.users).tolist(), dataset.item_ids.label(data.items).tolist()))


# ------------------------------------------------------------------------------------------------- id maps

def test_id_maps_are_joint_sorted_and_only_over_ids_that_occur():
    users, items = build_id_maps({"train": frame([(30, 7), (10, 5)]), "test": frame([(20, 9), (10, 7)])})
    assert users.labels.tolist() == [10, 20, 30]
    assert items.labels.tolist() == [5, 7, 9]


def test_id_maps_with_text_and_number_ids_compare_as_text():
    users, _ = build_id_maps({"train": frame([(1, "a")]), "test": frame([("u2", "a")])})
    assert users.labels.tolist() == ["1", "u2"]


def test_dataset_with_text_ids_maps_both_splits():
    ds = make_dataset({"train": frame([(1, "a"), (1, "b")]), "test": frame([("u2", "a")])}, "t", valid_ratio=0)
    assert ds.user_ids.labels.tolist() == ["1", "u2"]
    assert as_pairs(ds.test, ds) == {("u2", "a")}


# ------------------------------------------------------------------------------------------- 8:1:1 per user

@pytest.mark.parametrize("n, expected", [(1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (5, (3, 1, 1)),
                                         (10, (8, 1, 1)), (20, (16, 2, 2)), (29, (25, 2, 2)), (30, (24, 3, 3))])
def test_split_counts_per_user(n, expected):
    ds = make_dataset({"all": per_user([n])}, "t")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == expected


def test_split_is_a_partition_of_all_interactions():
    data = per_user([12, 40, 3, 1, 25])
    ds = make_dataset({"all": data}, "t", seed=3)
    parts = [as_pairs(s, ds) for s in (ds.train, ds.valid, ds.test)]
    assert set().union(*parts) == set(data.itertuples(index=False, name=None))
    assert sum(map(len, parts)) == len(data)
    assert degrees(ds.test) == [1, 4, 1, 0, 2] and degrees(ds.valid) == [1, 4, 1, 0, 2]


def test_same_seed_same_split_different_seed_different():
    data = per_user([50] * 20)
    a, b, c = (make_dataset({"all": data}, "t", seed=s) for s in (7, 7, 8))
    assert a.hash == b.hash and np.array_equal(a.test.keys, b.test.keys)
    assert a.hash != c.hash and not np.array_equal(a.test.keys, c.test.keys)


def test_split_does_not_depend_on_row_order():
    data = per_user([30, 17, 9])
    shuffled = data.sample(frac=1.0, random_state=1)
    assert make_dataset({"all": data}, "t").hash == make_dataset({"all": shuffled}, "t").hash


def test_split_is_random_within_users():
    """Held-out items are not simply the first or last ones of each user."""
    ds = make_dataset({"all": per_user([100] * 50)}, "t", seed=0)
    held_out = ds.test.items
    assert 20 < held_out.mean() < 80 and len(np.unique(held_out)) > 50


def test_split_custom_ratios_and_validation():
    data = Interactions.from_arrays(np.repeat([0, 1], 10), np.tile(np.arange(10), 2), 2, 10)
    sets = split_per_user(data, (0.6, 0.2, 0.2), seed=0)
    assert degrees(sets["train"]) == [6, 6] and degrees(sets["valid"]) == [2, 2] and degrees(sets["test"]) == [2, 2]
    with pytest.raises(ValueError, match="summing to 1"):
        split_per_user(data, (0.8, 0.1, 0.2))


def test_split_of_many_users_keeps_the_ratios():
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 5_000 * 2_000, 200_000))
    data = Interactions.from_arrays(keys // 2_000, keys % 2_000, 5_000, 2_000)
    sets = split_per_user(data, seed=0)
    assert sum(len(s) for s in sets.values()) == len(data)
    n = data.user_degree()
    assert np.array_equal(sets["test"].user_degree(), np.maximum(n // 10, 1))
    assert np.array_equal(sets["valid"].user_degree(), np.maximum(n // 10, 1))


# ---------------------------------------------------------------------------------- validation from train

def test_train_test_given_carves_validation_from_train():
    train = per_user([20, 10, 1, 2])
    test = frame([(0, 100), (1, 100), (2, 100), (3, 100)])
    ds = make_dataset({"train": train, "test": test}, "t", seed=0, valid_ratio=0.1)
    assert degrees(ds.valid) == [2, 1, 0, 1]
    assert degrees(ds.train) == [18, 9, 1, 1]
    assert as_pairs(ds.test, ds) == set(test.itertuples(index=False, name=None))
    assert as_pairs(ds.train, ds) | as_pairs(ds.valid, ds) == set(train.itertuples(index=False, name=None))


def test_carved_validation_is_seeded():
    train = Interactions.from_arrays(np.repeat(np.arange(30), 20), np.tile(np.arange(20), 30), 30, 20)
    first, second, other = (carve_validation(train, 0.1, seed)[1] for seed in (1, 1, 2))
    assert np.array_equal(first.keys, second.keys) and not np.array_equal(first.keys, other.keys)
    assert len(first) == 60


def test_valid_ratio_zero_and_out_of_range():
    train = Interactions.from_arrays([0, 0, 0], [0, 1, 2], 1, 3)
    assert len(carve_validation(train, 0.0)[1]) == 0
    with pytest.raises(ValueError, match="valid_ratio"):
        carve_validation(train, 1.0)


def test_three_splits_given_are_used_as_they_are():
    ds = make_dataset({"train": frame([(1, 1), (1, 2)]), "valid": frame([(1, 3)]), "test": frame([(2, 1)])}, "t")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (2, 1, 1)
    assert ds.user_ids.labels.tolist() == [1, 2] and ds.item_ids.labels.tolist() == [1, 2, 3]


# --------------------------------------------------------------------------------------------------- errors

def test_overlapping_splits_are_an_error():
    with pytest.raises(DataError, match=r"1 \(user, item\) pairs are in both train and test, first \(user 1, item 2\)"):
        make_dataset({"train": frame([(1, 1), (1, 2)]), "test": frame([(1, 2)])}, "t")
    with pytest.raises(DataError, match="both valid and test"):
        make_dataset({"train": frame([(1, 1)]), "valid": frame([(2, 2)]), "test": frame([(2, 2)])}, "t")


def test_unknown_split_names_are_an_error():
    with pytest.raises(DataError, match=r"splits \['train', 'validation'\] are not one of"):
        make_dataset({"train": frame([(1, 1)]), "validation": frame([(1, 2)])}, "t")


def test_duplicates_inside_a_split_follow_on_duplicate():
    data = frame([(1, 1), (1, 1), (1, 2)])
    with pytest.raises(DataError, match="duplicate"):
        make_dataset({"train": data, "test": frame([(1, 3)])}, "t")
    ds = make_dataset({"train": data, "test": frame([(1, 3)])}, "t", on_duplicate="drop", valid_ratio=0)
    assert len(ds.train) == 2


def test_users_without_training_interactions_are_allowed_and_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="recunlearn.data.split"):
        ds = make_dataset({"train": frame([(1, 1), (1, 2)]), "valid": frame([(2, 1)]), "test": frame([(3, 2)])}, "t")
    assert ds.n_users == 3
    assert users_without_train(ds).tolist() == [1, 2]
    assert "2 users have no training interactions" in caplog.text


# ------------------------------------------------------------------------------------------------ real data

def test_ml100k_split_8_1_1(data_root):
    ratings = read_udata(data_root / "ml-100k" / "u.data.gz")
    ds = make_dataset({"all": ratings}, "ml-100k", seed=0)
    assert (ds.n_users, ds.n_items) == (943, 1682)
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 100_000
    n = ratings.groupby("user").size().sort_index().to_numpy()  # every user has >= 20 ratings
    assert np.array_equal(ds.test.user_degree(), n // 10)
    assert np.array_equal(ds.valid.user_degree(), n // 10)
    assert len(ds.test) == int((n // 10).sum()) == 9_596
    assert users_without_train(ds).size == 0
