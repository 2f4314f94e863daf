"""Full-ranking utility metrics: Recall, NDCG, Precision and HR at K, with the residual training items masked.

Formulas (docs: evaluation protocol, "Utility"), for a user u with truth items T_u and top-K list R_u:
Recall@K = |R_u ∩ T_u| / |T_u|; Precision@K = |R_u ∩ T_u| / K; HR@K = 1[|R_u ∩ T_u| > 0];
NDCG@K = Σ_{r ≤ K, item_r ∈ T_u} 1/log2(r+1) / Σ_{r ≤ min(K, |T_u|)} 1/log2(r+1).
Users without a truth item are skipped; averages are over the users evaluated. A K above the
number of items ranks every item (Precision still divides by K).

Ranking: every item is ranked (never sampled negatives). The scores of a user's mask items are set
to -inf first, and a masked item never counts as a hit. Ties are broken by the lower item index,
exactly and deterministically: `torch.topk` leaves the order of equal scores unspecified (it may
change with the torch version, the device or the batch shape), so equal scores are re-ordered here.

Work is batched over users; per batch, one `torch.topk` over all items and a boolean truth matrix
[batch, n_items] built from CSR rows (never a dense matrix for the whole dataset). The masking
writes into the tensor that `scorer.score_users` returns, so a scorer must return a new tensor each call.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from recunlearn.data.interactions import Interactions
from recunlearn.eval.scorer import Scorer

METRICS = ("Recall", "NDCG", "Precision", "HR")
DEFAULT_KS = (10, 20)
# 512 users x 40,981 items (gowalla) is 84 MB of float32 scores; larger batches are not faster on CPU.
DEFAULT_BATCH_SIZE = 512


@torch.no_grad()
def evaluate(scorer: Scorer, truth: Interactions, mask: Interactions | None, ks: int | Sequence[int] = DEFAULT_KS,
             metrics: Sequence[str] = METRICS, *, users: Sequence[int] | np.ndarray | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> dict[str, float]:
    """Mean metrics over the users with a truth item, e.g. {"Recall@20": ..., "NDCG@20": ..., "users": 29858}.

    `mask` holds each user's residual training items (None: mask nothing); `users` restricts the
    evaluation to a subset (users without a truth item are still skipped). With no user to evaluate,
    every metric is NaN and "users" is 0.
    """
    frame = per_user_metrics(scorer, truth, mask, ks, metrics, users=users, batch_size=batch_size, progress=progress)
    result = {name: float(frame[name].mean()) for name in frame.columns}
    result["users"] = len(frame)
    return result


@torch.no_grad()
def per_user_metrics(scorer: Scorer, truth: Interactions, mask: Interactions | None,
                     ks: int | Sequence[int] = DEFAULT_KS, metrics: Sequence[str] = METRICS, *,
                     users: Sequence[int] | np.ndarray | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                     progress: bool = False) -> pd.DataFrame:
    """One row per evaluated user (index "user", ascending), one column per metric ("Recall@10", ...).

    Averaging the rows of a subset gives that subset's utility (a request's neighbourhood, the most
    active users); `evaluate` is the mean over all rows.
    """
    ks, metrics = _check(scorer, truth, mask, ks, metrics, batch_size)
    truth_csr = truth.to_csr()
    truth_rows = _TruthRows(truth_csr)
    mask_csr = mask.to_csr() if mask is not None else None
    n_truth = np.diff(truth_csr.indptr)
    evaluated = np.flatnonzero(n_truth > 0)
    if users is not None:
        evaluated = np.intersect1d(evaluated, np.asarray(users, dtype=np.int64))
    columns = [f"{metric}@{k}" for metric in metrics for k in ks]
    table = np.empty((len(evaluated), len(columns)))
    shown = columns.index(f"{metrics[0]}@{max(ks)}")   # running mean on the progress bar
    with tqdm(total=len(evaluated), desc="evaluate", unit="user", disable=not progress) as bar:
        for start, batch in _batches(evaluated, batch_size):
            hits = _hits(scorer, batch, max(ks), truth_rows, mask_csr)
            values = _batch_metrics(hits, torch.as_tensor(n_truth[batch]), ks, metrics)
            table[start:start + len(batch)] = torch.stack(values, dim=1).numpy()
            bar.update(len(batch))
            bar.set_postfix({columns[shown]: f"{table[:start + len(batch), shown].mean():.4f}"})
    return pd.DataFrame(table, index=pd.Index(evaluated, name="user"), columns=columns)


@torch.no_grad()
def topk_items(scorer: Scorer, users: Sequence[int] | np.ndarray | torch.Tensor, k: int,
               mask: Interactions | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """Top-k item indices [len(users), k] (LongTensor, CPU), best first, in the order of `users`.

    The ranking is the one the metrics use: mask items scored -inf, ties by lower item index. A user
    with fewer than k unmasked items gets masked items in the last places, lowest index first.
    """
    if not 1 <= k <= scorer.n_items:
        raise ValueError(f"k must be between 1 and n_items ({scorer.n_items}), got {k}")
    if mask is not None:
        _check_space(mask, scorer, "mask")
    users = np.asarray(users, dtype=np.int64).ravel()
    mask_csr = mask.to_csr() if mask is not None else None
    parts = [_masked_top_k(scorer, batch, k, mask_csr)[1].cpu() for _, batch in _batches(users, batch_size)]
    return torch.cat(parts) if parts else torch.empty((0, k), dtype=torch.long)


def _check(scorer: Scorer, truth: Interactions, mask: Interactions | None, ks: int | Sequence[int],
           metrics: Sequence[str], batch_size: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Validated (ks, canonical metric names); metric names are matched case-insensitively."""
    _check_space(truth, scorer, "truth")
    if mask is not None:
        _check_space(mask, scorer, "mask")
    ks = tuple(dict.fromkeys([int(ks)] if isinstance(ks, (int, np.integer)) else [int(k) for k in ks]))
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not ks or min(ks) < 1:
        raise ValueError(f"every K must be at least 1, got {ks}")
    canonical = {name.lower(): name for name in METRICS}
    unknown = [m for m in metrics if m.lower() not in canonical]
    if unknown or not metrics:
        raise ValueError(f"unknown metrics {unknown}; choose among {list(METRICS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return ks, tuple(dict.fromkeys(canonical[m.lower()] for m in metrics))


def _check_space(data: Interactions, scorer: Scorer, name: str) -> None:
    if (data.n_users, data.n_items) != (scorer.n_users, scorer.n_items):
        raise ValueError(f"{name} spans {data.n_users} users x {data.n_items} items but the scorer "
                         f"{scorer.n_users} x {scorer.n_items}")


def _batches(users: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(users), batch_size):
        yield start, users[start:start + batch_size]


def _csr_rows(csr: sp.csr_matrix, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in batch, item) of every stored pair of the batch's users."""
    rows = csr[batch]
    return np.repeat(np.arange(len(batch)), np.diff(rows.indptr)), rows.indices


def _masked_top_k(scorer: Scorer, batch: np.ndarray, k: int,
                  mask_csr: sp.csr_matrix | None) -> tuple[torch.Tensor, torch.Tensor]:
    scores = scorer.score_users(torch.as_tensor(batch))
    if mask_csr is not None:
        rows, items = _csr_rows(mask_csr, batch)
        # In place: score_users() returns a fresh [B, n_items] tensor, and a copy would double the batch memory.
        scores[torch.as_tensor(rows, device=scores.device), torch.as_tensor(items, device=scores.device)] = -torch.inf
    return _top_k(scores, k)


def _top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, items) [B, k] per row: higher score first, equal scores by lower item index."""
    n_items = scores.shape[1]
    # One more place than asked tells whether the k-th score is tied with an item left out.
    top_values, top_items = torch.topk(scores, min(k + 1, n_items), dim=1)
    items = top_items[:, :k]
    if k < n_items:
        straddling = (top_values[:, k] == top_values[:, k - 1]).nonzero().squeeze(1)
        if straddling.numel():
            items[straddling] = _lowest_index_top_k(scores[straddling], top_values[straddling, k - 1:k], k)
    items = items.sort(dim=1).values
    values = scores.gather(1, items)
    order = values.argsort(dim=1, descending=True, stable=True)
    return values.gather(1, order), items.gather(1, order)


def _lowest_index_top_k(scores: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """Items [B, k] (ascending) scoring above `kth`, completed by the lowest-index items scoring exactly `kth`."""
    above = scores > kth
    tied = scores == kth
    places_left = k - above.sum(dim=1, keepdim=True, dtype=torch.int32)
    chosen = above | (tied & (tied.cumsum(dim=1, dtype=torch.int32) <= places_left))
    return chosen.nonzero()[:, 1].view(-1, k)


def _hits(scorer: Scorer, batch: np.ndarray, k: int, truth: _TruthRows,
          mask_csr: sp.csr_matrix | None) -> torch.Tensor:
    """Boolean [B, k]: is the item at each place of the masked ranking a truth item."""
    values, items = _masked_top_k(scorer, batch, min(k, truth.n_items), mask_csr)
    # A masked item fills a place only when too few items are left; it is not a recommendation.
    hits = (truth.lookup(batch, items) & (values > -torch.inf)).cpu()
    return torch.nn.functional.pad(hits, (0, k - hits.shape[1]))  # K > n_items: the places past the end are empty


class _TruthRows:
    """A batch's truth rows as a boolean [B, n_items] matrix, filled from CSR rows.

    One buffer serves every batch and is cleared pair by pair afterwards: zeroing B x n_items
    afresh for each batch costs about as much as the top-k itself.
    """

    def __init__(self, csr: sp.csr_matrix):
        self.csr = csr
        self.n_items = csr.shape[1]
        self.buffer: torch.Tensor | None = None

    def lookup(self, batch: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        """Boolean [B, k]: is items[b, j] a truth item of user batch[b]."""
        if self.buffer is None or self.buffer.shape[0] < len(batch) or self.buffer.device != items.device:
            self.buffer = torch.zeros((len(batch), self.n_items), dtype=torch.bool, device=items.device)
        rows, cols = (torch.as_tensor(a, device=items.device) for a in _csr_rows(self.csr, batch))
        matrix = self.buffer[:len(batch)]
        matrix[rows, cols] = True
        found = matrix.gather(1, items)
        matrix[rows, cols] = False
        return found


def _batch_metrics(hits: torch.Tensor, n_truth: torch.Tensor, ks: tuple[int, ...],
                   metrics: tuple[str, ...]) -> list[torch.Tensor]:
    """Per-user metric columns (float64, [B] each) in the order metric-major, then K."""
    hits = hits.double()
    discount = 1.0 / torch.log2(torch.arange(2, hits.shape[1] + 2, dtype=torch.float64))
    hits_within = hits.cumsum(dim=1)                 # [:, r-1]: hits among the first r places
    dcg_within = (hits * discount).cumsum(dim=1)
    ideal_dcg = discount.cumsum(dim=0)               # [m-1]: DCG of m hits in the first m places
    n_truth = n_truth.double()
    formulas = {
        "Recall": lambda k: hits_within[:, k - 1] / n_truth,
        "NDCG": lambda k: dcg_within[:, k - 1] / ideal_dcg[n_truth.clamp(max=k).long() - 1],
        "Precision": lambda k: hits_within[:, k - 1] / k,
        "HR": lambda k: (hits_within[:, k - 1] > 0).double(),
    }
    return [formulas[metric](k) for metric in metrics for k in ks]
