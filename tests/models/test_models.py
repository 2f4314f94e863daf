"""Conformance suite run over every backbone in the registry, plus each backbone's own readout and views."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recunlearn.config import ConfigError
from recunlearn.data.graph import Graph, build_graph, normalized_adjacency
from recunlearn.data.interactions import Interactions
from recunlearn.models import simgcl as simgcl_module
from recunlearn.models.base import bpr_loss
from recunlearn.models.registry import MODELS, build_model, model_class, model_config

N_USERS, N_ITEMS = 30, 40
NAMES = sorted(MODELS)
GRAPH_MODELS = [name for name in NAMES if name not in ("mf", "vbpr")]   # VBPR, like MF, has no graph
SSL_MODELS = {"sgl", "simgcl"}


def toy_train(seed: int = 0) -> Interactions:
    """Every user has at least 3 items; a few items stay isolated (no edge at all)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(N_USERS):
        chosen = rng.choice(N_ITEMS - 3, size=int(rng.integers(3, 10)), replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
    return Interactions.from_arrays(users, items, N_USERS, N_ITEMS)


@pytest.fixture(scope="module")
def train() -> Interactions:
    return toy_train()


@pytest.fixture(scope="module")
def graph(train) -> Graph:
    return build_graph(train)


def make(name: str, graph: Graph | None = None, seed: int = 0, **values):
    torch.manual_seed(seed)
    model = build_model(model_config(name, values), N_USERS, N_ITEMS)
    if graph is not None:
        model.attach(graph)
    model.start_epoch(torch.Generator().manual_seed(seed))
    return model


def batch_of(train: Interactions, size: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train), size=size, replace=False)
    users, pos = train.users[idx], train.items[idx]
    neg = rng.integers(0, N_ITEMS, size=size)
    clash = train.contains(users, neg)
    neg[clash] = N_ITEMS - 1   # an isolated item: never a training item
    return tuple(torch.from_numpy(a) for a in (users, pos, neg))


def dense_adj(graph: Graph) -> torch.Tensor:
    return graph.adj.to_dense()


# -------------------------------------------------------------------------------------- registry and config

def test_registry_lists_the_backbones():
    assert NAMES == ["freedom", "lightgcn", "mf", "sgl", "simgcl", "vbpr"]


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        model_class("lightgnc")
    for name in ["'lightgnc'", *NAMES]:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="unknown model"):
        model_config("ngcf")


@pytest.mark.parametrize("name", NAMES)
def test_config_rejects_unknown_keys(name):
    with pytest.raises(ConfigError, match="dimm"):
        model_config(name, {"dimm": 32})


def test_config_rejects_keys_of_another_backbone():
    with pytest.raises(ConfigError, match="layers"):
        model_config("mf", {"layers": 2})
    with pytest.raises(ConfigError, match="drop_ratio"):
        model_config("lightgcn", {"drop_ratio": 0.2})


@pytest.mark.parametrize("name", NAMES)
def test_config_defaults_follow_the_papers(name):
    config = model_config(name)
    assert config.name == name
    assert config.dim == 64
    if name in GRAPH_MODELS:
        assert config.layers == 3
    assert isinstance(model_class(name)(config, 3, 4), MODELS[name])


@pytest.mark.parametrize("name", NAMES)
def test_config_values_are_validated(name):
    assert model_config(name, {"dim": "16"}).dim == 16
    with pytest.raises(ConfigError, match="dim"):
        model_config(name, {"dim": "sixteen"})


# ------------------------------------------------------------------------------------------------- embed

@pytest.mark.parametrize("name", NAMES)
def test_embed_shapes(name, graph):
    model = make(name, graph, dim=8)
    u, i = model.embed()
    assert u.shape == (N_USERS, 8) and i.shape == (N_ITEMS, 8)
    assert torch.isfinite(u).all() and torch.isfinite(i).all()
    u2, i2 = model.embed(graph)          # an explicit graph gives the same result as the attached one
    torch.testing.assert_close(u, u2)
    torch.testing.assert_close(i, i2)


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_graph_models_need_a_graph(name):
    model = make(name)
    with pytest.raises(ValueError, match="graph"):
        model.embed()


def test_attach_rejects_a_graph_of_another_size(graph):
    model = make("lightgcn")
    other = build_graph(Interactions.from_arrays([0], [0], N_USERS + 1, N_ITEMS))
    with pytest.raises(ValueError, match="users"):
        model.attach(other)


def test_mf_readout_is_the_embedding_table(graph):
    model = make("mf", graph, dim=8)
    u, i = model.embed()
    torch.testing.assert_close(torch.cat([u, i]), model.embedding.weight)


@pytest.mark.parametrize("layers", [1, 3])
def test_lightgcn_readout_is_the_mean_of_the_dense_layers(graph, layers):
    model = make("lightgcn", graph, dim=8, layers=layers)
    a, e = dense_adj(graph), model.embedding.weight.detach()
    stack = [e]
    for _ in range(layers):
        stack.append(a @ stack[-1])
    expected = torch.stack(stack).mean(0)
    u, i = model.embed()
    torch.testing.assert_close(torch.cat([u, i]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("readout_e0", [True, False])
def test_simgcl_clean_readout_is_the_layer_mean_with_or_without_e0(graph, readout_e0):
    model = make("simgcl", graph, dim=8, readout_e0=readout_e0)
    a, e = dense_adj(graph), model.embedding.weight.detach()
    expected = torch.stack([e] * readout_e0 + [a @ e, a @ a @ e, a @ a @ a @ e]).mean(0)
    u, i = model.embed()
    torch.testing.assert_close(torch.cat([u, i]), expected, rtol=1e-5, atol=1e-6)


def test_sgl_clean_readout_is_lightgcn(graph):
    sgl, lightgcn = make("sgl", graph, dim=8), make("lightgcn", graph, dim=8)
    for a, b in zip(sgl.embed(), lightgcn.embed()):
        torch.testing.assert_close(a, b)


def test_simgcl_noise_per_layer_is_at_most_eps_and_keeps_the_sign(graph, monkeypatch):
    """Record every propagation: noise_l = (input of layer l+1) - (output of layer l), and the last from the mean."""
    eps = 0.05
    model = make("simgcl", graph, dim=8, eps=eps, readout_e0=False)
    calls = []

    def recording_spmm(adj, x):
        y = adj @ x
        calls.append((x.detach(), y.detach()))
        return y

    monkeypatch.setattr(simgcl_module, "spmm", recording_spmm)
    with torch.no_grad():
        noisy = model.readout(model.embedding.weight, graph, noisy=True)
    inputs, outputs = [c[0] for c in calls], [c[1] for c in calls]
    layers = inputs[1:] + [3 * noisy - sum(inputs[1:])]
    assert len(layers) == 3
    for clean, layer in zip(outputs, layers):
        noise = layer - clean
        norms = noise.norm(dim=1)
        assert (norms <= eps * (1 + 1e-4)).all()
        connected = clean.abs().min(dim=1).values > 0      # rows with no zero coordinate get the full eps
        assert connected.sum() > 50
        torch.testing.assert_close(norms[connected], torch.full_like(norms[connected], eps), rtol=1e-4, atol=1e-6)
        assert (noise * clean >= 0).all()                   # noise points into the embedding's orthant
    clean_readout = torch.cat(model.embed())
    assert (noisy - clean_readout).norm(dim=1).max() <= 3 * eps * np.sqrt(N_ITEMS)  # loose overall bound
    assert not torch.allclose(noisy, clean_readout)


def test_simgcl_two_noisy_views_differ(graph):
    model = make("simgcl", graph, dim=8)
    with torch.no_grad():
        v1 = model.readout(model.embedding.weight, graph, noisy=True)
        v2 = model.readout(model.embedding.weight, graph, noisy=True)
    assert not torch.allclose(v1, v2)


def edges_of(g: Graph) -> set[tuple[int, int]]:
    idx = g.adj.to_sparse_coo().coalesce().indices()
    rows, cols = idx[0].tolist(), idx[1].tolist()
    return {(r, c - N_USERS) for r, c in zip(rows, cols) if r < N_USERS}


def test_sgl_views_drop_about_drop_ratio_of_the_edges_and_are_renormalised():
    rng = np.random.default_rng(5)
    users, items = np.nonzero(rng.random((N_USERS, N_ITEMS)) < 0.5)   # ~600 edges
    big = build_graph(Interactions.from_arrays(users, items, N_USERS, N_ITEMS))
    model = make("sgl", big, dim=8, drop_ratio=0.2)
    full = edges_of(big)
    views = model.views
    assert len(views) == 2
    kept = [edges_of(v) for v in views]
    for view, edges in zip(views, kept):
        assert edges <= full
        assert 0.72 < len(edges) / len(full) < 0.88          # drop_ratio 0.2 of ~600 edges
        u, i = np.array(sorted(edges)).T
        expected = normalized_adjacency(u, i, N_USERS, N_ITEMS).to_dense()
        torch.testing.assert_close(view.adj.to_dense(), expected)  # a dropped graph is normalised anew
    assert kept[0] != kept[1]
    model.start_epoch(torch.Generator().manual_seed(99))   # a new epoch draws new views
    assert edges_of(model.views[0]) not in (kept[0], kept[1])


def test_sgl_views_follow_a_newly_attached_graph(train, graph):
    """After attach (e.g. the residual graph after a deletion) no view may still hold a removed edge."""
    model = make("sgl", graph, dim=8, drop_ratio=0.1)
    residual = train.subtract(train.select(np.arange(len(train)) % 2 == 0))
    model.attach(build_graph(residual))
    model.start_epoch(torch.Generator().manual_seed(1))
    allowed = set(zip(residual.users.tolist(), residual.items.tolist()))
    assert all(edges_of(v) <= allowed for v in model.views)
    assert model.views is not None and len(model.views) == 2


def test_sgl_attach_discards_views_of_the_previous_graph(train, graph):
    model = make("sgl", graph, dim=8)
    residual = train.select(np.arange(len(train)) % 3 != 0)
    model.attach(build_graph(residual))
    allowed = set(zip(residual.users.tolist(), residual.items.tolist()))
    assert model.views is None or all(edges_of(v) <= allowed for v in model.views)


# --------------------------------------------------------------------------------------------------- loss

@pytest.mark.parametrize("name", NAMES)
def test_loss_returns_a_finite_total_and_named_terms(name, train, graph):
    model = make(name, graph, dim=16)
    model.train()
    total, terms = model.loss(batch_of(train))
    expected = {"bpr", "reg"} | ({"ssl"} if name in SSL_MODELS else set())
    assert set(terms) == expected
    assert total.ndim == 0 and torch.isfinite(total)
    torch.testing.assert_close(total, sum(terms.values()))
    assert all(t.ndim == 0 and torch.isfinite(t) and t >= 0 for t in terms.values())
    # fresh random embeddings: BPR is close to log 2
    assert terms["bpr"].item() == pytest.approx(np.log(2), abs=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_loss_bpr_and_reg_terms_match_their_formulas(name, train, graph):
    model = make(name, graph, dim=16, reg=1e-2)
    users, pos, neg = batch = batch_of(train)
    _, terms = model.loss(batch)
    u, i = model.embed()
    expected_bpr = -torch.log(torch.sigmoid((u[users] * i[pos]).sum(-1) - (u[users] * i[neg]).sum(-1))).mean()
    torch.testing.assert_close(terms["bpr"], expected_bpr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["bpr"], bpr_loss(u[users], i[pos], i[neg]))
    e0 = model.embedding.weight
    sq = e0[users].pow(2).sum() + e0[N_USERS + pos].pow(2).sum() + e0[N_USERS + neg].pow(2).sum()
    torch.testing.assert_close(terms["reg"], 1e-2 * sq / (2 * len(users)))


def adam_step(model, batch, lr: float = 0.01) -> tuple[dict, dict]:
    """Loss terms on `batch` before and after one Adam step (same SimGCL noise both times)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    torch.manual_seed(123)
    total, before = model.loss(batch)
    optimizer.zero_grad()
    total.backward()
    assert model.embedding.weight.grad is not None and model.embedding.weight.grad.abs().sum() > 0
    optimizer.step()
    torch.manual_seed(123)
    _, after = model.loss(batch)
    return {k: v.item() for k, v in before.items()}, {k: v.item() for k, v in after.items()}


@pytest.mark.parametrize("name", NAMES)
def test_one_adam_step_lowers_the_loss_of_the_batch(name, train, graph):
    model = make(name, graph, dim=16)
    model.train()
    before, after = adam_step(model, batch_of(train, seed=1))
    assert sum(after.values()) < sum(before.values()) - 1e-3
    if name not in SSL_MODELS:
        assert after["bpr"] < before["bpr"] - 1e-3
    else:
        assert after["ssl"] < before["ssl"]


@pytest.mark.parametrize("name", NAMES)
def test_one_adam_step_lowers_the_bpr_loss_when_bpr_is_the_only_objective(name, train, graph):
    """SGL/SimGCL at their default weights: the InfoNCE gradient dominates the very first steps, so the
    batch's BPR may rise at step one; with the self-supervised term off the step must lower the BPR."""
    extra = {"ssl_weight": 0.0} if name in SSL_MODELS else {}
    model = make(name, graph, dim=16, **extra)
    model.train()
    before, after = adam_step(model, batch_of(train, seed=1))
    assert after["bpr"] < before["bpr"] - 1e-3


# ------------------------------------------------------------------------------------------------ inference

@pytest.mark.parametrize("name", NAMES)
def test_score_is_the_dot_product_of_final_embeddings(name, graph):
    model = make(name, graph, dim=8)
    model.eval()
    users = torch.tensor([0, 5, 29, 5])
    scores = model.score(users)
    with torch.no_grad():
        u, i = model.embed()
    assert scores.shape == (4, N_ITEMS)
    torch.testing.assert_close(scores, u[users] @ i.T)
    items = torch.tensor([0, 3, 39, 12])
    torch.testing.assert_close(model.score_pairs(users, items), scores[torch.arange(4), items])


@pytest.mark.parametrize("name", NAMES)
def test_scores_follow_the_weights_after_invalidate(name, graph):
    model = make(name, graph, dim=8)
    model.eval()
    before = model.score(torch.tensor([1])).clone()
    with torch.no_grad():
        model.embedding.weight.mul_(2.0)
    model.invalidate()
    torch.testing.assert_close(model.score(torch.tensor([1])), 4 * before)


@pytest.mark.parametrize("name", NAMES)
def test_top_k_never_returns_excluded_items(name, train, graph):
    from recunlearn.eval.ranking import topk_items
    model = make(name, graph, dim=8)
    model.eval()
    users = np.arange(N_USERS)
    top = topk_items(model, users, 10, train).numpy()
    assert isinstance(top, np.ndarray) and top.shape == (N_USERS, 10)
    assert not train.contains(np.repeat(users, 10), top.ravel()).any()
    assert all(len(set(row)) == 10 for row in top.tolist())
    # with nothing excluded the list is the plain top-k of the scores
    plain = topk_items(model, users[:3], 5).numpy()
    expected = model.score(torch.as_tensor(users[:3])).topk(5, dim=1).indices.numpy()
    np.testing.assert_array_equal(np.sort(plain, axis=1), np.sort(expected, axis=1))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_initial_weights(name, graph):
    a, b, c = make(name, graph, seed=3), make(name, graph, seed=3), make(name, graph, seed=4)
    torch.testing.assert_close(a.embedding.weight, b.embedding.weight, rtol=0, atol=0)
    assert not torch.equal(a.embedding.weight, c.embedding.weight)
    assert a.embedding.weight.std().item() == pytest.approx(0.1, rel=0.1)   # init_std default


@pytest.fixture(scope="module")
def ml100k(data_root):
    from recunlearn.data.registry import load_dataset
    return load_dataset("ml-100k", root=data_root, download=False)


def test_fit_save_load_and_recommend_exclude_seen(tmp_path, ml100k):
    """The scikit-learn style façade: fit returns self, save/load round-trips, recommend hides seen items."""
    from recunlearn.estimator import Estimator

    estimator = Estimator("lightgcn", train={"epochs": 1, "batch_size": 8192, "lr": 0.01}, dim=16)
    assert estimator.fit(ml100k) is estimator
    estimator.save(tmp_path / "ckpt")
    loaded = Estimator.load(tmp_path / "ckpt")
    assert loaded.model_.config.dim == 16
    users = torch.arange(5)
    torch.testing.assert_close(loaded.score_users(users), estimator.score_users(users))
    seen = ml100k.train.union(ml100k.valid)
    top = loaded.recommend(np.arange(50), k=10)
    assert not seen.contains(np.repeat(np.arange(50), 10), top.ravel()).any()
    unmasked = loaded.recommend(np.arange(50), k=10, exclude_seen=False)
    assert ml100k.train.contains(np.repeat(np.arange(50), 10), unmasked.ravel()).any()
    with pytest.raises(RuntimeError, match="not fitted"):
        Estimator().recommend([0])


def test_sgl_with_its_contrastive_term_learns_about_as_well_as_lightgcn(ml100k):
    """SGL at its default SSL weight and temperature must not be held at random-level recall by InfoNCE:
    a few epochs on ml-100k reach a validation Recall@20 close to LightGCN's at the same settings."""
    from recunlearn.train.config import RunConfig
    from recunlearn.train.trainer import Trainer

    best = {}
    for name in ("lightgcn", "sgl"):
        run = RunConfig.model_validate({"model": {"name": name},
                                        "train": {"epochs": 5, "lr": 0.01, "batch_size": 8192, "threads": 1}})
        _, result = Trainer(run, progress=False).fit(ml100k)
        best[name] = result.best_metric
    assert best["lightgcn"] > 0.15
    assert best["sgl"] > 0.85 * best["lightgcn"], best


def test_simgcl_with_its_contrastive_term_learns_at_least_as_well_as_lightgcn(ml100k):
    """SimGCL at its default SSL weight, noise and temperature trains past LightGCN on ml-100k and stays
    there. With the paper's readout (layers 1..L) it peaked after two epochs at 0.78x LightGCN and then fell
    to a quarter of it, its BPR term held at log 2 by InfoNCE."""
    from recunlearn.train.config import RunConfig
    from recunlearn.train.trainer import Trainer

    results = {}
    for name in ("lightgcn", "simgcl"):
        run = RunConfig.model_validate({"model": {"name": name},
                                        "train": {"epochs": 20, "lr": 0.01, "batch_size": 4096, "threads": 1,
                                                  "patience": 20}})
        results[name] = Trainer(run, progress=False).fit(ml100k)[1]
    lightgcn, simgcl = results["lightgcn"].best_metric, results["simgcl"]
    assert lightgcn > 0.25
    assert simgcl.best_metric > 0.95 * lightgcn, (simgcl.best_metric, lightgcn)
    assert simgcl.history[-1]["Recall@20"] > 0.9 * lightgcn        # no collapse after an early peak
