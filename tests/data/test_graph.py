"""Normalised bipartite adjacency against a dense numpy reference, the symmetric spmm backward, edge dropout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recunlearn.data.graph import (EdgeIndex, bipartite_csr, build_graph, edge_norm, edge_scores,
                                  normalized_adjacency, product, propagate_mean, spmm)
from recunlearn.data.interactions import Interactions


def random_edges(seed: int, n_users: int = 7, n_items: int = 9, density: float = 0.3) -> Interactions:
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    return Interactions.from_arrays(users, items, n_users, n_items)


def dense_reference(users, items, n_users: int, n_items: int, weights=None) -> np.ndarray:
    """D^-1/2 Ā D^-1/2 with Ā = [[0, A], [Aᵀ, 0]], written the obvious way; degree-0 nodes give zero rows."""
    a = np.zeros((n_users, n_items))
    a[users, items] = 1.0 if weights is None else weights
    full = np.block([[np.zeros((n_users, n_users)), a], [a.T, np.zeros((n_items, n_items))]])
    deg = full.sum(1)
    inv_sqrt = np.zeros_like(deg)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    return inv_sqrt[:, None] * full * inv_sqrt[None, :]


def dense(adj: torch.Tensor) -> np.ndarray:
    return adj.to_dense().double().numpy()


# ------------------------------------------------------------------------------------- normalised adjacency

@pytest.mark.parametrize("seed", range(6))
def test_adjacency_matches_dense_reference(seed):
    data = random_edges(seed, n_users=5 + seed, n_items=11 - seed)
    graph = build_graph(data)
    expected = dense_reference(data.users, data.items, data.n_users, data.n_items)
    assert graph.adj.layout == torch.sparse_csr
    assert graph.adj.shape == (data.n_users + data.n_items,) * 2
    assert graph.nnz == 2 * len(data)
    np.testing.assert_allclose(dense(graph.adj), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("seed", range(4))
def test_adjacency_does_not_depend_on_input_order(seed):
    data = random_edges(seed)
    order = np.random.default_rng(100 + seed).permutation(len(data))
    shuffled = normalized_adjacency(data.users[order], data.items[order], data.n_users, data.n_items)
    expected = dense_reference(data.users, data.items, data.n_users, data.n_items)
    np.testing.assert_allclose(dense(shuffled), expected, rtol=1e-6, atol=1e-7)
    # The CSR structure itself is valid: rows ascending, columns sorted within each row.
    crow, col = shuffled.crow_indices().numpy(), shuffled.col_indices().numpy()
    assert np.all(np.diff(crow) >= 0)
    for r in range(len(crow) - 1):
        assert np.all(np.diff(col[crow[r]:crow[r + 1]]) > 0)


def test_weighted_adjacency_matches_reference():
    data = random_edges(3)
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(data))
    adj = normalized_adjacency(data.users, data.items, data.n_users, data.n_items, edge_weight=weights)
    expected = dense_reference(data.users, data.items, data.n_users, data.n_items, weights)
    np.testing.assert_allclose(dense(adj), expected, rtol=1e-6, atol=1e-7)


def test_isolated_users_and_items_have_zero_rows_and_no_inf_or_nan():
    # user 2 and items 0 and 4 have no edge at all
    data = Interactions.from_arrays([0, 0, 1, 3], [1, 2, 2, 3], n_users=4, n_items=5)
    m = dense(build_graph(data).adj)
    assert np.isfinite(m).all()
    for node in (2, 4 + 0, 4 + 4):
        assert not m[node].any() and not m[:, node].any()
    np.testing.assert_allclose(m, dense_reference(data.users, data.items, 4, 5), rtol=1e-6)


def test_empty_graph_is_all_zero():
    adj = build_graph(Interactions.empty(3, 4)).adj
    assert adj.shape == (7, 7)
    assert not dense(adj).any()


@pytest.mark.parametrize("seed", range(3))
def test_adjacency_is_symmetric_bipartite_with_spectral_radius_one(seed):
    m = dense(build_graph(random_edges(seed)).adj)
    n_users = 7
    np.testing.assert_array_equal(m, m.T)
    assert not m[:n_users, :n_users].any() and not m[n_users:, n_users:].any()
    # D^-1/2 Ā D^-1/2 has its largest eigenvalue at exactly 1 (on any non-empty component)
    assert np.abs(np.linalg.eigvalsh(m)).max() == pytest.approx(1.0, abs=1e-6)


def test_graph_remembers_its_source():
    data = random_edges(0)
    graph = build_graph(data)
    assert (graph.n_users, graph.n_items, graph.n_nodes) == (7, 9, 16)
    assert graph.source_hash == data.hash


# -------------------------------------------------------------------------------------------------- spmm

def test_spmm_forward_equals_dense_product():
    adj = build_graph(random_edges(1)).adj
    x = torch.randn(adj.shape[0], 5, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(spmm(adj, x).numpy(), dense(adj) @ x.double().numpy(), rtol=1e-5, atol=1e-6)


def test_spmm_backward_passes_gradcheck_in_float64():
    adj = build_graph(random_edges(2, n_users=4, n_items=5, density=0.5)).adj.to(torch.float64)
    x = torch.randn(adj.shape[0], 3, dtype=torch.float64, requires_grad=True,
                    generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda e: spmm(adj, e), (x,))


@pytest.mark.parametrize("seed", range(3))
def test_spmm_gradient_equals_autograd_through_dense_matmul(seed):
    adj = build_graph(random_edges(seed)).adj
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(adj.shape[0], 4, generator=gen)
    weight = torch.randn(adj.shape[0], 4, generator=gen)

    x = x0.clone().requires_grad_()
    (spmm(adj, spmm(adj, x)) * weight).sum().backward()   # two layers, as in LightGCN
    x_ref = x0.clone().requires_grad_()
    a = adj.to_dense()
    ((a @ (a @ x_ref)) * weight).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)


def test_spmm_without_grad_returns_a_plain_tensor():
    adj = build_graph(random_edges(0)).adj
    y = spmm(adj, torch.ones(adj.shape[0], 2))
    assert not y.requires_grad and y.grad_fn is None


# ------------------------------------------------------------------ edge values, CSR assembly, edge dropout

@pytest.mark.parametrize("seed", range(3))
def test_edge_norm_is_the_reference_value_of_each_edge(seed):
    data = random_edges(seed)
    weights = None if seed == 0 else np.random.default_rng(seed).uniform(0.5, 2.0, len(data))
    values = edge_norm(data.users, data.items, data.n_users, data.n_items, weights)
    ref = dense_reference(data.users, data.items, data.n_users, data.n_items, weights)
    assert values.dtype == np.float32 and values.shape == (len(data),)
    np.testing.assert_allclose(values, ref[data.users, data.n_users + data.items], rtol=1e-6)


def test_bipartite_csr_places_values_symmetrically():
    data = random_edges(4)
    values = np.arange(1, len(data) + 1, dtype=np.float32)
    m = dense(bipartite_csr(data.users, data.items, values, data.n_users, data.n_items))
    np.testing.assert_array_equal(m, m.T)
    np.testing.assert_array_equal(m[data.users, data.n_users + data.items], values)
    assert np.count_nonzero(m) == 2 * len(data)


@pytest.mark.parametrize("keep_prob", [0.5, 0.8])
def test_dropped_view_keeps_symmetry_and_rescales_by_one_over_keep_prob(keep_prob):
    """An edge-dropout view the way the influence encoder builds one: the full graph's edge values,
    a random subset of edges, kept values divided by the keep probability."""
    data = random_edges(0, n_users=40, n_items=50, density=0.3)
    full = dense(build_graph(data).adj)
    values = edge_norm(data.users, data.items, data.n_users, data.n_items)
    keep = np.random.default_rng(0).random(len(data)) < keep_prob
    view = dense(bipartite_csr(data.users[keep], data.items[keep], values[keep] / keep_prob,
                               data.n_users, data.n_items))
    np.testing.assert_array_equal(view, view.T)
    kept = view != 0
    assert not (kept & (full == 0)).any()                                        # never invents an edge
    np.testing.assert_allclose(view[kept], full[kept] / keep_prob, rtol=1e-6)  # rescaled by 1/p
    assert abs(kept.sum() / (full != 0).sum() - keep_prob) < 0.1               # ~600 edges


def test_double_backward_through_spmm_matches_the_dense_product():
    """Hessian-vector products (influence functions) differentiate the backward itself."""
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 6, 20), rng.integers(0, 5, 20)
    keep = np.unique(users * 5 + items, return_index=True)[1]
    adj = normalized_adjacency(users[keep], items[keep], 6, 5)
    dense = adj.to_dense()
    x = torch.randn(11, 3, dtype=adj.dtype, requires_grad=True)
    v = torch.randn(11, 3, dtype=adj.dtype)

    def hvp(product):
        loss = (product(x) ** 3).sum()            # not quadratic: the Hessian depends on x
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
        (result,) = torch.autograd.grad((grad * v).sum(), x)
        return result

    torch.testing.assert_close(hvp(lambda z: spmm(adj, spmm(adj, z))), hvp(lambda z: dense @ (dense @ z)))


# ------------------------------------------------------------------------- the layer mean, one operator

def dense_layer_mean(adj: torch.Tensor, x: torch.Tensor, layers: int) -> torch.Tensor:
    """mean(x, Âx, …, Â^L x) the obvious way: every layer kept, stacked, averaged."""
    a, out = adj.to_dense().to(x.dtype), [x]
    for _ in range(layers):
        out.append(a @ out[-1])
    return torch.stack(out).mean(0)


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_propagate_mean_equals_the_mean_of_every_layer(layers):
    adj = build_graph(random_edges(layers)).adj
    x = torch.randn(adj.shape[0], 5, generator=torch.Generator().manual_seed(layers))
    torch.testing.assert_close(propagate_mean(adj, x, layers), dense_layer_mean(adj, x, layers))


@pytest.mark.parametrize("layers", [1, 3])
def test_propagate_mean_gradient_equals_autograd_through_the_dense_layers(layers):
    adj = build_graph(random_edges(5)).adj
    gen = torch.Generator().manual_seed(layers)
    x0, weight = torch.randn(adj.shape[0], 4, generator=gen), torch.randn(adj.shape[0], 4, generator=gen)
    x, x_ref = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    (propagate_mean(adj, x, layers) * weight).sum().backward()
    (dense_layer_mean(adj, x_ref, layers) * weight).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_propagate_mean_passes_gradcheck_and_gradgradcheck_in_float64():
    adj = build_graph(random_edges(2, n_users=4, n_items=5, density=0.5)).adj.to(torch.float64)
    x = torch.randn(adj.shape[0], 3, dtype=torch.float64, requires_grad=True,
                    generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda e: propagate_mean(adj, e, 3) ** 2, (x,))
    assert torch.autograd.gradgradcheck(lambda e: propagate_mean(adj, e, 3) ** 2, (x,))


def test_propagate_mean_does_not_change_its_input():
    adj = build_graph(random_edges(3)).adj
    x = torch.randn(adj.shape[0], 2)
    before = x.clone()
    propagate_mean(adj, x, 3)
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_product_ignores_the_uninitialised_output_even_where_a_row_is_empty():
    """addmm with beta=0 into uninitialised memory: an isolated node's row must come out 0, never garbage."""
    data = Interactions.from_arrays(np.array([0, 0]), np.array([1, 2]), 3, 4)     # user 1, 2 and item 0, 3 isolated
    adj = build_graph(data).adj
    for _ in range(20):    # fresh allocations would, sooner or later, hand back non-zero memory
        garbage = torch.full((adj.shape[0], 8), float("nan"))
        del garbage
        y = product(adj, torch.ones(adj.shape[0], 8))
        assert torch.isfinite(y).all()
        np.testing.assert_array_equal(y.numpy(), dense(adj).astype(np.float32) @ np.ones((adj.shape[0], 8), np.float32))


def test_adjacency_indices_are_int32_which_the_cpu_kernels_take_without_a_copy():
    adj = build_graph(random_edges(0)).adj
    assert adj.crow_indices().dtype == torch.int32 and adj.col_indices().dtype == torch.int32


# ------------------------------------------------------------------------------------------ edge scores

@pytest.mark.parametrize("seed", range(3))
def test_edge_scores_and_their_gradient_equal_the_gathered_dot_products(seed):
    data = random_edges(seed, n_users=30, n_items=25, density=0.3)
    index = EdgeIndex.of(data)
    users = torch.randn(data.n_users, 6, dtype=torch.float64, requires_grad=True)
    items = torch.randn(data.n_items, 6, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(len(data), dtype=torch.float64)
    u, i = torch.from_numpy(data.users).long(), torch.from_numpy(data.items).long()
    reference = (users[u] * items[i]).sum(-1)
    got = edge_scores(users, items, index)
    torch.testing.assert_close(got, reference)
    expected = torch.autograd.grad((reference * weights).sum(), (users, items))
    torch.testing.assert_close(torch.autograd.grad((got * weights).sum(), (users, items)), expected)


def test_edge_scores_pass_gradcheck_in_float64():
    data = random_edges(5, n_users=8, n_items=6, density=0.4)
    index = EdgeIndex.of(data)
    users = torch.randn(data.n_users, 3, dtype=torch.float64, requires_grad=True)
    items = torch.randn(data.n_items, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: edge_scores(a, b, index), (users, items))


def test_edge_index_orders_values_by_item_as_the_transpose():
    data = random_edges(6, n_users=12, n_items=10, density=0.4)
    index = EdgeIndex.of(data)
    values = torch.arange(1, len(data) + 1, dtype=torch.float32)
    by_user = index.with_values(values).to_dense()
    assert torch.equal(index.with_values(values, by="item").to_dense(), by_user.T)
    assert torch.equal(by_user[torch.from_numpy(data.users).long(), torch.from_numpy(data.items).long()], values)
