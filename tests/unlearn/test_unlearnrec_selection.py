"""The choices UnlearnRec makes in preparation, from training and validation data only: the epoch it keeps
and the withdraw strength it starts from."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recunlearn.data.interactions import Interactions
from recunlearn.unlearn.unlearnrec import IEConfig, InfluenceEncoder, UnlearnRec
from recunlearn.unlearn.unlearnrec.selection import (CALIBRATION_STREAM, SELECTION_STREAM, CheckpointKeeper, Probe,
                                                     calibrate, select_check, withdraw_gap)
from recunlearn.unlearn.unlearnrec.training import EncoderInputs

N_USERS, N_ITEMS = 60, 40


def check(recall: float, auc: float) -> dict:
    return {"valid_recall": recall, "request_auc": auc}


def brute_force_auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    diff = positive[:, None] - negative[None, :]
    return ((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean()).item()


# --- which epoch -----------------------------------------------------------------------------------------

def test_selection_prefers_chance_over_the_most_forgotten_epoch():
    checks = [check(0.300, 0.60),     # under-forgets: request edges still score above validation edges
              check(0.299, 0.52),     # closest to what a retrained model does, utility within 1%
              check(0.298, 0.30),     # forgets the most (over-forgets), utility within 1%
              check(0.250, 0.50)]     # at chance, but utility lost
    assert select_check(checks, tolerance=0.01) == 1
    # over-forgetting is as far off as under-forgetting: 0.45 beats 0.56, and 0.56 beats 0.40
    assert select_check([check(0.3, 0.56), check(0.3, 0.45)], 0.01) == 1
    assert select_check([check(0.3, 0.40), check(0.3, 0.56)], 0.01) == 1
    # the utility guard: without it the epoch at chance would win
    assert select_check(checks, tolerance=0.2) == 3


def test_keeper_drops_states_that_fall_out_of_the_utility_guard():
    encoder = InfluenceEncoder(4, 2, 1, IEConfig())
    keeper = CheckpointKeeper(tolerance=0.01)
    for k, (recall, auc) in enumerate([(0.20, 0.50), (0.30, 0.60), (0.299, 0.55)]):
        with torch.no_grad():
            encoder.h0.fill_(k)
        keeper.offer(check(recall, auc), encoder)
    assert set(keeper.states) == {1, 2}
    assert keeper.restore_selected(encoder) == keeper.checks[2]
    assert torch.all(encoder.h0 == 2)


def test_prepare_keeps_the_encoder_of_the_selected_check(trained_lightgcn, ie_config, tmp_path):
    """The kept encoder is the one `select_check` picks from the history, and reproduces its check."""
    model, data = trained_lightgcn
    cfg = ie_config(epochs=4, select_every=1)
    ie = UnlearnRec(cfg, progress=False).prepare(model.clone(), data)
    history = ie.pretraining["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4]
    assert ie.pretraining["selected"] == history[select_check(history, cfg.select_recall_tolerance)]
    probe = Probe.draw(data, cfg.probe_rho, cfg.seed, SELECTION_STREAM)
    again = probe.check(ie.encoder, ie.backbone, ie.inputs)
    assert again["request_auc"] == pytest.approx(ie.pretraining["selected"]["request_auc"])

    # what benchmark rows record about the preparation, the same after a save and load
    chosen = history[select_check(history, cfg.select_recall_tolerance)]["epoch"]
    expected = {"pretrain_epochs_run": 4, "selected_epoch": chosen, "withdraw": ie.calibration["withdraw_init"],
                "withdraw_calibrated": ie.calibration["reached"]}
    assert ie.preparation_report() == expected
    loaded = UnlearnRec.load(ie.save(tmp_path / "ie"), model.clone(), data, progress=False)
    assert loaded.preparation_report() == expected


# --- how strong the withdraw term starts -----------------------------------------------------------------

def test_calibrate_finds_the_root_of_a_decreasing_gap():
    result = calibrate(lambda w: 0.3 - 0.1 * w, start=0.002)
    assert result["reached"] and result["withdraw_init"] == pytest.approx(3.0, rel=1e-3)
    assert calibrate(lambda w: -0.1 - w, start=1.0)["withdraw_init"] == 0.0          # already below: no withdraw
    unreachable = calibrate(lambda w: 0.2 + w, start=1.0)                           # a term that never withdraws
    assert not unreachable["reached"] and unreachable["withdraw_init"] == 0.0


def test_calibrate_finds_a_narrow_dip_that_doubling_steps_over():
    """Past some w the withdraw overshoots and the gap rises again: the first crossing is found even when the
    doubling steps (…, 8.192, 16.384) land on both sides of the dip below 0."""
    def dip(w):
        return 0.3 * ((w - 10) / 2) ** 2 - 0.05
    result = calibrate(dip, start=0.002)
    assert result["reached"] and result["withdraw_init"] == pytest.approx(10 - 2 * np.sqrt(0.05 / 0.3), rel=1e-3)


def test_calibrated_withdraw_makes_request_edges_score_like_validation_edges(memorising_lightgcn):
    """On a held-out simulated request the calibrated zero-shot model ranks the request edges against the
    validation edges at chance (AUC computed here pair by pair), where the original ranks them far above."""
    model, data = memorising_lightgcn
    probe = Probe.draw(data, 0.05, seed=0, stream=CALIBRATION_STREAM)
    backbone = model.clone()
    inputs = EncoderInputs(model.embedding.weight.detach(), torch.cat(model.final_embeddings()),
                           Interactions.empty(N_USERS, N_ITEMS))
    encoder = InfluenceEncoder(N_USERS + N_ITEMS, 32, 3, IEConfig())

    def zero_shot_auc() -> float:
        request, valid = probe.scores(probe.scorer(encoder, backbone, inputs))
        return brute_force_auc(request, valid)

    with torch.no_grad():
        encoder.withdraw.fill_(0.0)
    before = zero_shot_auc()
    result = calibrate(withdraw_gap(probe, encoder, backbone, inputs), start=0.002)
    with torch.no_grad():
        encoder.withdraw.fill_(result["withdraw_init"])
    assert before > 0.8
    assert result["reached"] and result["withdraw_init"] > 0
    assert zero_shot_auc() == pytest.approx(0.5, abs=0.01)


def test_prepare_starts_from_the_calibrated_withdraw_rate(memorising_lightgcn, ie_config):
    model, data = memorising_lightgcn
    ie = UnlearnRec(ie_config(epochs=1, lr=1e-9), progress=False).prepare(model.clone(), data)
    assert ie.calibration["reached"] and ie.calibration["withdraw_init"] > 0.002
    torch.testing.assert_close(ie.encoder.withdraw, torch.full_like(ie.encoder.withdraw,
                                                                    ie.calibration["withdraw_init"]), atol=1e-6, rtol=0)
    fixed = UnlearnRec(ie_config(epochs=1, lr=1e-9, withdraw_calibration="none"), progress=False)
    fixed.prepare(model.clone(), data)
    torch.testing.assert_close(fixed.encoder.withdraw, torch.full_like(fixed.encoder.withdraw, 0.002),
                               atol=1e-6, rtol=0)


def test_held_out_requests_are_drawn_apart_from_each_other(trained_lightgcn):
    _, data = trained_lightgcn
    selection = Probe.draw(data, 0.1, 0, SELECTION_STREAM).episode.edges
    calibration = Probe.draw(data, 0.1, 0, CALIBRATION_STREAM).episode.edges
    assert selection.hash != calibration.hash
    assert len(selection) == round(0.1 * len(data.train))
    assert data.train.contains(selection.users, selection.items).all()
    assert np.isin(selection.keys, data.test.keys).sum() == 0
