"""The synthetic power-law graphs of the scaling benchmark (benchmarks/synthetic.py): exact size, distinct
pairs, seeded, and heavy-tailed degrees that follow the intended curve."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SYNTHETIC = Path(__file__).resolve().parents[2] / "benchmarks" / "synthetic.py"
N_EDGES = 50_000


def load_synthetic():
    spec = importlib.util.spec_from_file_location("benchmarks_synthetic", SYNTHETIC)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


synthetic = load_synthetic()


@pytest.fixture(scope="module")
def graph():
    return synthetic.power_law_interactions(N_EDGES, seed=0)


def rank_slope(degrees: np.ndarray) -> float:
    """Slope of log degree against log rank, from the top 1% to the median: the body of the curve."""
    ranked = np.sort(degrees)[::-1].astype(float)
    n = ranked.size
    ranks = np.arange(1, n + 1)
    body = slice(n // 100, n // 2)
    return float(np.polyfit(np.log(ranks[body]), np.log(ranked[body]), 1)[0])


@pytest.mark.parametrize("n_edges", [N_EDGES, 12_345])
def test_exactly_the_requested_number_of_edges(n_edges):
    assert len(synthetic.power_law_interactions(n_edges, seed=0)) == n_edges


def test_pairs_are_distinct_and_indices_in_range(graph):
    assert (graph.n_users, graph.n_items) == synthetic.node_counts(N_EDGES)
    keys = graph.users * graph.n_items + graph.items
    assert np.unique(keys).size == len(graph)
    assert graph.users.min() >= 0 and graph.users.max() < graph.n_users
    assert graph.items.min() >= 0 and graph.items.max() < graph.n_items


def test_same_seed_same_graph_other_seed_other_graph(graph):
    again = synthetic.power_law_interactions(N_EDGES, seed=0)
    assert np.array_equal(again.users, graph.users) and np.array_equal(again.items, graph.items)
    other = synthetic.power_law_interactions(N_EDGES, seed=1)
    assert (other.n_users, other.n_items) == (graph.n_users, graph.n_items)
    assert not np.array_equal(other.keys, graph.keys)


@pytest.mark.parametrize("side", ["user", "item"])
def test_degrees_are_heavy_tailed_along_the_intended_curve(graph, side):
    degrees = graph.user_degree() if side == "user" else graph.item_degree()
    shape = synthetic.GOWALLA_USERS if side == "user" else synthetic.GOWALLA_ITEMS
    # hubs: a uniform random graph of this size has its largest degree under twice the mean
    assert degrees.max() > 5 * degrees.mean()
    expected = N_EDGES * synthetic.popularity(degrees.size, shape)
    assert rank_slope(degrees) < -0.5
    assert rank_slope(degrees) == pytest.approx(rank_slope(expected), abs=0.1)


def test_dataset_has_the_graph_as_its_training_split():
    dataset = synthetic.synthetic_dataset(N_EDGES, seed=0)
    assert len(dataset.train) == N_EDGES and len(dataset.valid) == len(dataset.test) == 0
    assert (dataset.n_users, dataset.n_items) == synthetic.node_counts(N_EDGES)


def test_a_graph_too_small_to_be_sparse_is_refused():
    with pytest.raises(ValueError, match="too dense"):
        synthetic.power_law_interactions(100, seed=0)
