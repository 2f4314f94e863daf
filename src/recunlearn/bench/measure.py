"""What the harness measures on one unlearned scorer: the timing of the request, utility and forgetting.

Timing (evaluation.md rule 3) is the same for every method, Retrain included: the harness's clock runs from
the call of `unlearn(request)` to the first query that the returned scorer answers to the harness. An exact
method retrains with early stopping; the contract lets it report its training epochs alone in
`seconds["total"]`, without the validation and evaluation passes that rule 3 leaves out, so for an exact
method the harness counts that and records the difference to its own clock as `excluded`. Approximate
methods and controls are counted on the harness's clock whatever they report. When a cache answered the
request (`timing_reused` in the method's report) the counted seconds are the recorded ones.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..data.interactions import Dataset, Interactions
from ..data.requests import Request
from ..eval.forgetting import audit, neighbourhood_utility
from ..eval.scorer import Scorer
from ..train.runs import test_metrics
from ..unlearn.base import UnlearnResult, Unlearner

# The forgetting measures copied from the audit into a row (the audit returns more; all are kept under
# `audit` in the row, these are the table's columns).
FORGETTING = ("mia_auc", "mia_auc_gap", "mia_learned_auc", "over_forgetting", "forget_rank_pct",
              "jaccard@20_vs_retrain", "forget_score_mean", "nonedge_score_mean", "residual_score_mean",
              "sym_kl_vs_retrain", "diff_auc", "MI-BF", "MI-NG")


def warm_up() -> None:
    """Pay torch's one-off lazy imports before any unit is timed: the first optimiser a process builds pulls in
    torch's compiler package (seconds), which a row would otherwise carry, whichever method comes first."""
    from ..train.trainer import optimizer_for
    optimizer_for(torch.nn.Linear(1, 1), 1e-3)


def first_query(scorer: Scorer) -> None:
    scorer.score_users(torch.zeros(1, dtype=torch.long))


def timed_unlearn(unlearner: Unlearner, request: Interactions | Request) -> tuple[UnlearnResult, dict]:
    """Apply one request (its edges, or the Request itself: the method then also sees its kind and any
    withdrawn features); (result, timings) with the counted `unlearn` seconds (see the module notes)."""
    start = time.perf_counter()
    result = unlearner.unlearn(request)
    first_query(result.scorer)
    wall = time.perf_counter() - start
    own = result.seconds.get("total", wall)
    if result.report.get("timing_reused"):
        counted, clock = own, "recorded"
    elif unlearner.kind == "exact":
        counted, clock = min(own, wall), "training epochs"
    else:
        counted, clock = wall, "harness"
    timings = {"unlearn": counted, "unlearn_wall": wall, "excluded": wall - counted if clock != "recorded" else 0.0,
               "clock": clock, "method_total": own,
               "parts": {k: v for k, v in result.seconds.items() if k != "total"}}
    for key in ("seconds_to_best", "best_epoch", "epochs_run"):   # early stopping's time to its best epoch
        if key in result.report:
            timings[key] = result.report[key]
    return result, timings


def measure(scorer: Scorer, residual: Dataset, forget: Interactions, *, reference: Scorer | None,
            original: Scorer | None, audit_test: Interactions, audit_valid: Interactions, ks: list[int],
            max_users: int | None, seed: int, takedown: np.ndarray | None = None) -> dict:
    """Utility on the residual data (test set, residual train ∪ valid masked), utility on the request's
    neighbourhood, and the forgetting audit against the reference. A request without edges (a modality
    constraint) has utility only. `takedown`: items of a take-down, counted in every user's top 20."""
    utility = {k: v for k, v in test_metrics(scorer, residual, ks).items() if k != "users"}
    if takedown is not None:
        utility.update(takedown_in_top(scorer, residual, takedown))
    if len(forget) == 0:
        return utility
    neighbourhood = neighbourhood_utility(scorer, forget, residual.train, residual.test, residual.valid,
                                          ks=tuple(ks))
    # A control that hides pairs scores them far below zero: σ(score) is 0 there and the audit's MI-BF / MI-NG
    # ratios are infinite (recorded as null), which numpy would warn about on every such row.
    with np.errstate(divide="ignore"):
        report = audit(scorer, forget, residual.train, audit_test, original=original, retrain=reference,
                       valid=audit_valid, seed=seed, max_users=max_users)
    return {**utility, **neighbourhood, **{key: report[key] for key in FORGETTING if key in report},
            "audit": report}


@torch.no_grad()
def takedown_in_top(scorer: Scorer, residual: Dataset, items: np.ndarray, k: int = 20,
                    batch_size: int = 1024) -> dict:
    """How often taken-down items still appear in a top-k list (residual training items masked), over all
    users: the number of (user, item) appearances, of users concerned and of distinct items."""
    taken = torch.zeros(residual.n_items, dtype=torch.bool)
    taken[torch.as_tensor(items, dtype=torch.long)] = True
    mask = residual.train.to_csr()
    appearances, users, seen = 0, 0, torch.zeros(residual.n_items, dtype=torch.bool)
    for start in range(0, residual.n_users, batch_size):
        batch = torch.arange(start, min(start + batch_size, residual.n_users))
        scores = scorer.score_users(batch).float().clone()
        rows = mask[start:start + len(batch)]
        scores[torch.from_numpy(np.repeat(np.arange(len(batch)), np.diff(rows.indptr))),
               torch.from_numpy(rows.indices.astype(np.int64))] = -float("inf")
        top = scores.topk(k, dim=1).indices
        hit = taken[top]
        appearances += int(hit.sum())
        users += int(hit.any(1).sum())
        seen[top[hit]] = True
    return {f"takedown_in_top{k}": appearances, f"takedown_users_top{k}": users,
            f"takedown_items_top{k}": int(seen.sum())}


def relative(metrics: dict, reference: dict, timings: dict | None = None, reference_seconds: float = float("nan"),
             prepare_seconds: float = 0.0) -> dict:
    """The columns measured against the reference: utility ratio, learned-attack gap and, with `timings`,
    speed-up and n*."""
    out = {}
    for key in ("Recall@20", "NDCG@20", "Recall@10", "NDCG@10", "neighbourhood_Recall@20"):
        if key in metrics and key in reference:
            out[f"{key}_vs_retrain"] = _ratio(metrics[key], reference[key])
    if "mia_learned_auc" in metrics and "mia_learned_auc" in reference:   # a request with edges
        out["mia_learned_auc_gap"] = metrics["mia_learned_auc"] - reference["mia_learned_auc"]
        out["forget_rank_gap"] = metrics["forget_rank_pct"] - reference["forget_rank_pct"]
    if timings is None:
        return out
    seconds = timings["unlearn"]
    out["speedup"] = _ratio(reference_seconds, seconds)
    out["break_even"] = break_even(prepare_seconds, reference_seconds, seconds)
    return out


def break_even(prepare: float, retrain: float, request: float) -> float:
    """n* = prepare / (retrain − request): the requests after which preparing paid off (inf: never)."""
    saved = retrain - request
    if saved <= 0:
        return float("inf")
    return prepare / saved


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b and np.isfinite(b) and np.isfinite(a) else float("nan")
