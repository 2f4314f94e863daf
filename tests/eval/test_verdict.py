"""Verdict on a forgetting audit: hand-built reports around each threshold, and real audits of a tiny case."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from recunlearn.data.interactions import Interactions
from recunlearn.eval.forgetting import audit, neighbourhood_utility
from recunlearn.eval.ranking import evaluate
from recunlearn.eval.scorer import EmbeddingScorer
from recunlearn.eval.verdict import MIA_GAP, UTILITY_RATIO, judge

# What `recunlearn audit` reports for a model level with Retrain (the keys are checked against a real report).
LEVEL = {"audit_users": 50.0, "audit_edges": 110.0, "forget_score_mean": 0.1, "forget_score_std": 1.0,
         "residual_score_mean": 0.5, "residual_score_std": 1.0, "nonedge_score_mean": -0.2, "nonedge_score_std": 1.0,
         "forget_rank_pct": 0.62, "forget_Recall@20": 0.3, "mia_auc": 0.5, "mia_learned_auc": 0.52, "MI-NG": 1.1,
         "diff_auc": 0.6, "MI-BF": 1.05, "jaccard@20_vs_retrain": 0.3, "sym_kl_vs_retrain": 0.2, "mia_auc_gap": 0.0,
         "forget_score_gap": 0.0, "over_forgetting": 0.0, "test_Recall@20": 0.25, "test_NDCG@20": 0.2,
         "retrain_test_Recall@20": 0.25, "retrain_test_NDCG@20": 0.2, "neighbourhood_Recall@20": 0.24,
         "neighbourhood_NDCG@20": 0.19, "neighbourhood_users": 45.0}


def report(**changes) -> dict:
    return {**LEVEL, **{key.replace("__", "@"): value for key, value in changes.items()}}


def by_measure(verdict) -> dict:
    return {check.measure: check for check in verdict.checks}


# --- real reports of a tiny case ------------------------------------------------------------------------------

class DenseScorer:
    def __init__(self, scores):
        self.scores = torch.as_tensor(scores, dtype=torch.float32)
        self.n_users, self.n_items = self.scores.shape

    def score_users(self, users):
        return self.scores[users].clone()

    def score_pairs(self, users, items):
        return self.scores[users, items]


def real_report(model, retrain, forget, residual, valid, test) -> dict:
    """The report `recunlearn audit` builds, on the tiny case."""
    out = audit(model, forget, residual, test, original=model, retrain=retrain, valid=valid)
    mask = residual.union(valid)
    out.update({f"test_{k}": v for k, v in evaluate(model, test, mask, [20]).items() if k != "users"})
    out.update({f"retrain_test_{k}": v for k, v in evaluate(retrain, test, mask, [20]).items() if k != "users"})
    out.update(neighbourhood_utility(model, forget, residual, test, valid, ks=(20,)))
    return out


@pytest.fixture(scope="module")
def tiny_case():
    n_users, n_items = 60, 80
    rng = np.random.default_rng(0)
    keys = rng.choice(n_users * n_items, 1500, replace=False)
    split = lambda part: Interactions.from_arrays(part // n_items, part % n_items, n_users, n_items)  # noqa: E731
    train, valid, test = split(keys[:1100]), split(keys[1100:1200]), split(keys[1200:])
    forget = train.select(rng.random(len(train)) < 0.1)
    return forget, train.subtract(forget), valid, test


def test_a_real_report_of_retrain_against_itself_passes_and_uses_the_keys_judged(tiny_case):
    forget, residual, valid, test = tiny_case
    scorer = EmbeddingScorer(torch.randn(60, 6, generator=torch.Generator().manual_seed(0)),
                             torch.randn(80, 6, generator=torch.Generator().manual_seed(1)))
    real = real_report(scorer, scorer, forget, residual, valid, test)
    assert set(LEVEL) <= set(real)               # the hand-built reports below use the real key names
    verdict = judge(real)
    assert verdict.status == "pass" and verdict.line.startswith("PASS: indistinguishable from Retrain")
    assert {c.measure for c in verdict.checks if c.status == "pass"} == {"Recall@20", "MIA AUC", "forget rank"}


def test_a_real_memorising_model_fails_as_under_forgetting(tiny_case):
    forget, residual, valid, test = tiny_case
    retrain = np.random.default_rng(1).normal(size=(60, 80))
    memorised = retrain.copy()
    memorised[forget.users, forget.items] += 10.0           # the forgotten edges scored at the top
    verdict = judge(real_report(DenseScorer(memorised), DenseScorer(retrain), forget, residual, valid, test))
    assert verdict.status == "fail"
    assert "MIA AUC" in verdict.line and "under-forgets" in verdict.line
    assert by_measure(verdict)["MIA AUC"].status == "fail"


# --- hand-built reports ---------------------------------------------------------------------------------------

def test_a_report_level_with_retrain_passes():
    verdict = judge(report())
    assert verdict.status == "pass" and verdict.line.startswith("PASS")
    assert {c.measure: c.status for c in verdict.checks} == {
        "Recall@20": "pass", "NDCG@20": "info", "MIA AUC": "pass", "forget rank": "pass",
        "top-20 Jaccard vs Retrain": "info", "neighbourhood Recall@20": "info"}


def test_an_under_forgetting_attack_gap_fails_naming_mia():
    verdict = judge(report(mia_auc=0.78, mia_auc_gap=0.28))
    assert verdict.status == "fail"
    assert verdict.line.startswith("FAIL: ") and "MIA AUC 0.780 vs Retrain 0.500" in verdict.line
    assert "gap +0.280 > 0.020; under-forgets" in verdict.line
    check = by_measure(verdict)["MIA AUC"]
    assert (check.retrain, check.gap, check.direction) == (pytest.approx(0.5), pytest.approx(0.28), "under-forgets")


def test_over_forgetting_fails_naming_it():
    # the forgotten items sit 0.3 lower in their users' rankings than Retrain puts them
    verdict = judge(report(forget_rank_pct=0.32, over_forgetting=0.3))
    assert verdict.status == "fail" and "forget rank 0.320 vs Retrain 0.620" in verdict.line
    assert "over-forgets" in verdict.line and by_measure(verdict)["forget rank"].status == "fail"
    attack = judge(report(mia_auc=0.3, mia_auc_gap=-0.2))
    assert attack.status == "fail" and "MIA AUC" in attack.line and "over-forgets" in attack.line


def test_utility_below_retrain_fails_warns_or_passes_by_its_ratio():
    low = judge(report(test_Recall__20=0.95 * 0.25))
    assert low.status == "fail" and "Recall@20" in low.line and "utility below Retrain" in low.line
    assert "0.950 x Retrain" in low.line
    assert judge(report(test_Recall__20=0.985 * 0.25)).status == "warn"          # within twice the 1% allowance
    assert judge(report(test_Recall__20=0.995 * 0.25)).status == "pass"
    above = judge(report(test_Recall__20=0.3))
    assert above.status == "pass" and by_measure(above)["Recall@20"].direction == "utility above Retrain"
    # NDCG is shown, not judged: the target names Recall@20 only
    assert judge(report(test_NDCG__20=0.1)).status == "pass"
    assert UTILITY_RATIO == 0.99


def test_attack_gap_bands_and_a_wider_noise_floor():
    assert judge(report(mia_auc=0.515, mia_auc_gap=0.015)).status == "pass"
    near = judge(report(mia_auc=0.53, mia_auc_gap=0.03))
    assert near.status == "warn" and near.line.startswith("WARN: near miss: MIA AUC")
    assert judge(report(mia_auc=0.55, mia_auc_gap=0.05)).status == "fail"        # beyond twice the tolerance
    widened = judge(report(mia_auc=0.53, mia_auc_gap=0.03), noise_floor={"mia_auc": 0.04})
    assert widened.status == "pass" and "noise floor 0.040" in by_measure(widened)["MIA AUC"].threshold
    # a floor narrower than the target does not narrow it
    assert judge(report(mia_auc=0.515, mia_auc_gap=0.015), noise_floor={"mia_auc": 0.005}).status == "pass"
    assert MIA_GAP == 0.02
    # the learned attack's gap (the benchmark harness records it) is held to the same target and floor
    learned = judge(report(mia_learned_auc_gap=0.1))
    assert learned.status == "fail" and "learned-attack AUC 0.520 vs Retrain 0.420" in learned.line
    assert judge(report(mia_learned_auc_gap=0.1), noise_floor={"mia_auc": 0.1}).status == "pass"


def test_values_exactly_at_a_threshold_pass():
    assert judge(report(mia_auc=0.52, mia_auc_gap=0.52 - 0.5)).status == "pass"
    assert judge(report(test_Recall__20=0.99 * 0.25)).status == "pass"
    assert judge(report(forget_rank_pct=0.6, over_forgetting=0.62 - 0.6)).status == "pass"
    assert judge(report(mia_auc=0.54, mia_auc_gap=0.54 - 0.5)).status == "warn"      # twice the tolerance


def test_noise_floor_widens_the_rank_and_utility_targets_too():
    rank = report(forget_rank_pct=0.57, over_forgetting=0.05)
    assert judge(rank).status == "fail"
    assert judge(rank, noise_floor={"forget_rank": 0.06}).status == "pass"
    utility = report(test_Recall__20=0.24)                                        # 0.96 x Retrain
    assert judge(utility).status == "fail"
    assert judge(utility, noise_floor={"Recall@20_std": 0.012}).status == "pass"
    # the dict of bench.aggregate.noise_floor, non-numeric entries and NaN included, is accepted as is
    floor = {"retrains": 3, "seeds": [1, 2, 3], "request_seed": 0, "mia_auc": float("nan"),
             "Recall@20_std": 0.012, "forget_rank": 0.06, "jaccard": 0.004}
    assert judge(report(test_Recall__20=0.24, forget_rank_pct=0.57, over_forgetting=0.05),
                 noise_floor=floor).status == "pass"


def test_jaccard_is_informational_without_a_floor_and_judged_against_one():
    unlike = report(jaccard__20_vs_retrain=0.001)
    assert judge(unlike).status == "pass"
    assert by_measure(judge(unlike))["top-20 Jaccard vs Retrain"].status == "info"
    statuses = {value: judge(report(jaccard__20_vs_retrain=value), noise_floor={"jaccard": 0.05}).status
                for value in (0.1, 0.03, 0.01)}
    assert statuses == {0.1: "pass", 0.03: "warn", 0.01: "fail"}


def test_missing_measures_are_skipped():
    no_retrain = {k: v for k, v in LEVEL.items() if "retrain" not in k and k not in ("mia_auc_gap", "over_forgetting")}
    verdict = judge(no_retrain)
    assert {c.measure for c in verdict.checks} == {"neighbourhood Recall@20"}
    assert verdict.status == "warn" and "nothing to judge" in verdict.line
    assert judge({}).checks == [] and judge({}).status == "warn"
    attack_only = judge({"mia_auc": 0.51, "mia_auc_gap": 0.01})
    assert attack_only.status == "pass" and [c.measure for c in attack_only.checks] == ["MIA AUC"]


def test_nan_warns_naming_the_measure():
    verdict = judge(report(mia_auc=float("nan"), mia_auc_gap=float("nan")))
    assert verdict.status == "warn" and "MIA AUC is NaN" in verdict.line
    retrain_nan = judge(report(retrain_test_Recall__20=None))                     # JSON null
    assert retrain_nan.status == "warn" and "Retrain's Recall@20 is NaN" in retrain_nan.line
    # a failure still fails when another measure is NaN
    both = judge(report(mia_auc=0.78, mia_auc_gap=0.28, test_Recall__20=float("nan")))
    assert both.status == "fail" and "1 warning" in both.line


def test_several_failures_share_the_line_and_the_verdict_is_json():
    verdict = judge(report(mia_auc=0.78, mia_auc_gap=0.28, test_Recall__20=0.2, forget_rank_pct=float("nan")))
    assert verdict.status == "fail" and "MIA AUC" in verdict.line and "utility lost: Recall@20" in verdict.line
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data["status"] == "fail" and data["line"] == verdict.line
    rank = next(c for c in data["checks"] if c["measure"] == "forget rank")
    assert rank["value"] is None and rank["status"] == "warn"
    assert {"measure", "key", "value", "retrain", "gap", "threshold", "status", "why", "direction"} == set(rank)
    assert not any(isinstance(v, float) and math.isnan(v) for c in data["checks"] for v in c.values())
