"""UnlearnRec's influence encoder and loss terms, checked against values computed by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recunlearn.data.interactions import Interactions
from recunlearn.data.graph import bipartite_csr, build_graph
from recunlearn.unlearn.unlearnrec import IEConfig, InfluenceEncoder, influence_matrix
from recunlearn.unlearn.unlearnrec.encoder import idm_values
from recunlearn.unlearn.unlearnrec import losses, training
from recunlearn.unlearn.unlearnrec.training import EncoderInputs, Episode

N_USERS, N_ITEMS = 60, 40


def dense_idm(users, items, n_users, n_items) -> np.ndarray:
    """D^-1/2 Ā D^-1/2 of the request edges, dense, from scratch."""
    n = n_users + n_items
    a = np.zeros((n, n))
    for u, i in zip(users, items):
        a[u, n_users + i] = a[n_users + i, u] = 1
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    return inv[:, None] * a * inv[None, :]


def test_graph_normalised_idm_is_the_training_graphs_adjacency_restricted_to_the_request():
    """idm_norm=graph: each request edge keeps the value it has in Â of the graph before the request, whatever
    else the request holds; the request-normalised IDM gives the same edge another value in another request."""
    rng = np.random.default_rng(0)
    users, items = np.nonzero(rng.random((N_USERS, N_ITEMS)) < 0.2)
    train = Interactions.from_arrays(users, items, N_USERS, N_ITEMS)
    full = build_graph(train).adj.to_dense().numpy()
    edge = train.select(np.arange(len(train)) == 0)
    first = np.arange(len(train)) == 0
    requests = {"one edge": train.select(first),
                "five random edges": train.select(first | np.isin(np.arange(len(train)), rng.choice(
                    np.arange(1, len(train)), 4, replace=False))),
                "the user's history": train.select(train.users == edge.users[0])}
    values = {}
    for name, request in requests.items():
        residual = train.subtract(request)
        idm = influence_matrix(request, idm_values(request, residual)).to_dense().numpy()
        mask = np.zeros_like(full, dtype=bool)
        mask[request.users, N_USERS + request.items] = mask[N_USERS + request.items, request.users] = True
        np.testing.assert_allclose(idm, np.where(mask, full, 0.0), rtol=1e-6, atol=0)
        episode = Episode.of(request, residual, "graph")
        np.testing.assert_array_equal(episode.idm.to_dense().numpy(), idm)
        own = influence_matrix(request).to_dense().numpy()
        values[name] = own[edge.users[0], N_USERS + edge.items[0]]
    assert values["one edge"] == pytest.approx(1.0)             # the request's own degrees: shape-dependent
    assert values["the user's history"] < 0.5


def leaky(x: np.ndarray, slope: float) -> np.ndarray:
    return np.where(x > 0, x, slope * x)


def test_idm_is_the_normalised_adjacency_of_the_request_alone():
    edges = Interactions.from_arrays([0, 0, 1, 3], [0, 2, 2, 1], 5, 4)
    idm = influence_matrix(edges)
    assert idm.shape == (9, 9)
    assert idm.values().numel() == 2 * len(edges)          # sparse: 2|E_Δ| non-zeros, no dense N×N
    dense = idm.to_dense().numpy()
    np.testing.assert_allclose(dense, dense_idm(edges.users, edges.items, 5, 4), atol=1e-7)
    untouched = [2, 4, 5 + 3]                               # user 2, user 4, item 3 are in no request edge
    assert np.all(dense[untouched] == 0) and np.isfinite(dense).all()
    assert dense[0, 5 + 2] == pytest.approx(0.5)            # user 0 and item 2 have request degree 2: 1/sqrt(2*2)


@pytest.mark.parametrize("trained_h0", [False, True], ids=["at-init", "trained-state"])
def test_encoder_output_matches_the_formula_computed_by_hand(trained_h0):
    """Ẽ₀ = E₀ + MLP(Σ_{l=0..L} Â_Δ^l H⁰ − γ Â_Δ^L (Ē ⊙ W_η)), MLP = identity layers with LeakyReLU(0.99), all
    by hand with dense numpy matrices on a 3 x 3 graph."""
    n_users, n_items, dim, layers = 3, 3, 4, 3
    edges = Interactions.from_arrays([0, 0, 2], [0, 1, 1], n_users, n_items)
    cfg = IEConfig()
    encoder = InfluenceEncoder(n_users + n_items, dim, layers, cfg)
    rng = np.random.default_rng(0)
    e0, final = rng.normal(size=(6, dim)), rng.normal(size=(6, dim))
    h0, withdraw = np.zeros((6, dim)), np.full((6, 1), 0.002)
    if trained_h0:
        h0, withdraw = rng.normal(size=(6, dim)), rng.uniform(0.5, 2.0, size=(6, 1))
        with torch.no_grad():
            encoder.h0.copy_(torch.tensor(h0, dtype=torch.float32))
            encoder.withdraw.copy_(torch.tensor(withdraw, dtype=torch.float32))
    # the MLP starts as the identity
    for layer in encoder.mlp:
        assert torch.equal(layer.weight, torch.eye(dim)) and torch.equal(layer.bias, torch.zeros(dim))

    a = dense_idm(edges.users, edges.items, n_users, n_items)
    h_bar = sum(np.linalg.matrix_power(a, l) @ h0 for l in range(layers + 1))
    withdrawn = np.linalg.matrix_power(a, layers) @ (final * withdraw)
    shift = h_bar - 0.1 * withdrawn
    expected = e0 + leaky(leaky(shift, 0.99), 0.99)

    with torch.no_grad():
        got = encoder(torch.tensor(e0, dtype=torch.float32), torch.tensor(final, dtype=torch.float32),
                      influence_matrix(edges))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    if not trained_h0:   # at init only the withdraw term acts: nodes outside the request stay where they are
        untouched = [1, 5]                                                   # user 1 and item 2
        np.testing.assert_array_equal(got.numpy()[untouched], e0[untouched].astype(np.float32))


def test_a_larger_withdraw_rate_lowers_the_request_scores(trained_lightgcn):
    """The withdraw term moves a node away from the partners it forgets: with H⁰ = 0, raising W_η lowers the
    zero-shot scores of the request edges."""
    model, data = trained_lightgcn
    edges = data.train.select(np.random.default_rng(5).random(len(data.train)) < 0.03)
    episode = Episode.of(edges, data.train.subtract(edges))
    encoder = InfluenceEncoder(N_USERS + N_ITEMS, 16, 3, IEConfig())
    final = torch.cat(model.final_embeddings())
    means = []
    for rate in (0.0, 1.0, 3.0):
        with torch.no_grad():
            encoder.withdraw.fill_(rate)
            u, i = model.embed(episode.graph, encoder(model.embedding.weight, final, episode.idm))
        means.append((u[edges.users] * i[edges.items]).sum(-1).mean().item())
    assert means[0] > means[1] > means[2]


def test_request_scoped_h0_leaves_untouched_nodes_in_place(trained_lightgcn):
    """With h0_scope="request", a trained (non-zero) H⁰ moves only the nodes the request touches; with the
    paper's default ("all") H⁰ shifts every node."""
    model, data = trained_lightgcn
    edges = data.train.select(np.random.default_rng(1).random(len(data.train)) < 0.03)
    idm = influence_matrix(edges)
    touched = np.union1d(edges.users, edges.items + N_USERS)
    untouched = np.setdiff1d(np.arange(N_USERS + N_ITEMS), touched)
    e0, final = model.embedding.weight.detach(), torch.cat(model.final_embeddings())
    shifts = {}
    for scope in ("all", "request"):
        encoder = InfluenceEncoder(N_USERS + N_ITEMS, 16, 3, IEConfig(h0_scope=scope))
        with torch.no_grad():
            encoder.h0.normal_(std=0.1, generator=torch.Generator().manual_seed(0))
            shifts[scope] = encoder(e0, final, idm) - e0
    assert torch.all(shifts["request"][untouched] == 0)
    assert torch.all(shifts["all"][untouched].abs().sum(1) > 0)
    torch.testing.assert_close(shifts["request"][touched], shifts["all"][touched])


# --- loss terms -----------------------------------------------------------------------------------------

def batch_for(episode: Episode, seed: int = 0, size: int = 128):
    users, pos, neg = next(training.sampling.bpr_epoch(episode.residual, np.random.default_rng(seed), size))
    return (users, pos), tuple(torch.from_numpy(a) for a in (users, pos, neg))


@pytest.fixture
def pretraining_setup(trained_lightgcn, ie_config):
    model, data = trained_lightgcn
    backbone = model.clone().requires_grad_(False)
    edges = data.train.select(np.random.default_rng(3).random(len(data.train)) < 0.1)
    episode = Episode.of(edges, data.train.subtract(edges))
    backbone.attach(episode.graph)
    inputs = EncoderInputs(model.embedding.weight.detach().clone(), torch.cat(model.final_embeddings()).clone(),
                           Interactions.empty(N_USERS, N_ITEMS))

    def encoder_with_random_h0():
        encoder = InfluenceEncoder(N_USERS + N_ITEMS, 16, 3, ie_config())
        encoder.mlp.requires_grad_(False)
        with torch.no_grad():
            encoder.h0.normal_(std=0.1, generator=torch.Generator().manual_seed(0))
        return encoder
    return backbone, episode, inputs, encoder_with_random_h0


def h0_gradient(setup, cfg: IEConfig, term: str | None = None) -> torch.Tensor:
    """H⁰'s gradient of the pre-training loss (or of one of its terms) on one fixed batch."""
    backbone, episode, inputs, new_encoder = setup
    encoder = new_encoder()
    batch_np, batch = batch_for(episode)
    terms = training.pretraining_loss(encoder, backbone, inputs, episode, batch_np, batch, cfg,
                                      np.random.default_rng(7))
    loss = sum(terms.values()) if term is None else terms[term]
    if not loss.requires_grad:                               # a term computed from frozen tensors only
        return torch.zeros_like(encoder.h0)
    h0, = torch.autograd.grad(loss, encoder.h0, allow_unused=True)
    return torch.zeros_like(encoder.h0) if h0 is None else h0


def test_the_contrastive_term_reaches_h0(pretraining_setup, ie_config):
    """L_c is part of the pre-training loss: with λ_c > 0 H⁰'s gradient differs from the one without it."""
    with_contrast = h0_gradient(pretraining_setup, ie_config(lambda_c=0.1))
    without = h0_gradient(pretraining_setup, ie_config(lambda_c=0.0))
    assert not torch.allclose(with_contrast, without, atol=1e-7)
    assert h0_gradient(pretraining_setup, ie_config(lambda_c=0.1), "contrast").abs().sum() > 0


def test_contrastive_views_are_redrawn_for_every_layer(pretraining_setup, ie_config, monkeypatch):
    drawn = []
    real = training.dropped_influence_matrix

    def spy(*args, **kwargs):
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(training, "dropped_influence_matrix", spy)
    h0_gradient(pretraining_setup, ie_config(lambda_c=0.1, contrast_drop=0.5))
    assert len(drawn) == 3                                   # one view per IE layer
    kept = [set(map(tuple, v.to_sparse_coo().indices()[:, v.values() != 0].T.tolist())) for v in drawn]
    assert kept[0] != kept[1] or kept[1] != kept[2]          # each drawn afresh


@pytest.mark.parametrize("drop", [0.2, 0.5])
def test_a_contrastive_view_is_the_idm_of_the_kept_edges_rescaled(drop):
    """The view keeps Â_Δ's pattern with dropped edges at 0: densely, and in products, it equals the IDM built
    from the kept edges alone with their Â_Δ values over 1 - drop (the view as the authors draw it)."""
    rng = np.random.default_rng(3)
    users, items = np.nonzero(rng.random((N_USERS, N_ITEMS)) < 0.25)
    edges = Interactions.from_arrays(users, items, N_USERS, N_ITEMS)
    episode = Episode.of(edges, Interactions.empty(N_USERS, N_ITEMS))
    view = training.dropped_influence_matrix(episode.idm, episode.index, drop, np.random.default_rng(7))
    keep = np.random.default_rng(7).random(len(edges)) >= drop       # the same draws
    rebuilt = bipartite_csr(edges.users[keep], edges.items[keep], idm_values(edges)[keep] / (1 - drop),
                            N_USERS, N_ITEMS)
    np.testing.assert_allclose(view.to_dense().numpy(), rebuilt.to_dense().numpy(), rtol=1e-6)
    x = torch.randn(N_USERS + N_ITEMS, 8)
    torch.testing.assert_close(view @ x, rebuilt @ x)
    assert 0 < keep.sum() < len(edges)


def test_the_authors_l2_sends_no_gradient_into_the_encoder(pretraining_setup, ie_config):
    """reg_target="backbone" (the authors') regularises the frozen E₀: no gradient into H⁰; "shifted" does."""
    assert h0_gradient(pretraining_setup, ie_config(reg_target="backbone"), "reg").abs().sum() == 0
    assert h0_gradient(pretraining_setup, ie_config(reg_target="shifted"), "reg").abs().sum() > 0


def test_preserving_loss_is_the_authors_sum_over_their_batch_size():
    """L_p = Σ_b (ℓ_b^new − ℓ_b^orig)² over the first `pairs` pairs, ℓ_b the in-batch log-softmax by hand."""
    gen = torch.Generator().manual_seed(0)
    new_u, new_i, old_u, old_i = (torch.randn(20, 4, generator=gen) for _ in range(4))
    users, pos = torch.randint(0, 20, (50,), generator=gen), torch.randint(0, 20, (50,), generator=gen)

    def ell(u_emb, i_emb, k, tau):
        logits = np.array([float(u_emb[users[k]] @ i_emb[pos[j]]) / tau for j in range(8)])
        return logits[k] - np.log(np.exp(logits).sum())

    expected = sum((ell(new_u, new_i, k, 2.0) - ell(old_u, old_i, k, 2.0)) ** 2 for k in range(8))
    got = losses.preserving_loss(new_u, new_i, old_u, old_i, users, pos, tau=2.0, pairs=8)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # a larger batch does not weigh more: the sum stays over the authors' batch size
    assert losses.preserving_loss(new_u, new_i, old_u, old_i, users[:8], pos[:8], 2.0, 8).item() == \
        pytest.approx(got.item())


def test_contrast_nodes_are_capped():
    rng = np.random.default_rng(0)
    users, pos = np.arange(100), np.arange(100) % 30
    nodes_u, nodes_i = losses.contrast_nodes(users, pos, 100, 16, rng)
    assert nodes_u.numel() == 16 and len(set(nodes_u.tolist())) == 16
    assert nodes_i.numel() == 16 and nodes_i.min() >= 100       # items as node ids, after the users
