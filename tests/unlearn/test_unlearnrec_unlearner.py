"""UnlearnRec as an Unlearner: state after preparation, per-request fine-tuning, sequential requests and the
saved state."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recunlearn.data.interactions import Dataset, Interactions
from recunlearn.models.registry import build_model, model_config
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer
from recunlearn.unlearn.unlearnrec import IEConfig, UnlearnRec
from recunlearn.unlearn.unlearnrec import io as ie_io

N_USERS, N_ITEMS = 60, 40


def request_of(data: Dataset, n: int = 15, seed: int = 1) -> Interactions:
    pick = np.random.default_rng(seed).choice(len(data.train), size=n, replace=False)
    mask = np.zeros(len(data.train), dtype=bool)
    mask[pick] = True
    return data.train.select(mask)


def two_requests(data: Dataset) -> tuple[Interactions, Interactions]:
    first = request_of(data, 10, seed=2)
    return first, request_of(data.with_train(data.train.subtract(first)), 10, seed=3)


def all_scores(result) -> torch.Tensor:
    return result.scorer.score_users(torch.arange(N_USERS))


def request_scores(result, edges: Interactions) -> torch.Tensor:
    return result.scorer.score_pairs(torch.from_numpy(edges.users), torch.from_numpy(edges.items))


def encoder_state(ie: UnlearnRec) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in ie.encoder.state_dict().items()}


@pytest.fixture(scope="module")
def prepared(trained_lightgcn, ie_config, tmp_path_factory):
    """A prepared UnlearnRec saved once; `fresh()` loads an independent copy in the just-prepared state."""
    model, data = trained_lightgcn
    path = tmp_path_factory.mktemp("unlearnrec")
    UnlearnRec(ie_config(), progress=False).prepare(model.clone(), data).save(path)

    def fresh(**request_settings) -> UnlearnRec:
        ie = UnlearnRec.load(path, model.clone(), data, progress=False)
        for key, value in request_settings.items():
            setattr(ie.config, key, value)
        return ie
    return fresh


def test_prepare_leaves_the_original_model_on_the_full_graph(trained_lightgcn, ie_config):
    model, data = trained_lightgcn
    original = model.clone()
    before = original.score_users(torch.arange(N_USERS))
    ie = UnlearnRec(ie_config(), progress=False).prepare(original, data)
    assert original.graph.source_hash == data.train.hash          # not the last simulated residual graph
    assert ie.state.model is original and ie.state.dataset is data
    original.invalidate()
    torch.testing.assert_close(original.score_users(torch.arange(N_USERS)), before, rtol=0, atol=0)
    assert all(p.requires_grad for p in original.parameters())    # the caller's model is not frozen for them
    assert ie.prepare_seconds > 0 and ie.pretraining["history"][0]["epoch"] == 0


def test_zero_shot_forgets_and_reports_its_time(prepared, trained_lightgcn):
    model, data = trained_lightgcn
    edges = request_of(data)
    result = prepared().unlearn(edges)
    original = model.score_pairs(torch.from_numpy(edges.users), torch.from_numpy(edges.items))
    assert request_scores(result, edges).mean() < original.mean()
    assert result.kind == "approximate" and result.model is result.scorer
    assert result.model.graph.source_hash == data.train.subtract(edges).hash
    assert 0 < result.seconds["zero_shot"] <= result.seconds["total"]
    assert "finetune" not in result.seconds


def whole_histories(data: Dataset, users, extra: int = 6) -> Interactions:
    """Every training edge of `users`, and `extra` random edges of other users (who keep the rest)."""
    erased = data.train.select(np.isin(data.train.users, users))
    others = data.train.subtract(erased)
    pick = np.zeros(len(others), dtype=bool)
    pick[np.random.default_rng(4).choice(len(others), size=extra, replace=False)] = True
    return erased.union(others.select(pick))


@pytest.mark.parametrize("finetune_epochs", [0.0, 1.0], ids=["zero-shot", "fine-tuned"])
def test_erased_users_get_fresh_rows_and_nobody_else(prepared, trained_lightgcn, finetune_epochs):
    """A user whose whole history is forgotten ends with a fresh draw from the initial distribution (what a
    retrain holds: it never trains that row); every other row is the encoder's (and fine-tuning's) output,
    exactly as without the reset; the draw is the same on every run of the request."""
    model, data = trained_lightgcn
    erased_users = [3, 40]
    request = whole_histories(data, erased_users)
    ie = prepared(finetune_epochs=finetune_epochs)
    reset = ie.unlearn(request)
    kept = prepared(finetune_epochs=finetune_epochs, reset_erased_users=False).unlearn(request)
    assert reset.report["reset_users"] == 2 and kept.report["reset_users"] == 0
    rows, rows_kept = reset.model.embedding.weight.detach(), kept.model.embedding.weight.detach()
    others = np.setdiff1d(np.arange(N_USERS + N_ITEMS), erased_users)
    assert torch.equal(rows[others], rows_kept[others])
    fresh = rows[erased_users]
    assert not torch.allclose(fresh, rows_kept[erased_users], atol=1e-3)
    init_std = model.config.init_std
    assert 0.6 * init_std < fresh.std().item() < 1.5 * init_std                   # the initial distribution,
    assert abs(fresh.mean().item()) < 0.5 * init_std                                # not zeros or a copy
    again = prepared(finetune_epochs=finetune_epochs).unlearn(request)
    assert torch.equal(again.model.embedding.weight, reset.model.embedding.weight)
    if finetune_epochs:   # the next request starts from this model, fresh rows included
        torch.testing.assert_close(ie.inputs.e0, rows, rtol=0, atol=0)


def test_finetuning_changes_a_copy_and_never_the_shared_encoder(prepared, trained_lightgcn):
    """H⁰, W_η, the MLP (and so every later request's starting point) stay bit-identical through a fine-tuned
    request: fine-tuning trains per-request copies of E₀ and the MLP."""
    _, data = trained_lightgcn
    edges = request_of(data)
    ie = prepared(finetune_epochs=2.0)
    before = encoder_state(ie)
    tuned = ie.unlearn(edges)
    for name, value in ie.encoder.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed by fine-tuning"
    assert tuned.seconds["finetune"] > 0
    zero_shot = prepared().unlearn(edges)
    assert not torch.allclose(tuned.model.embedding.weight, zero_shot.model.embedding.weight)


def test_finetuning_never_feeds_forgotten_edges_as_positives(prepared, trained_lightgcn, batch_spy):
    _, data = trained_lightgcn
    first, second = two_requests(data)
    ie = prepared(finetune_epochs=1.0)
    ie.unlearn(first)
    seen = batch_spy()
    ie.unlearn(second)
    users = np.concatenate([s[0] for s in seen])
    pos = np.concatenate([s[1] for s in seen])
    assert users.size == len(data.train) - 20                    # one epoch over the residual edges
    assert not first.union(second).contains(users, pos).any()


def test_pretraining_draws_positives_from_the_simulated_residual_only(trained_lightgcn, ie_config, batch_spy,
                                                                    monkeypatch):
    from recunlearn.unlearn.unlearnrec import unlearner as unlearner_module
    model, data = trained_lightgcn
    drawn = []
    real = unlearner_module.simulated_request

    def spy(*args):
        drawn.append(real(*args))
        return drawn[-1]

    monkeypatch.setattr(unlearner_module, "simulated_request", spy)
    seen = batch_spy()
    UnlearnRec(ie_config(epochs=2, sim_every=2), progress=False).prepare(model.clone(), data)
    request, = drawn                                           # one simulated request for both epochs
    users = np.concatenate([s[0] for s in seen])
    pos = np.concatenate([s[1] for s in seen])
    assert users.size == 2 * (len(data.train) - len(request))
    assert not request.contains(users, pos).any()
    assert data.train.contains(users, pos).all()


def test_fractional_finetuning_runs_part_of_an_epoch(prepared, trained_lightgcn, batch_spy):
    _, data = trained_lightgcn
    seen = batch_spy()
    prepared(finetune_epochs=0.25).unlearn(request_of(data))
    assert len(seen) == int(np.ceil(0.25 * (len(data.train) - 15) / 128))


def test_cumulative_stream_equals_one_request_of_the_union(prepared, trained_lightgcn):
    """The default sequential rule encodes every request since the last reset together: two zero-shot
    requests give exactly the model of one zero-shot request of their union. The paper's rule (compose)
    encodes the second alone from the first's output, so its shift stacks on the first one."""
    _, data = trained_lightgcn
    first, second = two_requests(data)
    stream = prepared()
    assert stream.config.sequential == "cumulative"
    stream.unlearn(first)
    streamed = stream.unlearn(second)
    assert stream.inputs.pending.hash == first.union(second).hash
    once = prepared().unlearn(first.union(second))
    torch.testing.assert_close(all_scores(streamed), all_scores(once))
    assert streamed.forgotten.hash == once.forgotten.hash

    composing = prepared(sequential="compose")
    composing.unlearn(first)
    composed = composing.unlearn(second)
    assert len(composing.inputs.pending) == 0
    assert not torch.allclose(all_scores(composed), all_scores(once), atol=1e-4)


def test_finetuning_resets_the_cumulative_input_state(prepared, trained_lightgcn):
    """After a fine-tuned request the encoder starts from the fine-tuned model: the next request is encoded
    alone, on top of it."""
    _, data = trained_lightgcn
    first, second = two_requests(data)
    ie = prepared(finetune_epochs=1.0)
    tuned = ie.unlearn(first)
    assert len(ie.inputs.pending) == 0
    torch.testing.assert_close(ie.inputs.e0, tuned.model.embedding.weight.detach())
    ie.config.finetune_epochs = 0.0
    ie.unlearn(second)
    assert ie.inputs.pending.hash == second.hash
    torch.testing.assert_close(ie.inputs.e0, tuned.model.embedding.weight.detach())


@pytest.mark.parametrize("finetune_epochs", [0.0, 1.0], ids=["zero-shot", "fine-tuned"])
def test_save_load_round_trip_continues_identically(prepared, trained_lightgcn, tmp_path, finetune_epochs):
    """Saved after one request, the loaded state scores identically and answers the next request exactly as
    the unsaved one does (fine-tuning included)."""
    model, data = trained_lightgcn
    first, second = two_requests(data)
    ie = prepared(finetune_epochs=finetune_epochs)
    after_first = ie.unlearn(first)
    ie.save(tmp_path / "state")
    for name in (ie_io.ENCODER_FILE, ie_io.INPUT_STATE_FILE):
        torch.load(tmp_path / "state" / name, weights_only=True)
    loaded = UnlearnRec.load(tmp_path / "state", model.clone(), data, progress=False)
    assert torch.equal(all_scores(loaded.state), all_scores(after_first))
    assert loaded.inputs.pending.hash == ie.inputs.pending.hash
    assert loaded.pretraining == ie.pretraining and loaded.calibration == ie.calibration
    expected, got = ie.unlearn(second), loaded.unlearn(second)
    assert torch.equal(all_scores(got), all_scores(expected))
    assert got.forgotten.hash == expected.forgotten.hash


def test_saved_state_refuses_another_model_or_data(prepared, trained_lightgcn, synthetic, tmp_path):
    model, data = trained_lightgcn
    prepared().save(tmp_path / "ie")
    other = build_model(model_config("lightgcn", {"dim": 16}), N_USERS, N_ITEMS)
    with pytest.raises(ValueError, match="different model weights"):
        UnlearnRec.load(tmp_path / "ie", other, data, progress=False)
    with pytest.raises(ValueError, match="prepared for training data"):
        UnlearnRec.load(tmp_path / "ie", model.clone(), synthetic(seed=5), progress=False)
    with pytest.raises(FileNotFoundError, match="recunlearn prepare"):
        UnlearnRec.load(tmp_path / "missing", model.clone(), data, progress=False)


def test_request_time_fields_do_not_change_the_preparation_config():
    base = UnlearnRec(IEConfig())
    assert UnlearnRec(IEConfig(sequential="compose", finetune_lr=0.5, finetune_epochs=2)).preparation_config() == \
        base.preparation_config()
    assert UnlearnRec(IEConfig(lambda_p=0.5)).preparation_config() != base.preparation_config()


def test_model_loss_includes_the_backbones_contrastive_term_on_the_residual_graph(monkeypatch, synthetic, ie_config):
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
        seen.append(("ssl" in terms, graph.source_hash, self.views[0].source_hash if self.views else None))
        return terms

    monkeypatch.setattr(SGL, "extra_loss", spy)
    UnlearnRec(ie_config(epochs=1), progress=False).prepare(model, data)
    assert seen and all(has_ssl for has_ssl, _, _ in seen)
    assert all(graph != data.train.hash and view == graph for _, graph, view in seen)   # residual, not full graph
