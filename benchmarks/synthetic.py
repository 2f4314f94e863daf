"""Synthetic power-law user-item graphs of any size, shaped like gowalla, for scaling benchmarks.

Chung-Lu style: each edge draws its user and its item independently, with probability proportional to a
Zipf-Mandelbrot weight of the node's popularity rank k among n nodes, w_k ∝ (k + offset · n)^-exponent. The
offset flattens the head of the curve: the top nodes are less extreme than under pure Zipf. Node ids are
shuffled so popularity does not follow the index. Repeated pairs are dropped and fresh draws top the set up until it
holds exactly the requested number of edges. The same size and seed always give the same graph.

The shape comes from gowalla (the LightGCN split in $RECUNLEARN_DATA/gowalla, train and test together:
1,027,370 interactions, 29,858 users, 40,981 items): the node counts keep its edges per user and per item, and
the exponents and offsets are least-squares fits of its log degree-rank curves. As the offset is a share of the
node count, every size has the same degree distribution and only the number of nodes grows; the largest
degrees therefore stay near gowalla's instead of growing with the graph (a fixed offset would let them grow,
but would also push the user side, whose exponent is near 1, far beyond anything fitted).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recunlearn.data.interactions import Dataset, IdMap, Interactions


@dataclass(frozen=True)
class DegreeShape:
    """Zipf-Mandelbrot popularity of one side of the graph."""

    edges_per_node: float   # the mean degree; n_nodes = n_edges / edges_per_node
    exponent: float         # slope of log degree against log rank, away from the head
    offset: float           # as a share of the node count


GOWALLA_USERS = DegreeShape(edges_per_node=34.4, exponent=0.915, offset=0.0253)
GOWALLA_ITEMS = DegreeShape(edges_per_node=25.1, exponent=0.646, offset=0.00068)

# Fresh draws per missing edge in a top-up round: a few repeats clash again with the set.
TOP_UP_OVERDRAW = 1.25
MAX_TOP_UP_ROUNDS = 100


def popularity(n_nodes: int, shape: DegreeShape) -> np.ndarray:
    """Probabilities of the nodes 0..n-1 by popularity rank (node 0 the most popular)."""
    ranks = np.arange(1, n_nodes + 1, dtype=np.float64)
    weights = (ranks + shape.offset * n_nodes) ** -shape.exponent
    return weights / weights.sum()


def node_counts(n_edges: int, users: DegreeShape = GOWALLA_USERS,
                items: DegreeShape = GOWALLA_ITEMS) -> tuple[int, int]:
    """(users, items) at gowalla's edges per node."""
    return max(1, round(n_edges / users.edges_per_node)), max(1, round(n_edges / items.edges_per_node))


def power_law_interactions(n_edges: int, seed: int = 0, users: DegreeShape = GOWALLA_USERS,
                           items: DegreeShape = GOWALLA_ITEMS) -> Interactions:
    """Exactly `n_edges` distinct (user, item) pairs with power-law degrees on both sides."""
    n_users, n_items = node_counts(n_edges, users, items)
    # Far below this density the top-up converges in a few rounds; near it, it would hunt for the last pairs.
    if n_edges > 0.1 * n_users * n_items:
        raise ValueError(f"{n_edges} edges over {n_users} users x {n_items} items is too dense for a sparse "
                         f"power-law graph: ask for more edges (the node counts grow with them)")
    rng = np.random.default_rng(seed)
    # Cumulative probabilities over shuffled ids: one searchsorted per drawn endpoint.
    user_cdf = np.cumsum(popularity(n_users, users)[rng.permutation(n_users)])
    item_cdf = np.cumsum(popularity(n_items, items)[rng.permutation(n_items)])

    def draw(count: int) -> np.ndarray:
        """`count` random pairs as keys user * n_items + item."""
        u = np.searchsorted(user_cdf, rng.random(count) * user_cdf[-1], side="right")
        i = np.searchsorted(item_cdf, rng.random(count) * item_cdf[-1], side="right")
        # float rounding can put a draw just past the last bucket
        return np.minimum(u, n_users - 1) * n_items + np.minimum(i, n_items - 1)

    keys = distinct_sorted(draw(n_edges))
    for _ in range(MAX_TOP_UP_ROUNDS):
        missing = n_edges - keys.size
        if missing == 0:
            break
        fresh = draw(int(missing * TOP_UP_OVERDRAW) + 16)
        fresh = first_draws(fresh[~sorted_contains(keys, fresh)])[:missing]
        keys = np.sort(np.concatenate([keys, fresh]))
    else:
        raise RuntimeError(f"{n_edges - keys.size} edges still missing after {MAX_TOP_UP_ROUNDS} top-up rounds")
    return Interactions.from_arrays(keys // n_items, keys % n_items, n_users, n_items)


# np.unique is avoided: in numpy 2.3+ it is many times slower than a sort on large int64 arrays.
def distinct_sorted(keys: np.ndarray) -> np.ndarray:
    """The distinct values of `keys`, sorted."""
    keys = np.sort(keys)
    keep = np.ones(keys.size, dtype=bool)
    keep[1:] = keys[1:] != keys[:-1]
    return keys[keep]


def first_draws(keys: np.ndarray) -> np.ndarray:
    """The first occurrence of each value of `keys`, in their original order: truncating the result keeps a
    random subset of the new pairs, not the smallest keys."""
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    first = np.ones(keys.size, dtype=bool)
    first[1:] = ranked[1:] != ranked[:-1]
    return keys[np.sort(order[first])]


def sorted_contains(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Which of `query` are in the sorted array `sorted_keys`."""
    pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    return sorted_keys[pos] == query


def synthetic_dataset(n_edges: int, seed: int = 0) -> Dataset:
    """A Dataset whose training split is `power_law_interactions(n_edges, seed)`."""
    return as_dataset(power_law_interactions(n_edges, seed), f"powerlaw-{n_edges}-seed{seed}")


def as_dataset(train: Interactions, name: str = "powerlaw") -> Dataset:
    """`train` as a Dataset's training split; validation and test are empty (for fixed-length training
    without validation, `Trainer(..., validate=False)`)."""
    empty = Interactions.empty(train.n_users, train.n_items)
    return Dataset(name, train, empty, empty, IdMap(np.arange(train.n_users)), IdMap(np.arange(train.n_items)))
