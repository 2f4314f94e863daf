"""Full-ranking metrics against a brute-force reference written from the formulas, hand-computed numbers and ranx."""
from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recunlearn.data.interactions import Interactions
from recunlearn.eval.ranking import METRICS, evaluate, per_user_metrics, topk_items
from recunlearn.eval.scorer import EmbeddingScorer

DATA = Path(os.environ.get("RECUNLEARN_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))


class DenseScorer:
    """Scores from a fixed [n_users, n_items] matrix."""

    def __init__(self, scores):
        self.scores = torch.as_tensor(scores, dtype=torch.float32)
        self.n_users, self.n_items = self.scores.shape

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.scores[users]  # advanced indexing: a fresh tensor

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.scores[users, items]


def pairs(pairs_list, n_users: int, n_items: int) -> Interactions:
    users, items = zip(*pairs_list) if pairs_list else ((), ())
    return Interactions.from_arrays(users, items, n_users, n_items, on_duplicate="drop")


# ---------------------------------------------------------------------------- reference, straight from the docs
def reference_user(scores: list[float], truth: set[int], masked: set[int], k: int) -> dict[str, float]:
    """One user's metrics: rank the unmasked items by score (ties: lower item index first), R_u = top-k."""
    ranking = sorted((i for i in range(len(scores)) if i not in masked), key=lambda i: (-scores[i], i))
    hit_ranks = [r for r, item in enumerate(ranking[:k], start=1) if item in truth]
    dcg = sum(1 / math.log2(r + 1) for r in hit_ranks)
    idcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, len(truth)) + 1))
    return {"Recall": len(hit_ranks) / len(truth), "NDCG": dcg / idcg,
            "Precision": len(hit_ranks) / k, "HR": float(len(hit_ranks) > 0)}


def reference_frame(scores: np.ndarray, truth: Interactions, mask: Interactions | None, ks) -> pd.DataFrame:
    truth_sets = _sets(truth)
    mask_sets = _sets(mask) if mask is not None else {}
    columns = [f"{m}@{k}" for m in METRICS for k in ks]
    rows = []
    for user in sorted(truth_sets):
        per_k = {k: reference_user(scores[user].tolist(), truth_sets[user], mask_sets.get(user, set()), k) for k in ks}
        rows.append([per_k[k][m] for m in METRICS for k in ks])
    return pd.DataFrame(rows, index=sorted(truth_sets), columns=columns, dtype=float)


def _sets(data: Interactions) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for user, item in zip(data.users.tolist(), data.items.tolist()):
        out.setdefault(user, set()).add(item)
    return out


def assert_frames_close(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got.index.tolist() == want.index.tolist()
    assert list(got.columns) == list(want.columns)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- random cases
@st.composite
def ranking_cases(draw):
    n_users = draw(st.integers(1, 10))
    n_items = draw(st.integers(1, 14))
    # Small integers make ties common, which exercises the tie rule at and around the K-th place.
    scores = np.array(draw(st.lists(st.integers(-3, 3), min_size=n_users * n_items, max_size=n_users * n_items)),
                      dtype=np.float32).reshape(n_users, n_items)
    pair = st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1))
    truth = pairs(draw(st.lists(pair, max_size=3 * n_users)), n_users, n_items)
    # Mask and truth may overlap: a masked truth item still counts in |T_u| but can never be hit.
    mask = pairs(draw(st.lists(pair, max_size=3 * n_users)), n_users, n_items) if draw(st.booleans()) else None
    # K may exceed n_items: R_u is then every unmasked item, and Precision still divides by K.
    ks = draw(st.lists(st.integers(1, n_items + 2), min_size=1, max_size=3, unique=True))
    return scores, truth, mask, ks, draw(st.integers(1, 4))


@settings(max_examples=300, deadline=None)
@given(ranking_cases())
def test_matches_reference_on_random_cases(case):
    scores, truth, mask, ks, batch_size = case
    got = per_user_metrics(DenseScorer(scores), truth, mask, ks, batch_size=batch_size)
    assert_frames_close(got, reference_frame(scores, truth, mask, ks))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_reference_on_larger_random_cases(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 60, 80
    scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    if seed % 2:
        scores = np.round(scores)  # heavy ties
    train = pairs(list(zip(rng.integers(0, n_users, 900), rng.integers(0, n_items, 900))), n_users, n_items)
    test = pairs(list(zip(rng.integers(0, n_users, 200), rng.integers(0, n_items, 200))), n_users, n_items)
    test = test.subtract(train)
    ks = (1, 5, 10, 20)
    got = per_user_metrics(DenseScorer(scores), test, train, ks, batch_size=16)
    want = reference_frame(scores, test, train, ks)
    assert_frames_close(got, want)
    result = evaluate(DenseScorer(scores), test, train, ks, batch_size=7)
    assert result["users"] == len(want)
    for column in want.columns:
        assert result[column] == pytest.approx(want[column].mean(), rel=1e-12)


# ---------------------------------------------------------------------------- a case computed by hand
HAND_SCORES = [[0.9, 0.8, 0.7, 0.6, 0.5],
               [0.1, 0.2, 0.3, 0.4, 0.5],
               [0.5, 0.5, 0.5, 0.5, 0.5]]
HAND_TRUTH = pairs([(0, 1), (0, 3), (1, 0)], 3, 5)     # user 2 has no truth item
HAND_MASK = pairs([(0, 0), (2, 1)], 3, 5)


def test_hand_computed_case():
    # User 0, item 0 masked: ranking 1, 2, 3, 4; truth {1, 3} at ranks 1 and 3.
    # User 1: ranking 4, 3, 2, 1, 0; truth {0} at rank 5, outside every K below.
    frame = per_user_metrics(DenseScorer(HAND_SCORES), HAND_TRUTH, HAND_MASK, ks=[2, 3])
    assert frame.index.tolist() == [0, 1]
    user0 = frame.loc[0]
    assert user0["Recall@2"] == pytest.approx(1 / 2)
    assert user0["Precision@2"] == pytest.approx(1 / 2)
    assert user0["HR@2"] == 1.0
    assert user0["NDCG@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))     # 0.6131
    assert user0["Recall@3"] == pytest.approx(1.0)
    assert user0["Precision@3"] == pytest.approx(2 / 3)
    assert user0["NDCG@3"] == pytest.approx((1 + 1 / 2) / (1 + 1 / math.log2(3)))  # 0.9197
    assert frame.loc[1].tolist() == [0.0] * 8

    result = evaluate(DenseScorer(HAND_SCORES), HAND_TRUTH, HAND_MASK, ks=[2, 3])
    assert result["users"] == 2
    assert result["Recall@2"] == pytest.approx(1 / 4)
    assert result["NDCG@3"] == pytest.approx(0.5 * 1.5 / (1 + 1 / math.log2(3)))
    assert result["HR@3"] == pytest.approx(0.5)
    assert result["Precision@3"] == pytest.approx(1 / 3)


def test_hand_computed_case_without_mask():
    # Unmasked, user 0's ranking is 0, 1, 2, ...: item 1 now sits at rank 2.
    result = evaluate(DenseScorer(HAND_SCORES), HAND_TRUTH, None, ks=2)
    assert result["NDCG@2"] == pytest.approx(0.5 * (1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert result["Recall@2"] == pytest.approx(1 / 4)


# ---------------------------------------------------------------------------- masking, ties, skipping
def test_masked_items_never_ranked_and_unmasked_can_be():
    scorer = DenseScorer(HAND_SCORES)
    masked_top = topk_items(scorer, [0, 1, 2], 2, HAND_MASK)
    assert masked_top.tolist() == [[1, 2], [4, 3], [0, 2]]
    assert 0 not in masked_top[0].tolist()
    assert topk_items(scorer, [0, 2], 2).tolist() == [[0, 1], [0, 1]]


def test_masked_items_absent_from_top_k_on_random_data():
    rng = np.random.default_rng(5)
    scorer = DenseScorer(rng.standard_normal((40, 50)))
    mask = pairs(list(zip(rng.integers(0, 40, 600), rng.integers(0, 50, 600))), 40, 50)
    top = topk_items(scorer, np.arange(40), 20, mask, batch_size=9)
    assert not mask.contains(np.repeat(np.arange(40), 20), top.numpy().ravel()).any()
    unmasked = topk_items(scorer, np.arange(40), 20)
    assert mask.contains(np.repeat(np.arange(40), 20), unmasked.numpy().ravel()).any()


def test_ties_broken_by_lower_item_index():
    scorer = DenseScorer([[1.0, 2.0, 2.0, 2.0, 0.0, 2.0],
                          [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    assert topk_items(scorer, [0, 1], 2).tolist() == [[1, 2], [0, 1]]
    assert topk_items(scorer, [0, 1], 6).tolist() == [[1, 2, 3, 5, 0, 4], [0, 1, 2, 3, 4, 5]]


def test_keeps_user_order_and_duplicates():
    scorer = DenseScorer(HAND_SCORES)
    assert topk_items(scorer, [1, 0, 1], 1, batch_size=2).tolist() == [[4], [0], [4]]
    assert topk_items(scorer, [], 3).shape == (0, 3)


def test_too_few_unmasked_items_fill_with_masked_ones_that_never_hit():
    scores = [[0.0, 1.0, 2.0, 3.0]]
    mask = pairs([(0, 0), (0, 1), (0, 3)], 1, 4)
    truth = pairs([(0, 0), (0, 2)], 1, 4)
    assert topk_items(DenseScorer(scores), [0], 3, mask).tolist() == [[2, 0, 1]]
    result = evaluate(DenseScorer(scores), truth, mask, ks=3)
    assert result["Recall@3"] == pytest.approx(1 / 2)   # item 0 fills a place but is masked: no hit
    assert result["Precision@3"] == pytest.approx(1 / 3)


def test_users_without_truth_are_skipped():
    truth = pairs([(1, 0), (3, 2)], 5, 4)
    frame = per_user_metrics(DenseScorer(np.zeros((5, 4))), truth, None, ks=2)
    assert frame.index.tolist() == [1, 3]
    assert frame.index.name == "user"
    assert evaluate(DenseScorer(np.zeros((5, 4))), truth, None, ks=2)["users"] == 2


def test_no_user_to_evaluate_gives_nan():
    result = evaluate(DenseScorer(np.zeros((3, 4))), Interactions.empty(3, 4), None, ks=2)
    assert result["users"] == 0
    assert math.isnan(result["Recall@2"])


def test_ks_and_metrics_select_columns():
    frame = per_user_metrics(DenseScorer(HAND_SCORES), HAND_TRUTH, HAND_MASK, ks=[3, 1, 3], metrics=["ndcg", "HR"])
    assert list(frame.columns) == ["NDCG@3", "NDCG@1", "HR@3", "HR@1"]


def test_default_columns():
    scorer = DenseScorer(np.random.default_rng(0).standard_normal((4, 30)))
    result = evaluate(scorer, pairs([(0, 1), (2, 5)], 4, 30), None)
    assert list(result) == [f"{m}@{k}" for m in METRICS for k in (10, 20)] + ["users"]


def test_subset_average_equals_evaluate_on_subset():
    rng = np.random.default_rng(3)
    scorer = DenseScorer(rng.standard_normal((30, 40)))
    truth = pairs(list(zip(rng.integers(0, 30, 90), rng.integers(0, 40, 90))), 30, 40)
    frame = per_user_metrics(scorer, truth, None, ks=5)
    subset = [2, 7, 11, 29, 13]
    result = evaluate(scorer, truth, None, ks=5, users=subset)
    expected = frame.loc[frame.index.intersection(subset)]
    assert result["users"] == len(expected)
    assert result["NDCG@5"] == pytest.approx(expected["NDCG@5"].mean())


@pytest.mark.parametrize("kwargs, message", [
    ({"ks": [0]}, "at least 1"),
    ({"metrics": ["MRR"]}, "unknown metrics"),
    ({"batch_size": 0}, "batch_size"),
])
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluate(DenseScorer(HAND_SCORES), HAND_TRUTH, HAND_MASK, **kwargs)


def test_k_above_n_items_ranks_every_item():
    result = evaluate(DenseScorer(HAND_SCORES), HAND_TRUTH, HAND_MASK, ks=[10, 20])
    assert result["Recall@20"] == pytest.approx(1.0)
    assert result["Precision@10"] == pytest.approx((2 / 10 + 1 / 10) / 2)
    with pytest.raises(ValueError, match="between 1 and n_items"):
        topk_items(DenseScorer(HAND_SCORES), [0], 6)


def test_mismatched_id_space():
    with pytest.raises(ValueError, match="truth spans"):
        evaluate(DenseScorer(HAND_SCORES), pairs([(0, 1)], 3, 6), None)


def test_progress_bar(capsys):
    evaluate(DenseScorer(HAND_SCORES), HAND_TRUTH, HAND_MASK, ks=2, progress=True)
    assert "evaluate" in capsys.readouterr().err


# ---------------------------------------------------------------------------- an independent library
@pytest.mark.filterwarnings("ignore:unsafe cast")  # inside ranx (numba), harmless
def test_agrees_with_ranx():
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(11)
    n_users, n_items, max_k = 50, 120, 20
    scores = rng.standard_normal((n_users, n_items)).astype(np.float32)   # continuous: no ties
    train = pairs(list(zip(rng.integers(0, n_users, 1500), rng.integers(0, n_items, 1500))), n_users, n_items)
    test = pairs(list(zip(rng.integers(0, n_users, 300), rng.integers(0, n_items, 300))), n_users, n_items)
    test = test.subtract(train)
    users = np.unique(test.users)
    top = topk_items(DenseScorer(scores), users, max_k, train)
    truth = _sets(test)
    qrels = ranx.Qrels({str(u): {str(i): 1 for i in truth[u]} for u in users.tolist()})
    # ranx ranks by score: feed it the masked ranking with decreasing scores.
    run = ranx.Run({str(u): {str(i): float(max_k - r) for r, i in enumerate(row)}
                    for u, row in zip(users.tolist(), top.tolist())})
    ks = (5, 10, 20)
    names = {"Recall": "recall", "NDCG": "ndcg", "Precision": "precision", "HR": "hit_rate"}
    want = ranx.evaluate(qrels, run, [f"{names[m]}@{k}" for m in METRICS for k in ks])
    got = evaluate(DenseScorer(scores), test, train, ks)
    assert got["users"] == len(users)
    for m in METRICS:
        for k in ks:
            assert got[f"{m}@{k}"] == pytest.approx(want[f"{names[m]}@{k}"], rel=1e-9), f"{m}@{k}"


# ---------------------------------------------------------------------------- real data
def _ml100k() -> tuple[Interactions, Interactions]:
    path = DATA / "ml-100k" / "u.data.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found (set RECUNLEARN_DATA)")
    with gzip.open(path, "rt") as f:
        frame = pd.read_csv(f, sep="\t", header=None, names=["user", "item", "rating", "time"])
    users, items = frame["user"].to_numpy() - 1, frame["item"].to_numpy() - 1
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    is_test = np.random.default_rng(0).random(len(frame)) < 0.2
    train = Interactions.from_arrays(users[~is_test], items[~is_test], n_users, n_items)
    test = Interactions.from_arrays(users[is_test], items[is_test], n_users, n_items)
    return train, test


def test_ml100k_independent_of_batch_size_and_matches_reference():
    train, test = _ml100k()
    generator = torch.Generator().manual_seed(0)
    # Small integer embeddings: every dot product is exact in float32 whatever the matmul blocking,
    # and the many equal scores exercise the tie rule on real data.
    user_emb = torch.randint(-2, 3, (train.n_users, 8), generator=generator).float()
    item_emb = torch.randint(-2, 3, (train.n_items, 8), generator=generator).float()
    scorer = EmbeddingScorer(user_emb, item_emb)
    frames = [per_user_metrics(scorer, test, train, batch_size=b) for b in (1, 37, 512, 10_000)]
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0], check_exact=True)
    assert len(frames[0]) == len(np.unique(test.users))

    sample = frames[0].index[::10]
    scores = (user_emb @ item_emb.T).numpy()
    want = reference_frame(scores, test.select(np.isin(test.users, sample)), train, (10, 20))
    assert_frames_close(frames[0].loc[sample], want)
