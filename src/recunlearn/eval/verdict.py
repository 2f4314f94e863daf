"""A pass / warn / fail verdict on a forgetting audit, measured against Retrain.

`judge(report)` reads the flat dict of `recunlearn audit` (`forgetting.audit` with a retrain, plus
`test_*`, `retrain_test_*` and `neighbourhood_*` utility) and returns one `Check` per key measure, each
beside Retrain's value with its direction, and a one-line verdict. Rules (evaluation.md, "Forgetting" and
"Rules that make a number count"):

- A target "within X of Retrain" means within max(X, noise floor) when a noise floor is given (rule 2).
  `noise_floor` takes the keys of `bench.aggregate.noise_floor`: "mia_auc" (largest |ΔMIA AUC| between
  independent retrains; widens both attack gaps), "forget_rank" (largest |Δforget rank|), "Recall@20_std",
  "jaccard" (lowest top-20 Jaccard of a retrain against the reference). Other keys are ignored.
- Warn band: a miss by no more than the allowance again (within WARN_FACTOR × the tolerance) warns; beyond
  it fails. Above the tolerance is never a pass.
- Gaps are method minus Retrain. An attack AUC or forget rank above Retrain's under-forgets (the forgotten
  edges still look learned); below it over-forgets (the deletion itself shows).
- Top-20 Jaccard against Retrain is judged only against the noise floor: independent retrains may overlap
  very little, so a raw value says nothing by itself (BENCHMARKS.md section 5). Without a floor it is shown
  as "info", like NDCG@20 and neighbourhood Recall@20, which have no target of their own.
- A measure whose keys are missing from the report (e.g. no retrain given) is skipped; a NaN value warns,
  naming the measure.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["pass", "warn", "fail", "info"]

# evaluation.md "Utility" reports utility relative to Retrain; the target (BENCHMARKS.md section 5)
# is test Recall@20 >= 0.99 x Retrain's.
UTILITY_RATIO = 0.99
# evaluation.md "Forgetting": |AUC_method - AUC_retrain| <= 0.02 (threshold and learned attacks alike).
MIA_GAP = 0.02
# evaluation.md "Forgetting": over-forgetting is a leak too; it gives no number, so the forget rank is held
# to the same 0.02 as the attack (as `recunlearn bench report` does), widened by the noise floor (rule 2).
RANK_GAP = 0.02
# Warn band: one audit is one seed against one retrain, so a miss by less than the allowance again is a
# near miss to re-check with more seeds or a noise floor, not yet a failure.
WARN_FACTOR = 2.0
# A value exactly at a threshold passes despite float rounding (e.g. 0.52 - 0.50 > 0.02 in floats).
EPS = 1e-9


@dataclass
class Check:
    """One key measure of the report beside Retrain's value."""

    measure: str             # what is judged, as the verdict line names it
    key: str                 # the report key it comes from
    value: float             # the unlearned model's value
    retrain: float | None    # Retrain's value (Jaccard: the lowest overlap between independent retrains)
    gap: float | None        # value - retrain
    threshold: str           # the target, widened to the noise floor when one is given
    status: Status           # "info": shown, not judged
    why: str                 # one line: values, gap against the threshold, direction
    direction: str = ""      # "under-forgets" / "over-forgets", "utility below Retrain" / "... above ..."

    def to_dict(self) -> dict:
        return {k: _json_number(v) for k, v in asdict(self).items()}


@dataclass
class Verdict:
    checks: list[Check]
    status: Literal["pass", "warn", "fail"]
    line: str

    def to_dict(self) -> dict:
        return {"status": self.status, "line": self.line, "checks": [c.to_dict() for c in self.checks]}


def judge(report: Mapping[str, float], *, noise_floor: Mapping[str, float] | None = None) -> Verdict:
    """Checks of the key measures in `report` and the verdict line they give (see the module notes)."""
    floor = noise_floor or {}
    checks = [
        _utility(report, "Recall@20", "test_Recall@20", "retrain_test_Recall@20", _floor(floor, "Recall@20_std")),
        _utility(report, "NDCG@20", "test_NDCG@20", "retrain_test_NDCG@20", judged=False),
        _attack(report, "MIA AUC", "mia_auc", "mia_auc_gap", _floor(floor, "mia_auc")),
        _attack(report, "learned-attack AUC", "mia_learned_auc", "mia_learned_auc_gap", _floor(floor, "mia_auc")),
        _forget_rank(report, _floor(floor, "forget_rank")),
        _jaccard(report, _floor(floor, "jaccard")),
        _neighbourhood(report),
    ]
    return _verdict([c for c in checks if c is not None])


def _verdict(checks: list[Check]) -> Verdict:
    fails = [c.why for c in checks if c.status == "fail"]
    warns = [c.why for c in checks if c.status == "warn"]
    passes = [c.why for c in checks if c.status == "pass"]
    if fails:
        more = f" (and {len(warns)} warning{'s' * (len(warns) > 1)})" if warns else ""
        return Verdict(checks, "fail", "FAIL: " + "; ".join(fails) + more)
    if warns:
        return Verdict(checks, "warn", "WARN: " + "; ".join(warns))
    if passes:
        line = f"PASS: indistinguishable from Retrain on every key measure ({'; '.join(passes)})"
        return Verdict(checks, "pass", line)
    return Verdict(checks, "warn", "WARN: nothing to judge: the report has no comparison with Retrain")


def _attack(report, measure: str, key: str, gap_key: str, floor: float | None) -> Check | None:
    if key not in report or gap_key not in report:
        return None
    value = _number(report[key])
    return _against_retrain(measure, gap_key, value, _number(report[gap_key]), MIA_GAP, floor, digits=3)


def _forget_rank(report, floor: float | None) -> Check | None:
    if "forget_rank_pct" not in report or "over_forgetting" not in report:
        return None
    gap = 0.0 - _number(report["over_forgetting"])     # over_forgetting = retrain's rank - the method's
    return _against_retrain("forget rank", "over_forgetting", _number(report["forget_rank_pct"]), gap, RANK_GAP,
                            floor, digits=3)


def _against_retrain(measure: str, key: str, value: float, gap: float, allowance: float,
                     floor: float | None, digits: int) -> Check:
    """|gap| = |value - retrain| within max(allowance, floor); above Retrain under-forgets, below over-forgets."""
    retrain = value - gap
    tol = max(allowance, floor) if floor is not None else allowance
    threshold = f"|gap| <= {tol:.3f}"
    if floor is not None:
        threshold += f" (max of {allowance:g} and noise floor {floor:.3f})"
    if _nan(value, retrain):
        return _not_measured(measure, key, value, retrain, threshold)
    direction = "under-forgets" if gap > 0 else "over-forgets" if gap < 0 else ""
    shown = f"{measure} {value:.{digits}f} vs Retrain {retrain:.{digits}f}"
    if abs(gap) <= tol + EPS:
        return Check(measure, key, value, retrain, gap, threshold, "pass", f"{shown} (gap {gap:+.3f} <= {tol:.3f})",
                     direction)
    if abs(gap) <= WARN_FACTOR * tol + EPS:
        why = f"near miss: {shown} (gap {gap:+.3f} > {tol:.3f}, within {WARN_FACTOR:g}x; {direction})"
        return Check(measure, key, value, retrain, gap, threshold, "warn", why, direction)
    lead = "the forgotten edges still look learned" if gap > 0 else "the deletion itself is detectable"
    why = f"{lead}: {shown} (gap {gap:+.3f} > {tol:.3f}; {direction})"
    return Check(measure, key, value, retrain, gap, threshold, "fail", why, direction)


def _utility(report, measure: str, key: str, retrain_key: str, floor: float | None = None, *,
             judged: bool = True) -> Check | None:
    """Test utility against Retrain's: a drop of at most (1 - UTILITY_RATIO) x Retrain, or the floor."""
    if key not in report or retrain_key not in report:
        return None
    value, retrain = _number(report[key]), _number(report[retrain_key])
    threshold = f">= {UTILITY_RATIO:g} x Retrain" if judged else "none (not judged)"
    if _nan(value, retrain):
        return _not_measured(measure, key, value, retrain, threshold)
    allowed = (1 - UTILITY_RATIO) * retrain
    tol = max(allowed, floor) if floor is not None else allowed
    if judged and floor is not None:
        threshold = f"drop <= {tol:.4f} (max of {1 - UTILITY_RATIO:.0%} of Retrain and noise floor {floor:.4f})"
    gap = value - retrain
    direction = "utility below Retrain" if gap < 0 else "utility above Retrain" if gap > 0 else ""
    ratio = f"{value / retrain:.3f} x Retrain" if retrain else "Retrain is 0"
    shown = f"{measure} {value:.4f} vs Retrain {retrain:.4f} ({ratio}"
    if not judged:
        return Check(measure, key, value, retrain, gap, threshold, "info", f"{shown})", direction)
    if -gap <= tol + EPS:
        return Check(measure, key, value, retrain, gap, threshold, "pass", f"{shown})", direction)
    status = "warn" if -gap <= WARN_FACTOR * tol + EPS else "fail"
    lead = "near miss: " if status == "warn" else "utility lost: "
    why = f"{lead}{shown}, drop {-gap:.4f} > {tol:.4f}; {direction})"
    return Check(measure, key, value, retrain, gap, threshold, status, why, direction)


def _jaccard(report, floor: float | None) -> Check | None:
    """Judged against the noise floor only: below the lowest retrain-vs-retrain overlap fails (warn band: half)."""
    key = "jaccard@20_vs_retrain"
    if key not in report:
        return None
    measure, value = "top-20 Jaccard vs Retrain", _number(report[key])
    threshold = (f">= {floor:.3f} (lowest overlap between independent retrains)" if floor is not None
                 else "none without a noise floor")
    if _nan(value):
        return _not_measured(measure, key, value, floor, threshold)
    if floor is None:
        why = f"{measure} {value:.3f} (not judged: independent retrains may overlap little; no noise floor given)"
        return Check(measure, key, value, None, None, threshold, "info", why)
    shown = f"{measure} {value:.3f} vs {floor:.3f} between retrains"
    if value >= floor - EPS:
        return Check(measure, key, value, floor, value - floor, threshold, "pass", shown)
    direction = "further from Retrain than retrains are from each other"
    status = "warn" if value >= floor / WARN_FACTOR - EPS else "fail"
    why = f"{'near miss' if status == 'warn' else 'top-20 lists unlike any retrain'}: {shown} ({direction})"
    return Check(measure, key, value, floor, value - floor, threshold, status, why, direction)


def _neighbourhood(report) -> Check | None:
    """Shown, not judged (no target of its own); beside Retrain's when the report holds it."""
    key, measure = "neighbourhood_Recall@20", "neighbourhood Recall@20"
    if "retrain_neighbourhood_Recall@20" in report:
        return _utility(report, measure, key, "retrain_neighbourhood_Recall@20", judged=False)
    if key not in report:
        return None
    value = _number(report[key])
    if _nan(value):
        return _not_measured(measure, key, value, None, "none (not judged)")
    return Check(measure, key, value, None, None, "none (not judged)", "info",
                 f"{measure} {value:.4f} (no Retrain value in the report)")


def _not_measured(measure: str, key: str, value: float, retrain: float | None, threshold: str) -> Check:
    which = measure if _nan(value) else f"Retrain's {measure}"
    return Check(measure, key, value, retrain, None, threshold, "warn", f"{which} is NaN: not measured, not judged")


def _floor(floor: Mapping, key: str) -> float | None:
    value = floor.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _nan(*values: float | None) -> bool:
    return any(v is not None and math.isnan(v) for v in values)


def _json_number(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value
