"""Unlearning requests: generators (sizes, reproducibility, sampling modes), adversarial edges on a hand-built
case, request files (round trip, validation errors) and splitting into streams."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from recunlearn.data.interactions import DataError, Dataset, IdMap, Interactions
from recunlearn.data.requests import (GENERATORS, Request, adversarial_edges, adversarial_request, item_request,
                                      parse_spec, poisoned_dataset, random_request, subject_request, user_request)
from recunlearn.eval.scorer import EmbeddingScorer

DATA = Path(os.environ.get("RECUNLEARN_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    try:
        from recunlearn.data.registry import load_dataset
    except ImportError:
        from recunlearn.data.loaders import read_udata
        from recunlearn.data.split import make_dataset
        return make_dataset({"all": read_udata(DATA / "ml-100k" / "u.data.gz")}, "ml-100k", seed=0)
    return load_dataset("ml-100k", root=DATA, download=False)


def pairs(pair_list, n_users: int, n_items: int) -> Interactions:
    users, items = zip(*pair_list) if pair_list else ((), ())
    return Interactions.from_arrays(users, items, n_users, n_items)


def tiny(train, valid=(), test=(), n_users: int = 3, n_items: int = 4, name: str = "tiny") -> Dataset:
    """A dataset whose original ids differ from the indices: users 100, 101, ...; items 'a', 'b', ..."""
    return Dataset(name, pairs(train, n_users, n_items), pairs(valid, n_users, n_items),
                   pairs(test, n_users, n_items), IdMap(np.arange(100, 100 + n_users)),
                   IdMap(np.array([chr(ord("a") + i) for i in range(n_items)], dtype=object)))


def keys(edges: Interactions) -> set[tuple[int, int]]:
    return set(zip(edges.users.tolist(), edges.items.tolist()))


# ------------------------------------------------------------------------------------------- generators

def test_random_request_size_subset_and_seeds(ml100k):
    request = random_request(ml100k, 0.05, seed=1)
    assert len(request) == round(0.05 * len(ml100k.train))
    assert ml100k.train.contains(request.edges.users, request.edges.items).all()
    assert (request.kind, request.params, request.seed) == ("random", {"rho": 0.05}, 1)
    assert (request.dataset, request.data_hash, request.origin_hash) == ("ml-100k", ml100k.hash, ml100k.hash)
    assert np.array_equal(random_request(ml100k, 0.05, seed=1).edges.keys, request.edges.keys)
    assert not np.array_equal(random_request(ml100k, 0.05, seed=2).edges.keys, request.edges.keys)


def test_user_request_is_exactly_the_sampled_users_training_edges(ml100k):
    request = user_request(ml100k, 0.05, "random", seed=3)
    degree = ml100k.train.user_degree()
    chosen = request.users()
    assert chosen.size == math.ceil(0.05 * np.count_nonzero(degree))
    assert np.array_equal(request.edges.keys, ml100k.train.select(np.isin(ml100k.train.users, chosen)).keys)
    assert np.array_equal(user_request(ml100k, 0.05, "random", seed=3).edges.keys, request.edges.keys)
    assert not np.array_equal(user_request(ml100k, 0.05, "random", seed=4).users(), chosen)


@pytest.mark.parametrize("mode, most_active", [("core", True), ("edge", False)])
def test_core_and_edge_users_are_the_most_and_least_active(ml100k, mode, most_active):
    degree = ml100k.train.user_degree()
    chosen = user_request(ml100k, 0.1, mode, seed=0).users()
    others = np.setdiff1d(np.flatnonzero(degree > 0), chosen)
    if most_active:
        assert degree[chosen].min() >= degree[others].max()
    else:
        assert degree[chosen].max() <= degree[others].min()


def test_ties_in_degree_are_broken_by_the_seed():
    dataset = tiny([(u, u % 4) for u in range(20)], n_users=20)  # every user has degree 1
    picks = {tuple(user_request(dataset, 0.25, "core", seed=s).users()) for s in range(5)}
    assert len(picks) > 1
    assert user_request(dataset, 0.25, "core", seed=7).users().tolist() == \
        user_request(dataset, 0.25, "core", seed=7).users().tolist()


def test_item_request_covers_whole_items_and_popular_picks_the_most_popular(ml100k):
    degree = ml100k.train.item_degree()
    request = item_request(ml100k, 0.02, "popular", seed=0)
    chosen = request.items()
    assert chosen.size == math.ceil(0.02 * np.count_nonzero(degree))
    assert np.array_equal(request.edges.keys, ml100k.train.select(np.isin(ml100k.train.items, chosen)).keys)
    assert degree[chosen].min() >= degree[np.setdiff1d(np.flatnonzero(degree > 0), chosen)].max()
    assert item_request(ml100k, 0.02, "random", seed=0).params == {"rho": 0.02, "mode": "random"}


def test_generator_arguments_are_checked(ml100k):
    with pytest.raises(ValueError, match="rho must be a fraction in"):
        random_request(ml100k, 0.0, seed=0)
    with pytest.raises(ValueError, match="known modes: random, core, edge"):
        user_request(ml100k, 0.1, "popular", seed=0)


# ------------------------------------------------------------------------------------------- adversarial

# Scores u0: [3, -2, 1, -5]; u1: [6, -4, 2, -10]; u2: [-3, 2, -1, 5]. Observed: u0 {a, c, d (test)},
# u1 {a}, u2 {b, d}. Lowest unobserved item per user: u0 -> b (d is in test), u1 -> d, u2 -> a.
# Lowest unobserved user per item: a -> u2, b -> u1, c -> u2, d -> u1.
ADVERSARIAL_TRAIN = [(0, 0), (1, 0), (2, 1), (0, 2), (2, 3)]
ADVERSARIAL_TEST = [(0, 3)]
USER_SIDE = {(0, 1), (1, 3), (2, 0)}
ITEM_SIDE = {(2, 0), (1, 1), (2, 2), (1, 3)}


@pytest.fixture
def handmade():
    dataset = tiny(ADVERSARIAL_TRAIN, test=ADVERSARIAL_TEST)
    scorer = EmbeddingScorer(torch.tensor([[1.0], [2.0], [-1.0]]), torch.tensor([[3.0], [-2.0], [1.0], [-5.0]]))
    return dataset, scorer


@pytest.mark.parametrize("rho_items, expected", [(1.0, USER_SIDE | ITEM_SIDE), (0.0, USER_SIDE)])
def test_adversarial_edges_are_the_lowest_scored_unobserved_pairs(handmade, rho_items, expected):
    dataset, scorer = handmade
    injected = adversarial_edges(dataset, scorer, rho_users=1.0, rho_items=rho_items, seed=0, batch_size=2)
    assert keys(injected) == expected


def test_adversarial_edges_match_a_brute_force_reference():
    rng = np.random.default_rng(0)
    n_users, n_items = 23, 17
    observed = rng.random((n_users, n_items)) < 0.3
    observed[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # everyone has a training edge
    observed[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    dataset = tiny(list(zip(*np.nonzero(observed))), n_users=n_users, n_items=n_items)
    user_emb, item_emb = torch.randn(n_users, 4), torch.randn(n_items, 4)
    scores = np.where(observed, np.inf, (user_emb @ item_emb.T).numpy())
    expected = {(u, int(scores[u].argmin())) for u in range(n_users)} | \
        {(int(scores[:, i].argmin()), i) for i in range(n_items)}
    injected = adversarial_edges(dataset, EmbeddingScorer(user_emb, item_emb), 1.0, 1.0, seed=0, batch_size=5)
    assert keys(injected) == expected


def test_adversarial_sampling_is_seeded(ml100k):
    scorer = EmbeddingScorer(torch.randn(ml100k.n_users, 8, generator=torch.Generator().manual_seed(0)),
                             torch.randn(ml100k.n_items, 8, generator=torch.Generator().manual_seed(1)))
    first = adversarial_edges(ml100k, scorer, rho_users=0.1, rho_items=0.0, seed=5)
    assert len(first) == math.ceil(0.1 * ml100k.n_users)
    assert np.array_equal(adversarial_edges(ml100k, scorer, 0.1, 0.0, seed=5).keys, first.keys)
    assert not np.array_equal(adversarial_edges(ml100k, scorer, 0.1, 0.0, seed=6).keys, first.keys)


def test_poisoned_dataset_and_adversarial_request(handmade, tmp_path):
    clean, scorer = handmade
    injected = adversarial_edges(clean, scorer, seed=0)
    poisoned = poisoned_dataset(clean, injected)
    assert keys(poisoned.train) == set(ADVERSARIAL_TRAIN) | keys(injected)
    request = adversarial_request(poisoned, injected, seed=0, params={"rho_users": 1.0, "rho_items": 1.0})
    assert np.array_equal(request.edges.keys, injected.keys)
    assert (request.kind, request.data_hash, request.origin_hash) == ("adversarial", poisoned.hash, clean.hash)
    path = request.save(tmp_path / "adversarial.json")
    assert np.array_equal(Request.load(path, poisoned).edges.keys, injected.keys)
    with pytest.raises(DataError, match="load it against the poisoned dataset"):
        Request.load(path, clean)
    with pytest.raises(DataError, match="not all in this dataset's training set"):
        adversarial_request(clean, injected, seed=0)
    with pytest.raises(DataError, match=r"injected edge \(user 100, item 'a'\) is already an interaction"):
        poisoned_dataset(clean, pairs([(0, 0)], 3, 4))


# ------------------------------------------------------------------------------------------- files

def test_save_load_round_trip(ml100k, tmp_path):
    request = user_request(ml100k, 0.02, "core", seed=9)
    path = request.save(tmp_path / "requests" / "user.json")
    assert os.listdir(path.parent) == ["user.json"]  # the temporary file was renamed into place
    record = json.loads(path.read_text())
    assert record["edges"]["user"] == ml100k.user_ids.label(request.edges.users).tolist()
    assert record["edges"]["item_index"] == request.edges.items.tolist()
    loaded = Request.load(path, ml100k)
    assert np.array_equal(loaded.edges.keys, request.edges.keys)
    assert (loaded.kind, loaded.params, loaded.seed, loaded.dataset, loaded.data_hash) == \
        ("user", {"rho": 0.02, "mode": "core"}, 9, "ml-100k", ml100k.hash)


@pytest.fixture
def saved(tmp_path):
    dataset = tiny([(0, 0), (0, 1), (1, 2), (2, 3)], valid=[(1, 0)], test=[(2, 1)])
    path = Request.create(dataset, "random", {"rho": 0.5}, 0, pairs([(0, 1), (1, 2)], 3, 4)).save(tmp_path / "r.json")
    return dataset, path, json.loads(path.read_text())


def rewrite(path: Path, record: dict, **edges) -> Path:
    record["edges"].update(edges)
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("edges, message", [
    ({"user": [100, 999]}, r"unknown user 999"),
    ({"item": ["b", "z"]}, r"unknown item 'z'"),
    ({"user": [100, 102], "item": ["b", "b"], "user_index": [0, 2], "item_index": [1, 1]},
     r"edge \(user 102, item 'b'\) is not a training interaction of 'tiny' \(it is in the test split.*"
     r"requests can only delete training interactions"),
    ({"user": [100, 100], "item": ["b", "b"], "user_index": [0, 0], "item_index": [1, 1]},
     r"duplicate edge \(user 100, item 'b'\)"),
    ({"user_index": [1, 1]}, r"stored indices do not match"),
    ({"item": ["b"]}, r"malformed request file: edges must be four lists of `size` entries"),
    ({"user": 100}, r"malformed request file: edges must be four lists of `size` entries"),
    ({"user_index": ["a", 1]}, r"malformed request file: user_index and item_index must hold whole numbers"),
    ({"user_index": [0, 99]}, r"r.json: malformed request file: user index 99 is outside 0..2"),
    ({"user": [[100], 101]}, r"user \[100\] is not an id"),
])
def test_load_rejects_bad_edges_with_a_clear_message(saved, edges, message):
    dataset, path, record = saved
    with pytest.raises(DataError, match=message):
        Request.load(rewrite(path, record, **edges), dataset)


def test_load_rejects_another_dataset(saved):
    dataset, path, record = saved
    other = tiny([(0, 0), (1, 2)], name="other")
    with pytest.raises(DataError, match=rf"made for dataset 'tiny' \(data hash {dataset.hash}\), but this is "
                                        rf"dataset 'other' \(data hash {other.hash}\)"):
        Request.load(path, other)


@pytest.mark.parametrize("text, message", [
    ("{not json", r"invalid JSON"),
    ('{"format": "recunlearn-request", "version": 1}', r"malformed request file: missing 'kind'"),
    ('{"users": [1, 2]}', r"not a request file"),
    ('[[100, "a"], [101]]', r"pair 2 is \[101\], expected \[user, item\]"),
    ("[]", r"no \(user, item\) pairs"),
    ('[[100.7, "a"]]', r"bad.json: user 100.7 is not an id: ids are strings or whole numbers"),
    ('[[[100], "a"]]', r"user \[100\] is not an id"),
])
def test_load_rejects_malformed_files(saved, tmp_path, text, message):
    dataset, _, _ = saved
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        Request.load(path, dataset)


def test_an_id_never_matches_the_number_it_truncates_or_equals():
    ids = IdMap(np.array([0, 1, 5]))
    assert ids.index([5, "5", 5.0, np.int64(1)], "user").tolist() == [2, 2, 2, 1]
    for label in (True, np.bool_(False), 5.7, float("nan"), None, [5]):   # True == 1 and int(5.7) == 5 in Python
        with pytest.raises(DataError, match=r"is not an id"):
            ids.index([label], "user")


def test_user_written_pair_files(saved, tmp_path):
    dataset, _, _ = saved
    csv = tmp_path / "forget.csv"
    csv.write_text("user,item\n100,a\n101,c\n")
    listed = tmp_path / "forget.json"
    listed.write_text('[[100, "a"], ["101", "c"]]')
    for path in (csv, listed):
        request = Request.load(path, dataset)
        assert (request.kind, request.seed, keys(request.edges)) == ("edges", None, {(0, 0), (1, 2)})
    assert request.data_hash == dataset.hash
    # a person's history spans the splits: a validation pair leaves the validation split, it is not unlearned
    mixed = Request.from_pairs(dataset, [(100, "a"), (101, "a")])
    assert keys(mixed.edges) == {(0, 0)} and keys(mixed.held_out) == {(1, 0)}
    assert mixed.held_out_counts(dataset) == {"valid": 1, "test": 0}
    with pytest.raises(DataError, match=r"pair \(user 101, item 'b'\) is in no split.*not an interaction"):
        Request.from_pairs(dataset, [(100, "a"), (101, "b")])
    csv.write_text("user,item\n100,a\n100,a\n")
    with pytest.raises(DataError, match="duplicate"):
        Request.load(csv, dataset)
    assert len(Request.load(csv, dataset, on_duplicate="drop")) == 1


# ------------------------------------------------------------------------------------------- streams

def test_split_partitions_exactly_and_reproducibly(ml100k):
    request = random_request(ml100k, 0.01, seed=0)
    parts = request.split(7)
    sizes = [len(part) for part in parts]
    assert sum(sizes) == len(request) and max(sizes) - min(sizes) <= 1
    joined = np.concatenate([part.edges.keys for part in parts])
    assert np.array_equal(np.sort(joined), request.edges.keys)  # disjoint and complete
    assert [part.params["part"] for part in parts] == list(range(7))
    assert all(np.array_equal(a.edges.keys, b.edges.keys) for a, b in zip(parts, request.split(7)))
    assert not np.array_equal(request.split(7, seed=1)[0].edges.keys, parts[0].edges.keys)
    with pytest.raises(ValueError, match="into 1000 parts"):
        random_request(ml100k, 0.001, seed=0).split(1000)


def test_user_requests_split_by_whole_users(ml100k):
    request = user_request(ml100k, 0.05, "random", seed=0)
    parts = request.split(4)
    users = [part.users() for part in parts]
    assert sum(u.size for u in users) == request.users().size  # no user spread over two parts
    assert sum(len(part) for part in parts) == len(request)


def test_a_stream_loads_against_the_residual_data(ml100k, tmp_path):
    first, second = random_request(ml100k, 0.01, seed=0).split(2)
    residual = ml100k.with_train(ml100k.train.subtract(first.edges))
    assert len(Request.load(second.save(tmp_path / "second.json"), residual)) == len(second)
    with pytest.raises(DataError, match="not a training interaction .*deleted from the training set earlier"):
        Request.load(first.save(tmp_path / "first.json"), residual)


# ------------------------------------------------------------------------------------------- specs

@pytest.mark.parametrize("text, kind, params", [
    ("random:0.01", "random", {"rho": 0.01}),
    ("user:0.05", "user", {"rho": 0.05, "mode": "random"}),
    ("user:0.01:core", "user", {"rho": 0.01, "mode": "core"}),
    ("item:0.01:popular", "item", {"rho": 0.01, "mode": "popular"}),
    ("adversarial:1.0", "adversarial", {"rho_users": 1.0, "rho_items": 1.0}),
    ("adversarial:1.0:0.5", "adversarial", {"rho_users": 1.0, "rho_items": 0.5}),
])
def test_parse_spec(text, kind, params):
    assert parse_spec(text) == (kind, params)


@pytest.mark.parametrize("text", ["random", "random:2", "random:x", "user:0.1:popular", "forget:0.1", "item:0.1:a:b"])
def test_bad_spec_lists_the_valid_forms(text):
    with pytest.raises(ValueError, match=r"valid forms: random:RHO, user:RHO\[:random\|core\|edge\]"):
        parse_spec(text)


def test_parsed_specs_drive_the_generators(ml100k):
    kind, params = parse_spec("item:0.01:popular")
    request = GENERATORS[kind](ml100k, seed=0, **params)
    assert np.array_equal(request.edges.keys, item_request(ml100k, 0.01, "popular", seed=0).edges.keys)


# --------------------------------------------------------------------------------- erasure of whole subjects

def test_subject_request_takes_every_split_of_the_user(tmp_path):
    dataset = tiny([(0, 0), (0, 1), (1, 2), (2, 3)], valid=[(0, 2), (1, 0)], test=[(0, 3), (2, 1)])
    request = subject_request(dataset, users=[100])
    assert request.kind == "user" and request.params["users"] == ["100"]
    assert keys(request.edges) == {(0, 0), (0, 1)}
    assert keys(request.held_out) == {(0, 2), (0, 3)}
    residual = request.apply(dataset)
    assert keys(residual.valid) == {(1, 0)} and keys(residual.test) == {(2, 1)}
    assert residual.origin_hash == dataset.hash            # still the shipped dataset, edited
    assert keys(residual.train) == keys(dataset.train)     # training edges are the unlearner's to remove
    loaded = Request.load(request.save(tmp_path / "user.json"), dataset)
    assert keys(loaded.edges) == keys(request.edges) and keys(loaded.held_out) == keys(request.held_out)
    item = subject_request(dataset, items=["a"])
    assert (item.kind, keys(item.edges), keys(item.held_out)) == ("item", {(0, 0)}, {(1, 0)})
    both = subject_request(dataset, users=[101], items=["d"])
    assert (both.kind, keys(both.edges), keys(both.held_out)) == ("edges", {(1, 2), (2, 3)}, {(1, 0), (0, 3)})


def test_subject_request_errors_name_the_problem():
    dataset = tiny([(0, 0), (1, 2)], valid=[(2, 1)])
    with pytest.raises(DataError, match="unknown user 999"):
        subject_request(dataset, users=[999])
    with pytest.raises(DataError, match="no training interactions left"):
        subject_request(dataset, users=[102])             # only a validation pair
    with pytest.raises(DataError, match="at least one user or item"):
        subject_request(dataset)


def test_held_out_pairs_that_are_training_pairs_are_refused(tmp_path):
    dataset = tiny([(0, 0), (0, 1)], valid=[(1, 0)])
    path = subject_request(dataset, users=[101, 100]).save(tmp_path / "r.json")
    record = json.loads(path.read_text())
    record["held_out"] = {"user": [100], "item": ["a"], "user_index": [0], "item_index": [0]}
    path.write_text(json.dumps(record))
    with pytest.raises(DataError, match="held_out: 1 held-out pairs are training interactions"):
        Request.load(path, dataset)


def test_split_keeps_each_users_held_out_pairs_with_that_user():
    dataset = tiny([(0, 0), (1, 1), (2, 2)], valid=[(0, 3), (1, 3)], test=[(2, 3)])
    parts = subject_request(dataset, users=[100, 101, 102]).split(3, seed=0)
    for part in parts:
        assert set(part.held_out.users.tolist()) == set(part.edges.users.tolist())
