"""UnlearnRec's withdraw factor per request size and shape (`withdraw_scaling: request`): the probes it is found
on, the factor a request takes, and what it leaves untouched."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from recunlearn.data.interactions import Interactions
from recunlearn.unlearn.unlearnrec import IEConfig, InfluenceEncoder, UnlearnRec
from recunlearn.unlearn.unlearnrec.selection import ERASED_USERS_STREAM, SCALING_STREAM, ErasedUsersProbe, Probe, \
    scale_gap
from recunlearn.unlearn.unlearnrec.training import EncoderInputs

from conformance.conftest import TripwireInteractions

N_USERS, N_ITEMS = 60, 40


def with_scaling(random: list[tuple[float, float]], erased: float, train_edges: int = 1000,
                 reset_erased_users: bool = False) -> UnlearnRec:
    """An unlearner whose preparation found these factors: (probe size, factor) per random probe."""
    ie = UnlearnRec(IEConfig(withdraw_scaling="request", reset_erased_users=reset_erased_users), progress=False)
    ie.scaling = {"random": [{"rho": rho, "scale": scale} for rho, scale in random],
                  "erased_users": {"scale": erased}, "train_edges": train_edges}
    return ie


def edges(users, items) -> Interactions:
    return Interactions.from_arrays(np.array(users), np.array(items), N_USERS, N_ITEMS)


def residual_keeping(users) -> Interactions:
    """A residual in which exactly `users` keep a training edge."""
    return edges(list(users), [0] * len(users))


def test_a_request_takes_the_factor_of_its_size_between_the_probes():
    ie = with_scaling([(0.002, 0.5), (0.01, 1.2), (0.05, 1.0)], erased=2.0, train_edges=1000)
    keeps = residual_keeping(range(N_USERS))            # nobody erased: the random probes decide
    assert ie.withdraw_scale(edges(range(2), [1, 1]), keeps) == pytest.approx(0.5)      # 0.2% of 1000
    assert ie.withdraw_scale(edges(range(10), [1] * 10), keeps) == pytest.approx(1.2)   # 1%
    # 0.5%: geometric interpolation on log size, brute force
    t = (np.log(0.005) - np.log(0.002)) / (np.log(0.01) - np.log(0.002))
    assert ie.withdraw_scale(edges(range(5), [1] * 5), keeps) == pytest.approx(0.5 ** (1 - t) * 1.2 ** t)
    assert ie.withdraw_scale(edges([0], [1]), keeps) == pytest.approx(0.5)               # smaller: held
    assert ie.withdraw_scale(edges(range(60), [1] * 60), keeps) == pytest.approx(1.0)    # larger: held


def test_a_request_of_whole_histories_takes_the_erased_users_factor():
    ie = with_scaling([(0.002, 0.5), (0.01, 1.2)], erased=2.0, train_edges=1000)
    request = edges([0, 0, 1, 1], [1, 2, 1, 2])                                          # 0.4%
    random = ie.withdraw_scale(request, residual_keeping(range(N_USERS)))
    assert ie.withdraw_scale(request, residual_keeping(range(2, N_USERS))) == pytest.approx(2.0)
    # user 0 erased, user 1 keeps an edge: half of the edges are erased users', a geometric mean
    assert ie.withdraw_scale(request, residual_keeping(range(1, N_USERS))) == pytest.approx(np.sqrt(random * 2.0))


def test_with_reset_rows_the_erased_users_edges_take_factor_one():
    """Their own rows are drawn afresh: the erased-users factor, found for those rows, no longer applies."""
    ie = with_scaling([(0.002, 0.5), (0.01, 1.2)], erased=2.0, train_edges=1000, reset_erased_users=True)
    request = edges([0, 0, 1, 1], [1, 2, 1, 2])
    random = ie.withdraw_scale(request, residual_keeping(range(N_USERS)))
    assert ie.withdraw_scale(request, residual_keeping(range(2, N_USERS))) == pytest.approx(1.0)
    assert ie.withdraw_scale(request, residual_keeping(range(1, N_USERS))) == pytest.approx(np.sqrt(random))


def test_without_scaling_every_request_keeps_the_prepared_withdraw(trained_lightgcn, ie_config):
    model, data = trained_lightgcn
    ie = UnlearnRec(ie_config(), progress=False).prepare(model.clone(), data)
    assert ie.scaling is None
    request = data.train.select(np.arange(len(data.train)) < 12)
    assert ie.withdraw_scale(request, data.train.subtract(request)) == 1.0
    assert ie.unlearn(request).report["withdraw_scale"] == 1.0


def test_scaled_withdraw_is_the_withdraw_rates_times_the_factor():
    cfg = IEConfig()
    encoder = InfluenceEncoder(N_USERS + N_ITEMS, 8, 3, cfg)
    with torch.no_grad():
        encoder.withdraw.uniform_(0.1, 2.0)
        encoder.h0.normal_()
    idm = torch.eye(N_USERS + N_ITEMS).to_sparse_csr()
    final = torch.randn(N_USERS + N_ITEMS, 8)
    scaled = encoder.shift(idm, final, scale=1.7)
    with torch.no_grad():
        encoder.withdraw.mul_(1.7)
    torch.testing.assert_close(scaled, encoder.shift(idm, final))


def test_erased_users_probe_holds_whole_histories_and_unknown_pairs(trained_lightgcn):
    _, data = trained_lightgcn
    probe = ErasedUsersProbe.draw(data, 0.1, seed=0, stream=ERASED_USERS_STREAM)
    users = np.unique(probe.episode.edges.users)
    assert len(users) == round(0.1 * len(np.intersect1d(data.valid.users, data.train.users)))
    assert probe.episode.edges.hash == data.train.select(np.isin(data.train.users, users)).hash
    assert not np.isin(probe.episode.residual.users, users).any()       # the users keep nothing
    assert probe.held_out.hash == data.valid.select(np.isin(data.valid.users, users)).hash
    assert probe.valid.hash == data.valid.hash                            # the utility guard sees all users
    assert set(probe.non_edges.users) <= set(users)
    known = data.train.union(data.valid)
    assert not known.contains(probe.non_edges.users, probe.non_edges.items).any()


def test_the_factors_put_the_probes_at_chance(memorising_lightgcn, ie_config):
    """Each reached factor gives its probe's zero-shot model a gap of about 0; the shared encoder is unchanged."""
    model, data = memorising_lightgcn
    ie = UnlearnRec(ie_config(epochs=1, lr=1e-9, withdraw_scaling="request", probe_rho=0.05,
                              scaling_probe_sizes=(0.5, 1.0)), progress=False).prepare(model.clone(), data)
    before = ie.encoder.withdraw.detach().clone()
    found = [*ie.scaling["random"], ie.scaling["erased_users"]]
    assert any(entry["reached"] for entry in found)
    probes = [Probe.draw(data, entry["rho"], ie.config.seed, SCALING_STREAM + k) for k, entry in enumerate(ie.scaling["random"])]
    probes.append(ErasedUsersProbe.draw(data, ie.config.probe_rho, ie.config.seed, ERASED_USERS_STREAM))
    for probe, entry in zip(probes, found):
        assert len(probe.episode.edges) == entry["edges"]
        if entry["reached"] and entry["recall_kept"]:
            gap = scale_gap(probe, ie.encoder, ie.backbone, ie.inputs)
            assert abs(gap(entry["scale"])) <= 0.02
            assert abs(gap(0.0)) > 0.02                                   # without the withdraw it is not
    torch.testing.assert_close(ie.encoder.withdraw, before)


def test_scaling_survives_save_and_load(trained_lightgcn, ie_config, tmp_path):
    model, data = trained_lightgcn
    ie = UnlearnRec(ie_config(withdraw_scaling="request"), progress=False).prepare(model.clone(), data)
    ie.save(tmp_path)
    loaded = UnlearnRec.load(tmp_path, model.clone(), data, progress=False)
    assert loaded.scaling == ie.scaling
    request = data.train.select(np.arange(len(data.train)) < 12)
    torch.testing.assert_close(loaded.unlearn(request).scorer.score_users(torch.arange(N_USERS)),
                               ie.unlearn(request).scorer.score_users(torch.arange(N_USERS)))


def test_scaling_never_reads_the_test_split(trained_lightgcn, ie_config):
    model, data = trained_lightgcn
    tripwire = TripwireInteractions(data.test.users, data.test.items, data.n_users, data.n_items)
    TripwireInteractions.reads.clear()
    UnlearnRec(ie_config(withdraw_scaling="request"), progress=False).prepare(model.clone(), replace(data, test=tripwire))
    assert TripwireInteractions.reads == []


def test_a_request_is_forgotten_with_its_factor_applied(trained_lightgcn, ie_config, tmp_path):
    """The zero-shot model under factor 2 is the one whose encoder holds 2 × W_η (and differs from factor 1)."""
    model, data = trained_lightgcn
    UnlearnRec(ie_config(), progress=False).prepare(model.clone(), data).save(tmp_path)
    spread = np.arange(len(data.train))
    request = data.train.select((spread % 7 == 0) & (spread < 84))      # 12 edges; every user keeps others
    assert np.all(data.train.subtract(request).user_degree()[request.users] > 0)
    scaled = UnlearnRec.load(tmp_path, model.clone(), data, progress=False)
    scaled.scaling = {"random": [{"rho": 0.5, "scale": 2.0}], "erased_users": {"scale": 2.0},
                      "train_edges": len(data.train)}
    result = scaled.unlearn(request)
    assert result.report["withdraw_scale"] == pytest.approx(2.0)
    doubled = UnlearnRec.load(tmp_path, model.clone(), data, progress=False)
    with torch.no_grad():
        doubled.encoder.withdraw.mul_(2.0)
    users = torch.arange(N_USERS)
    torch.testing.assert_close(result.scorer.score_users(users), doubled.unlearn(request).scorer.score_users(users))
    plain = UnlearnRec.load(tmp_path, model.clone(), data, progress=False).unlearn(request)
    assert not torch.allclose(result.scorer.score_users(users), plain.scorer.score_users(users))
