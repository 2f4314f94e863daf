"""Forgetting audit: did an unlearned model forget a request, measured against a model retrained without it.

Definitions follow the evaluation protocol (docs), sections "Forgetting" and "Collateral damage and
fairness". A request is a set of forgotten training edges (`forget`); `residual_train` is the training
set without them. Every ranking masks the residual training items only: forgotten items stay rankable.

Conventions:
- Percentile rank of an item in its user's ranking: the fraction of the user's other unmasked items
  that score strictly lower, ties counting one half. 1.0 = top, 0.0 = bottom, 0.5 = middle (also the
  value when the user has no other unmasked item).
- Membership inference: members are the forgotten edges; non-members as many held-out test edges,
  matched per user (each user gives up to as many test edges as it has forgotten edges; random
  other test edges make up the shortfall).
  The attack says "member" for a higher value, so AUC 0.5 = no information, and the target is the
  retrained model's AUC, not 0.5 (a retrained model ranks adversarially injected edges low: AUC < 0.5).
- Non-edges: for each forgotten edge, a random item of the same user that is in none of
  residual train / forget / valid / test, so that non-edge and forgotten scores share users.
- `max_users`: when the request touches more users, the audit keeps the forgotten edges of a seeded
  sample of that many users; every metric is computed on that same sample.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.special
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from recunlearn.data.interactions import Interactions
from recunlearn.eval.ranking import DEFAULT_BATCH_SIZE, evaluate, per_user_metrics, topk_items
from recunlearn.eval.scorer import Scorer

DEFAULT_KS = (20,)
# Thousands of edges already: a tight estimate; on gowalla (40,981 items) it keeps an audit to seconds.
DEFAULT_MAX_USERS = 2000
RETRAIN_K = 20
PAIR_BATCH_SIZE = 1 << 16
PAIR_CHUNK_ELEMENTS = 1 << 24   # 64 MB of float32 rows gathered at once when ranking pairs
ATTACK_FOLDS = 5
ACTIVE_FRACTION = 0.05


@dataclass(frozen=True)
class AuditSample:
    """The edges one audit measures, drawn once so that every scorer is measured on the same pairs."""

    users: np.ndarray            # affected users audited (sorted)
    forget: Interactions         # forgotten edges of those users: the members
    non_members: Interactions    # as many held-out test edges, matched per user
    residual: Interactions       # equal-size sample of residual training edges
    non_edges: Interactions      # same-user random pairs in no split


def audit(unlearned: Scorer, forget: Interactions, residual_train: Interactions, test: Interactions, *,
          original: Scorer | None = None, retrain: Scorer | None = None, valid: Interactions | None = None,
          ks: Sequence[int] = DEFAULT_KS, seed: int = 0, max_users: int | None = DEFAULT_MAX_USERS,
          batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, float]:
    """Forgetting metrics of `unlearned` for the request `forget`, as one flat dict.

    Always: forget/residual/nonedge_score_mean/std, forget_rank_pct, forget_Recall@K, mia_auc,
    mia_learned_auc, MI-NG, audit_users, audit_edges. With `original` (the model before unlearning):
    diff_auc, MI-BF. With `retrain` (the model retrained on `residual_train`): jaccard@20_vs_retrain,
    sym_kl_vs_retrain (means over the audited users), mia_auc_gap and forget_score_gap (method minus
    retrain), over_forgetting (retrain's forget_rank_pct minus the method's: positive when the method
    pushes forgotten items further down than retraining does, which itself tells of a deletion).
    """
    _check_inputs(unlearned, forget, residual_train, test, valid, original, retrain)
    sample = draw_audit_sample(forget, residual_train, test, valid, seed=seed, max_users=max_users)
    method = _measure(unlearned, sample, residual_train, batch_size)
    result = {"audit_users": float(len(sample.users)), "audit_edges": float(len(sample.forget))}
    for name, scores in (("forget", method.forget), ("residual", pair_scores(unlearned, sample.residual)),
                         ("nonedge", method.non_edges)):
        result.update(_mean_std(f"{name}_score", scores))
    result["forget_rank_pct"] = float(method.forget_ranks.mean())
    recall = evaluate(unlearned, sample.forget, residual_train, ks, ("Recall",), batch_size=batch_size)
    result.update({f"forget_{key}": value for key, value in recall.items() if key != "users"})
    result["mia_auc"] = attack_auc(method.forget, method.non_members)
    result["mia_learned_auc"] = learned_attack_auc(*_attack_features(method, sample, residual_train), seed=seed)
    result["MI-NG"] = mi_ng(method.non_edges, method.forget)
    if original is not None:
        result.update(_against_original(original, method, sample))
    if retrain is not None:
        result.update(_against_retrain(unlearned, retrain, method, sample, residual_train, batch_size,
                                       method_auc=result["mia_auc"]))
    return result


def draw_audit_sample(forget: Interactions, residual_train: Interactions, test: Interactions,
                      valid: Interactions | None = None, *, seed: int = 0,
                      max_users: int | None = DEFAULT_MAX_USERS) -> AuditSample:
    """The seeded pairs an audit measures (see the module notes for what each set holds)."""
    rng = np.random.default_rng(seed)
    users = np.unique(forget.users)
    if max_users is not None and len(users) > max_users:
        users = np.sort(rng.choice(users, max_users, replace=False))
        forget = forget.select(np.isin(forget.users, users))
    residual = residual_train.select(np.sort(_sample_indices(np.arange(len(residual_train)), len(forget), rng)))
    known = [s for s in (residual_train, forget, test, valid) if s is not None]
    non_edges = same_user_non_edges(forget.users, known, forget.n_items, rng)
    return AuditSample(users, forget, _non_members(test, forget, rng), residual, non_edges)


def attack_auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """AUC of the threshold attack "higher value = member"; NaN when either side is empty."""
    if len(members) == 0 or len(non_members) == 0:
        return float("nan")
    labels = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    return float(roc_auc_score(labels, np.r_[members, non_members]))


def learned_attack_auc(members: np.ndarray, non_members: np.ndarray, *, seed: int = 0,
                       folds: int = ATTACK_FOLDS) -> float:
    """Cross-validated AUC of a logistic-regression attack on feature rows [n, d] of members and non-members.

    Stratified, shuffled folds seeded by `seed`; fewer folds when a class is small; NaN below 2 per class.
    """
    n_splits = min(folds, len(members), len(non_members))
    if n_splits < 2:
        return float("nan")
    features = np.vstack([members, non_members])
    labels = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    attack = make_pipeline(StandardScaler(), LogisticRegression())
    cv = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    return float(cross_val_score(attack, features, labels, cv=cv, scoring="roc_auc").mean())


def mi_bf(before: np.ndarray, after: np.ndarray) -> float:
    """MI-BF = mean σ(score before unlearning) / mean σ(score after), on the forgotten edges; > 1: forgetting."""
    return float(scipy.special.expit(before).mean() / scipy.special.expit(after).mean())


def mi_ng(non_edges: np.ndarray, forgotten: np.ndarray) -> float:
    """MI-NG = mean σ(score on non-edges) / mean σ(score on forgotten edges), both after; > 1: forgetting."""
    return float(scipy.special.expit(non_edges).mean() / scipy.special.expit(forgotten).mean())


@torch.no_grad()
def pair_scores(scorer: Scorer, pairs: Interactions, batch_size: int = PAIR_BATCH_SIZE) -> np.ndarray:
    """Scores (float64) of the given pairs, in their order."""
    parts = [scorer.score_pairs(torch.tensor(pairs.users[i:i + batch_size]),
                                torch.tensor(pairs.items[i:i + batch_size])).double().cpu().numpy()
             for i in range(0, len(pairs), batch_size)]
    return np.concatenate(parts) if parts else np.empty(0)


@torch.no_grad()
def percentile_ranks(scorer: Scorer, pairs: Interactions, mask: Interactions | None,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Percentile rank of each pair's item in its user's full ranking, the `mask` items removed.

    1.0 = top, 0.0 = bottom: the fraction of the user's other unmasked items scoring strictly lower,
    ties counting one half (0.5 when there is no other item). A pair must not be in `mask`.
    """
    if mask is not None and mask.contains(pairs.users, pairs.items).any():
        raise ValueError("a pair to rank is in the mask: its item would not be in the ranking")
    mask_csr = mask.to_csr() if mask is not None else None
    n_masked = np.diff(mask_csr.indptr) if mask_csr is not None else np.zeros(pairs.n_users, dtype=np.int64)
    users, first = np.unique(pairs.users, return_index=True)  # pairs are sorted by user
    bounds = np.r_[first, len(pairs)]
    ranks = np.empty(len(pairs))
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        lo, hi = bounds[start], bounds[start + len(batch)]
        ranks[lo:hi] = _batch_percentiles(scorer, batch, pairs.users[lo:hi], pairs.items[lo:hi],
                                          mask_csr, n_masked[pairs.users[lo:hi]])
    return ranks


def _batch_percentiles(scorer: Scorer, batch: np.ndarray, users: np.ndarray, items: np.ndarray,
                       mask_csr, n_masked: np.ndarray) -> np.ndarray:
    scores = scorer.score_users(torch.as_tensor(batch)).float().cpu()
    row = torch.as_tensor(np.searchsorted(batch, users))
    targets = scores[row, torch.tensor(items)]
    if mask_csr is not None:
        rows = mask_csr[batch]
        masked_rows = np.repeat(np.arange(len(batch)), np.diff(rows.indptr))
        scores[torch.as_tensor(masked_rows), torch.as_tensor(rows.indices, dtype=torch.long)] = -torch.inf
    # Count, per pair, the items above and level with it in its user's row; masked items are -inf and
    # never count. Pairs go in chunks so that the gathered rows stay near PAIR_CHUNK_ELEMENTS floats.
    chunk = max(1, PAIR_CHUNK_ELEMENTS // scorer.n_items)
    above, level = torch.empty(len(users)), torch.empty(len(users))
    for start in range(0, len(users), chunk):
        part = slice(start, start + chunk)
        user_rows, target = scores[row[part]], targets[part, None]
        above[part] = (user_rows > target).sum(dim=1, dtype=torch.float32)
        level[part] = (user_rows == target).sum(dim=1, dtype=torch.float32)
    others = scorer.n_items - n_masked - 1
    tied = level.double().numpy() - 1                      # the pair's own item is level with itself
    below = others - above.double().numpy() - tied
    return np.where(others > 0, (below + 0.5 * tied) / np.maximum(others, 1), 0.5)


def jaccard_at_k(a: Scorer, b: Scorer, users: np.ndarray, mask: Interactions | None, k: int = RETRAIN_K,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Per-user Jaccard overlap |A ∩ B| / |A ∪ B| of the two scorers' top-k lists (`mask` items excluded)."""
    top_a = topk_items(a, users, k, mask, batch_size=batch_size)
    top_b = topk_items(b, users, k, mask, batch_size=batch_size)
    shared = (top_a[:, :, None] == top_b[:, None, :]).any(dim=2).sum(dim=1).double()
    return (shared / (2 * k - shared)).numpy()


@torch.no_grad()
def symmetric_kl(a: Scorer, b: Scorer, users: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Per-user KL(p‖q) + KL(q‖p) between the softmax distributions of the two scorers over all items."""
    parts = []
    for start in range(0, len(users), batch_size):
        batch = torch.tensor(users[start:start + batch_size])
        log_p = torch.log_softmax(a.score_users(batch).float(), dim=1)
        log_q = torch.log_softmax(b.score_users(batch).float(), dim=1)
        # Σ (p − q)(log p − log q): both divergences in one pass, every term non-negative.
        parts.append(((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=1).double().cpu().numpy())
    return np.concatenate(parts) if parts else np.empty(0)


def request_neighbourhood(forget: Interactions, residual_train: Interactions) -> np.ndarray:
    """The request's users plus the users with a residual training edge on one of its items (sorted)."""
    sharing = residual_train.users[np.isin(residual_train.items, np.unique(forget.items))]
    return np.union1d(forget.users, sharing)


def neighbourhood_utility(scorer: Scorer, forget: Interactions, residual_train: Interactions, test: Interactions,
                          valid: Interactions | None = None, ks: Sequence[int] = DEFAULT_KS, *,
                          batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, float]:
    """Test Recall/NDCG@K over the request's neighbourhood, masking residual train ∪ valid.

    Keys "neighbourhood_Recall@20", "neighbourhood_NDCG@20", ..., and "neighbourhood_users" (evaluated users).
    """
    mask = residual_train.union(valid) if valid is not None else residual_train
    frame = per_user_metrics(scorer, test, mask, ks, ("Recall", "NDCG"),
                             users=request_neighbourhood(forget, residual_train), batch_size=batch_size)
    result = {f"neighbourhood_{name}": float(frame[name].mean()) for name in frame.columns}
    result["neighbourhood_users"] = float(len(frame))
    return result


def active_gap(scorer: Scorer, residual_train: Interactions, test: Interactions,
               valid: Interactions | None = None, *, k: int = 20, fraction: float = ACTIVE_FRACTION,
               batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, float]:
    """NDCG@k of the most active users (top `fraction` by residual training degree) minus the rest's.

    Among the users with a test item; equal degrees are ordered by user index. Keys "active_NDCG@k",
    "inactive_NDCG@k", "active_gap".
    """
    mask = residual_train.union(valid) if valid is not None else residual_train
    ndcg = per_user_metrics(scorer, test, mask, k, ("NDCG",), batch_size=batch_size)[f"NDCG@{k}"]
    users = ndcg.index.to_numpy()
    by_activity = np.lexsort((users, -residual_train.user_degree()[users]))
    is_active = np.zeros(len(users), dtype=bool)
    is_active[by_activity[:int(np.ceil(fraction * len(users)))]] = True
    active, inactive = ndcg.to_numpy()[is_active], ndcg.to_numpy()[~is_active]
    active_mean = float(active.mean()) if len(active) else float("nan")
    inactive_mean = float(inactive.mean()) if len(inactive) else float("nan")
    return {f"active_NDCG@{k}": active_mean, f"inactive_NDCG@{k}": inactive_mean,
            "active_gap": active_mean - inactive_mean}


@dataclass(frozen=True)
class _Measured:
    """One scorer's scores and ranks on an audit sample."""

    forget: np.ndarray
    non_members: np.ndarray
    non_edges: np.ndarray
    forget_ranks: np.ndarray
    non_member_ranks: np.ndarray


def _measure(scorer: Scorer, sample: AuditSample, residual_train: Interactions, batch_size: int) -> _Measured:
    # One ranking pass for members and non-members together (disjoint sets: forget is train, the rest test).
    both = sample.forget.union(sample.non_members)
    ranks = percentile_ranks(scorer, both, residual_train, batch_size)
    return _Measured(pair_scores(scorer, sample.forget), pair_scores(scorer, sample.non_members),
                     pair_scores(scorer, sample.non_edges),
                     ranks[np.searchsorted(both.keys, sample.forget.keys)],
                     ranks[np.searchsorted(both.keys, sample.non_members.keys)])


def _attack_features(measured: _Measured, sample: AuditSample,
                     residual_train: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """[score, percentile rank, log user degree, log item degree] rows for members and non-members.

    Degrees come from the residual training set: what a model owner publishes after the deletion (degrees
    that still count the forgotten edges would give members away whatever the model).
    """
    log_user = np.log1p(residual_train.user_degree())
    log_item = np.log1p(residual_train.item_degree())
    return tuple(np.column_stack([scores, ranks, log_user[pairs.users], log_item[pairs.items]])
                 for scores, ranks, pairs in ((measured.forget, measured.forget_ranks, sample.forget),
                                              (measured.non_members, measured.non_member_ranks, sample.non_members)))


def _against_original(original: Scorer, method: _Measured, sample: AuditSample) -> dict[str, float]:
    before_forget = pair_scores(original, sample.forget)
    before_non_members = pair_scores(original, sample.non_members)
    return {"diff_auc": attack_auc(before_forget - method.forget, before_non_members - method.non_members),
            "MI-BF": mi_bf(before_forget, method.forget)}


def _against_retrain(unlearned: Scorer, retrain: Scorer, method: _Measured, sample: AuditSample,
                     residual_train: Interactions, batch_size: int, method_auc: float) -> dict[str, float]:
    reference = _measure(retrain, sample, residual_train, batch_size)
    jaccard = jaccard_at_k(unlearned, retrain, sample.users, residual_train, RETRAIN_K, batch_size)
    return {f"jaccard@{RETRAIN_K}_vs_retrain": float(jaccard.mean()),
            "sym_kl_vs_retrain": float(symmetric_kl(unlearned, retrain, sample.users, batch_size).mean()),
            "mia_auc_gap": method_auc - attack_auc(reference.forget, reference.non_members),
            "forget_score_gap": float(method.forget.mean() - reference.forget.mean()),
            # Positive: forgotten items sit lower than retraining puts them, itself a sign of deletion.
            "over_forgetting": float(reference.forget_ranks.mean() - method.forget_ranks.mean())}


def _non_members(test: Interactions, forget: Interactions, rng: np.random.Generator) -> Interactions:
    """As many test edges as forgotten edges (fewer if the test set is smaller), matched per user.

    Each user gives up to as many random test edges as it has forgotten edges, so that members and
    non-members share their users (user degree tells them apart no more); random other test edges
    make up the shortfall.
    """
    wanted = np.bincount(forget.users, minlength=test.n_users)
    order = np.lexsort((rng.random(len(test)), test.users))   # test pairs are grouped by user: shuffle within
    place = np.arange(len(test)) - np.searchsorted(test.users, test.users)
    matched = order[place < wanted[test.users]]
    rest = np.setdiff1d(np.arange(len(test)), matched, assume_unique=True)
    top_up = _sample_indices(rest, len(forget) - len(matched), rng)
    return test.select(np.sort(np.r_[matched, top_up]))


def _sample_indices(indices: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(indices, min(n, len(indices)), replace=False) if n > 0 else indices[:0]


def same_user_non_edges(users: np.ndarray, known: list[Interactions], n_items: int,
                        rng: np.random.Generator, tries: int = 20) -> Interactions:
    """One random item per given user, redrawn while the pair is known; pairs still known (a user who
    has nearly every item) and repeated pairs are dropped."""
    items = rng.integers(n_items, size=len(users))
    for _ in range(tries):
        taken = _in_any(known, users, items)
        if not taken.any():
            break
        items[taken] = rng.integers(n_items, size=int(taken.sum()))
    free = ~_in_any(known, users, items)
    return Interactions.from_arrays(users[free], items[free], known[0].n_users, n_items, on_duplicate="drop")


def _in_any(sets: list[Interactions], users: np.ndarray, items: np.ndarray) -> np.ndarray:
    found = np.zeros(len(users), dtype=bool)
    for pairs in sets:
        found |= pairs.contains(users, items)
    return found


def _mean_std(prefix: str, scores: np.ndarray) -> dict[str, float]:
    if len(scores) == 0:
        return {f"{prefix}_mean": float("nan"), f"{prefix}_std": float("nan")}
    return {f"{prefix}_mean": float(scores.mean()), f"{prefix}_std": float(scores.std())}


def _check_inputs(unlearned: Scorer, forget: Interactions, residual_train: Interactions, test: Interactions,
                  valid: Interactions | None, *others: Scorer | None) -> None:
    if len(forget) == 0:
        raise ValueError("the request is empty: nothing to audit")
    space = (unlearned.n_users, unlearned.n_items)
    for name, data in (("forget", forget), ("residual_train", residual_train), ("test", test), ("valid", valid)):
        if data is not None and (data.n_users, data.n_items) != space:
            raise ValueError(f"{name} spans {data.n_users} x {data.n_items} but the scorer {space[0]} x {space[1]}")
    for other in others:
        if other is not None and (other.n_users, other.n_items) != space:
            raise ValueError(f"scorers disagree on the id space: {other.n_users} x {other.n_items} vs "
                             f"{space[0]} x {space[1]}")
    if residual_train.contains(forget.users, forget.items).any():
        raise ValueError("forgotten edges are still in residual_train: pass the training set without them")
