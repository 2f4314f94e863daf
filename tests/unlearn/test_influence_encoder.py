"""UnlearnRec's influence encoder on tiny graphs where the right answer is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recunlearn.data.interactions import Dataset, Interactions
from recunlearn.models.registry import build_model, model_config
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer
from recunlearn.unlearn import influence_encoder as ie_module
from recunlearn.unlearn.influence_encoder import IEConfig, UnlearnRec, influence_matrix

N_USERS, N_ITEMS = 60, 40


@pytest.fixture(scope="module")
def trained(synthetic):
    data = synthetic()
    run = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 16},
                                    "train": {"epochs": 30, "batch_size": 128, "lr": 0.02, "patience": 30}})
    model, _ = Trainer(run, progress=False).fit(data)
    return model, data


def small_config(**overrides) -> IEConfig:
    base = dict(epochs=4, sim_every=2, batch_size=128, lr=0.05, preserve_group=64)
    return IEConfig(**{**base, **overrides})


def request_of(data: Dataset, n: int = 15, seed: int = 1) -> Interactions:
    pick = np.random.default_rng(seed).choice(len(data.train), size=n, replace=False)
    mask = np.zeros(len(data.train), dtype=bool)
    mask[pick] = True
    return data.train.select(mask)


def request_scores(model, edges: Interactions) -> torch.Tensor:
    model.invalidate()
    return model.score_pairs(torch.from_numpy(edges.users), torch.from_numpy(edges.items))


def test_idm_is_the_normalised_adjacency_of_the_request_alone():
    edges = Interactions.from_arrays([0, 0, 1, 3], [0, 2, 2, 1], 5, 4)
    idm = influence_matrix(edges)
    assert idm.shape == (9, 9)
    assert idm.values().numel() == 2 * len(edges)          # sparse: 2|E_Δ| non-zeros, no dense N×N
    dense = idm.to_dense().numpy()
    a = np.zeros((9, 9))
    for u, i in zip(edges.users, edges.items):
        a[u, 5 + i] = a[5 + i, u] = 1
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    np.testing.assert_allclose(dense, inv[:, None] * a * inv[None, :], atol=1e-7)
    untouched = [2, 4, 5 + 3]                               # user 2, user 4, item 3 are in no request edge
    assert np.all(dense[untouched] == 0) and np.isfinite(dense).all()
    # user 0 has degree 2, item 2 degree 2 in the request: 1/sqrt(2*2)
    assert dense[0, 5 + 2] == pytest.approx(0.5)


def test_encoder_starts_as_identity_and_shift_follows_the_formula(trained):
    model, data = trained
    edges = request_of(data)
    ie = UnlearnRec(small_config(epochs=1), progress=False)
    ie._bind(model.clone(), data)
    enc = ie.encoder
    idm = influence_matrix(edges)
    # H⁰ = 0 and an identity MLP with LeakyReLU(0.99): Ẽ₀ − E₀ = MLP(−γ Â_Δ^L (Ē ⊙ W_η))
    ew = ie.final * 0.002
    for _ in range(3):
        ew = idm @ ew
    expected_shift = -0.1 * ew
    expected = enc.mlp_forward(expected_shift)
    with torch.no_grad():
        got = enc(ie.e0, ie.final, idm) - ie.e0
    torch.testing.assert_close(got, expected.detach(), atol=1e-6, rtol=1e-5)
    # nodes outside the request are not moved at all
    touched = np.union1d(edges.users, edges.items + N_USERS)
    untouched = np.setdiff1d(np.arange(N_USERS + N_ITEMS), touched)
    assert torch.all(got[untouched] == 0)


def test_a_larger_withdraw_prior_lowers_the_zero_shot_request_scores(trained):
    """The withdraw term subtracts the request partners' Ē: before any pre-training (H⁰ = 0), raising the
    initial W_η lowers the request edges' zero-shot scores; the benchmarks rely on this prior."""
    model, data = trained
    edges = request_of(data, 20, seed=5)
    means = []
    for init in (0.002, 1.0, 5.0):
        ie = UnlearnRec(small_config(withdraw_init=init), progress=False)
        ie._bind(model.clone(), data)
        zero_shot = ie.unlearn(edges, finetune_epochs=0)
        means.append(request_scores(zero_shot.model, edges).mean().item())
    assert means[0] > means[1] > means[2]


def test_one_encoder_step_lowers_request_scores(trained):
    model, data = trained
    edges = request_of(data)
    ie = UnlearnRec(small_config(), progress=False)
    ie._bind(model.clone(), data)
    residual = data.train.subtract(edges)
    from recunlearn.data.graph import build_graph
    graph, idm = build_graph(residual), influence_matrix(edges)

    def scores():
        with torch.no_grad():
            u, i = ie.model.embed(graph, ie.encoder(ie.e0, ie.final, idm))
        return (u[edges.users] * i[edges.items]).sum(-1)

    before = scores()
    opt = torch.optim.Adam([ie.encoder.h0, ie.encoder.withdraw], lr=0.05)
    u, i = ie.model.embed(graph, ie.encoder(ie.e0, ie.final, idm))
    loss = ie_module.unlearning_loss(u, i, edges)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = scores()
    assert after.mean() < before.mean()


def test_pretraining_loss_decreases_and_selection_uses_heldout_data(trained):
    model, data = trained
    ie = UnlearnRec(small_config(epochs=6, sim_every=6), progress=False).prepare(model.clone(), data)
    losses = [h["loss"] for h in ie.history]
    assert losses[-1] < losses[0]
    assert ie.selected in ie.history and ie.prepare_seconds > 0
    # the MLP stays frozen during pre-training: still the identity
    for layer in ie.encoder.mlp:
        torch.testing.assert_close(layer.weight, torch.eye(layer.weight.shape[0]))


def test_zero_shot_and_finetuning_forget_the_request(trained):
    model, data = trained
    edges = request_of(data)
    ie = UnlearnRec(small_config(epochs=6), progress=False).prepare(model.clone(), data)
    tuned = ie.fork()
    original = request_scores(model, edges).mean()
    zero = ie.unlearn(edges, finetune_epochs=0)
    assert request_scores(zero.model, edges).mean() < original
    assert zero.seconds["zero_shot"] > 0 and zero.kind == "approximate"
    ft = tuned.unlearn(edges, finetune_epochs=3)
    assert request_scores(ft.model, edges).mean() < original
    assert ft.seconds["finetune"] > 0
    # fine-tuning trained a copy of E₀ and the MLP: the result differs from the zero-shot one
    assert not torch.allclose(ft.model.embedding.weight, zero.model.embedding.weight)


def test_finetuning_never_feeds_forgotten_edges_as_positives(trained, batch_spy):
    model, data = trained
    edges = request_of(data)
    ie = UnlearnRec(small_config(epochs=1), progress=False).prepare(model.clone(), data)
    seen = batch_spy()
    ie.unlearn(edges, finetune_epochs=2)
    users = np.concatenate([s[0] for s in seen])
    pos = np.concatenate([s[1] for s in seen])
    assert users.size > 0
    assert not edges.contains(users, pos).any()


def test_sequential_requests_compose(trained):
    model, data = trained
    first, second = request_of(data, 10, seed=2), None
    rest = data.train.subtract(first)
    second = request_of(data.with_train(rest), 10, seed=3)
    ie = UnlearnRec(small_config(epochs=2), progress=False).prepare(model.clone(), data)
    ie.unlearn(first)
    result = ie.unlearn(second)
    assert result.forgotten.hash == first.union(second).hash
    assert result.dataset.train.hash == data.train.subtract(first).subtract(second).hash
    assert result.model.graph.source_hash == result.dataset.train.hash
    with pytest.raises(ValueError, match="not in the current training set"):
        ie.unlearn(first)                       # already forgotten: stays forgotten, cannot be forgotten twice


def two_requests(data: Dataset) -> tuple[Interactions, Interactions]:
    first = request_of(data, 10, seed=2)
    return first, request_of(data.with_train(data.train.subtract(first)), 10, seed=3)


def embedding_of(result) -> torch.Tensor:
    return result.model.embedding.weight.detach()


def test_cumulative_stream_equals_one_request_of_the_union(trained):
    """The default sequential rule encodes every request since the last reset together: two zero-shot
    requests give exactly the model of one zero-shot request of their union. The paper's rule (compose)
    encodes the second alone from the first's output, so its shift stacks on the first one."""
    model, data = trained
    first, second = two_requests(data)
    pretrained = UnlearnRec(small_config(epochs=2), progress=False).prepare(model.clone(), data)
    assert pretrained.cfg.sequential == "cumulative"
    stream, union = pretrained.fork(), pretrained.fork()
    stream.unlearn(first)
    streamed = stream.unlearn(second)
    assert stream.pending.hash == first.union(second).hash
    once = union.unlearn(first.union(second))
    torch.testing.assert_close(embedding_of(streamed), embedding_of(once))
    assert streamed.dataset.train.hash == once.dataset.train.hash

    composing = pretrained.fork()
    composing.cfg = small_config(epochs=2, sequential="compose")
    composing.unlearn(first)
    composed = composing.unlearn(second)
    assert len(composing.pending) == 0
    assert not torch.allclose(embedding_of(composed), embedding_of(once), atol=1e-4)


def test_finetuning_resets_the_cumulative_input_state(trained):
    """After a fine-tuned request the encoder starts from the fine-tuned model: the next request is encoded
    alone, on top of it."""
    model, data = trained
    first, second = two_requests(data)
    ie = UnlearnRec(small_config(epochs=2), progress=False).prepare(model.clone(), data)
    tuned = ie.unlearn(first, finetune_epochs=1)
    assert len(ie.pending) == 0
    torch.testing.assert_close(ie.e0, embedding_of(tuned))
    ie.unlearn(second)
    assert ie.pending.hash == second.hash
    torch.testing.assert_close(ie.e0, embedding_of(tuned))


def test_saved_encoder_between_cumulative_requests_resumes_the_stream(trained, tmp_path):
    """Saved with the model of the first request, the encoder keeps its input state: the second request
    after a reload gives the same model as without the save."""
    model, data = trained
    first, second = two_requests(data)
    ie = UnlearnRec(small_config(epochs=2), progress=False).prepare(model.clone(), data)
    after_first = ie.unlearn(first)
    ie.save(tmp_path / "ie")
    loaded = UnlearnRec.load(tmp_path / "ie", after_first.model.clone(), after_first.dataset, progress=False)
    assert loaded.pending.hash == first.hash
    torch.testing.assert_close(loaded.e0, ie.e0)
    expected = ie.unlearn(second)
    torch.testing.assert_close(embedding_of(loaded.unlearn(second)), embedding_of(expected))
    # once the stream is consolidated by fine-tuning, no input state is left behind
    ie.unlearn(request_of(expected.dataset, 5, seed=4), finetune_epochs=0.5)
    ie.save(tmp_path / "ie")
    assert not (tmp_path / "ie" / ie_module.INPUT_STATE).exists()


def test_request_time_fields_do_not_change_the_pretraining_fields():
    base = IEConfig()
    assert IEConfig(sequential="compose", finetune_lr=0.5, finetune_epochs=2).pretraining_fields() == \
        base.pretraining_fields()
    assert IEConfig(lambda_p=0.5).pretraining_fields() != base.pretraining_fields()


def test_saved_encoder_refuses_another_model_or_data(trained, tmp_path, synthetic):
    model, data = trained
    ie = UnlearnRec(small_config(epochs=1), progress=False).prepare(model.clone(), data)
    ie.save(tmp_path / "ie")
    loaded = UnlearnRec.load(tmp_path / "ie", model.clone(), data, progress=False)
    torch.testing.assert_close(loaded.encoder.h0, ie.encoder.h0)
    other = build_model(model_config("lightgcn", {"dim": 16}), N_USERS, N_ITEMS)
    with pytest.raises(ValueError, match="different model weights"):
        UnlearnRec.load(tmp_path / "ie", other, data, progress=False)
    with pytest.raises(ValueError, match="pre-trained on training data"):
        UnlearnRec.load(tmp_path / "ie", model.clone(), synthetic(seed=5), progress=False)
    with pytest.raises(FileNotFoundError, match="recunlearn prepare"):
        UnlearnRec.load(tmp_path / "missing", model.clone(), data, progress=False)


def test_model_loss_includes_the_backbones_contrastive_term_on_the_residual_graph(monkeypatch, synthetic):
    """L_M is the backbone's own loss: for SGL its views are drawn from the residual graph and its ssl term counts."""
    data = synthetic()
    run = RunConfig.model_validate({"model": {"name": "sgl", "dim": 16},
                                    "train": {"epochs": 2, "batch_size": 128, "lr": 0.02}})
    model, _ = Trainer(run, progress=False).fit(data)
    from recunlearn.models.sgl import SGL
    seen = []
    real_extra = SGL.extra_loss

    def spy(self, batch, graph, e0):
        terms = real_extra(self, batch, graph, e0)
        seen.append(("ssl" in terms, self.graph.source_hash, self.views[0].source_hash if self.views else None))
        return terms

    monkeypatch.setattr(SGL, "extra_loss", spy)
    UnlearnRec(small_config(epochs=1), progress=False).prepare(model, data)
    assert seen and all(has_ssl for has_ssl, _, _ in seen)
    assert all(graph != data.train.hash and view == graph for _, graph, view in seen)   # residual, not full graph


def test_request_scoped_h0_leaves_untouched_nodes_in_place(trained):
    """With h0_scope="request", a trained (non-zero) H⁰ moves only the nodes the request touches; with the
    paper's default ("all") H⁰ shifts every node."""
    model, data = trained
    edges = request_of(data)
    idm = influence_matrix(edges)
    touched = np.union1d(edges.users, edges.items + N_USERS)
    untouched = np.setdiff1d(np.arange(N_USERS + N_ITEMS), touched)
    shifts = {}
    for scope in ("all", "request"):
        ie = UnlearnRec(small_config(h0_scope=scope), progress=False)
        ie._bind(model.clone(), data)
        with torch.no_grad():
            ie.encoder.h0.normal_(std=0.1, generator=torch.Generator().manual_seed(0))
            shifts[scope] = ie.encoder(ie.e0, ie.final, idm) - ie.e0
    assert torch.all(shifts["request"][untouched] == 0)
    assert torch.all(shifts["all"][untouched].abs().sum(1) > 0)
    torch.testing.assert_close(shifts["request"][touched], shifts["all"][touched])
