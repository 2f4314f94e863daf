"""Forgetting audit: hand-computed cases, and a memorising model told apart from a retrained one on ml-100k."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recunlearn.data.interactions import Interactions
from recunlearn.data.registry import load_dataset
from recunlearn.eval.forgetting import (active_gap, attack_auc, audit, draw_audit_sample, jaccard_at_k,
                                        learned_attack_auc, mi_bf, mi_ng, neighbourhood_utility, percentile_ranks,
                                        request_neighbourhood, symmetric_kl)
from recunlearn.eval.ranking import per_user_metrics
from recunlearn.eval.scorer import EmbeddingScorer


class DenseScorer:
    """Scores from a fixed [n_users, n_items] matrix."""

    def __init__(self, scores):
        self.scores = torch.as_tensor(np.asarray(scores), dtype=torch.float32)
        self.n_users, self.n_items = self.scores.shape

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.scores[users].clone()

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.scores[users, items]


def pairs(pairs_list, n_users: int, n_items: int) -> Interactions:
    users, items = zip(*pairs_list) if pairs_list else ((), ())
    return Interactions.from_arrays(users, items, n_users, n_items)


# --- membership-inference attacks ---------------------------------------------------------------------------

def test_attack_auc_is_one_when_members_score_above_every_non_member():
    assert attack_auc(np.array([2.0, 3.0, 4.0]), np.array([0.0, 1.0])) == 1.0
    assert attack_auc(np.array([0.0, 1.0]), np.array([2.0, 3.0, 4.0])) == 0.0


def test_attack_auc_is_one_half_for_identical_distributions():
    rng = np.random.default_rng(0)
    assert attack_auc(rng.normal(size=2000), rng.normal(size=2000)) == pytest.approx(0.5, abs=0.03)
    assert attack_auc(np.zeros(10), np.zeros(10)) == 0.5   # all tied: no information
    assert math.isnan(attack_auc(np.array([1.0]), np.array([])))


def test_learned_attack_finds_a_separating_feature_and_not_a_random_one():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(400, 2))
    members = np.column_stack([noise[:200, 0], noise[:200, 1] + 3.0])   # second feature separates
    non_members = noise[200:]
    assert learned_attack_auc(members, non_members, seed=0) > 0.95
    assert learned_attack_auc(rng.normal(size=(300, 3)), rng.normal(size=(300, 3))) == pytest.approx(0.5, abs=0.07)
    assert math.isnan(learned_attack_auc(np.ones((1, 2)), np.zeros((5, 2))))


def test_mi_bf_and_mi_ng_by_hand():
    # σ(0) = 1/2, σ(-ln 3) = 1/4, σ(ln 3) = 3/4
    assert mi_bf(np.array([0.0, 0.0]), np.full(2, -math.log(3))) == pytest.approx(2.0)
    assert mi_ng(np.full(3, math.log(3)), np.full(2, -math.log(3))) == pytest.approx(3.0)
    assert mi_bf(np.array([1.0, -2.0]), np.array([1.0, -2.0])) == pytest.approx(1.0)


# --- ranks and closeness to retrain -------------------------------------------------------------------------

def test_percentile_rank_convention_on_one_user():
    scorer = DenseScorer([[0.9, 0.1, 0.5, 0.7, 0.3]])
    mask = pairs([(0, 0)], 1, 5)        # item 0 is a residual training item: out of the ranking
    ranks = percentile_ranks(scorer, pairs([(0, 1), (0, 2), (0, 3)], 1, 5), mask)
    # Candidates 1..4 (scores .1 .5 .7 .3): item 3 beats the 3 others (top), item 1 none (bottom), item 2 two of 3.
    np.testing.assert_allclose(ranks, [0.0, 2 / 3, 1.0])


def test_percentile_rank_ties_count_one_half_and_masked_pairs_are_refused():
    scorer = DenseScorer([[0.5, 0.5, 0.5, 0.0], [1.0, 2.0, 3.0, 4.0]])
    ranks = percentile_ranks(scorer, pairs([(0, 0), (1, 0), (1, 3)], 2, 4), None)
    np.testing.assert_allclose(ranks, [(1 + 0.5 * 2) / 3, 0.0, 1.0])
    only_item = percentile_ranks(scorer, pairs([(0, 3)], 2, 4), pairs([(0, 0), (0, 1), (0, 2)], 2, 4))
    np.testing.assert_allclose(only_item, [0.5])
    with pytest.raises(ValueError, match="in the mask"):
        percentile_ranks(scorer, pairs([(0, 0)], 2, 4), pairs([(0, 0)], 2, 4))


def test_percentile_ranks_match_a_direct_count_across_batches():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, size=(30, 12)).astype(np.float32)   # many ties
    keys = rng.choice(30 * 12, 150, replace=False)
    mask, ranked = (Interactions.from_arrays(k // 12, k % 12, 30, 12) for k in (keys[:100], keys[100:]))
    got = percentile_ranks(DenseScorer(scores), ranked, mask, batch_size=7)
    masked = mask.to_csr().toarray() > 0
    for rank, u, i in zip(got, ranked.users, ranked.items):
        others = np.flatnonzero(~masked[u] & (np.arange(12) != i))
        lower, level = (scores[u, others] < scores[u, i]).sum(), (scores[u, others] == scores[u, i]).sum()
        want = (lower + 0.5 * level) / len(others)
        assert rank == pytest.approx(want)


def test_identical_scorers_have_jaccard_one_and_kl_zero():
    rng = np.random.default_rng(2)
    scorer = EmbeddingScorer(torch.randn(40, 8), torch.randn(50, 8))
    users = np.arange(40)
    mask = Interactions.from_arrays(rng.integers(40, size=200), rng.integers(50, size=200), 40, 50, on_duplicate="drop")
    np.testing.assert_array_equal(jaccard_at_k(scorer, scorer, users, mask), np.ones(40))
    np.testing.assert_array_equal(symmetric_kl(scorer, scorer, users, batch_size=16), np.zeros(40))


def test_jaccard_and_kl_by_hand():
    a = DenseScorer([[3.0, 2.0, 1.0, 0.0]])
    b = DenseScorer([[3.0, 0.0, 1.0, 2.0]])
    # top-2: {0, 1} vs {0, 3}: one shared of three.
    assert jaccard_at_k(a, b, np.array([0]), None, k=2)[0] == pytest.approx(1 / 3)
    # p = (1/2, 1/2), q = (3/4, 1/4): Σ (p − q)(log p − log q) = ¼ ln(3/2) + ¼ ln 2 = ¼ ln 3.
    p, q = DenseScorer([[0.0, 0.0]]), DenseScorer([[math.log(3), 0.0]])
    assert symmetric_kl(p, q, np.array([0]))[0] == pytest.approx(math.log(3) / 4, rel=1e-5)


# --- the audit ----------------------------------------------------------------------------------------------

def small_case(seed: int = 0, n_users: int = 60, n_items: int = 80):
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, 1500, replace=False)
    split = lambda part: Interactions.from_arrays(part // n_items, part % n_items, n_users, n_items)  # noqa: E731
    train, valid, test = split(keys[:1100]), split(keys[1100:1200]), split(keys[1200:])
    forget = train.select(rng.random(len(train)) < 0.1)
    scorer = EmbeddingScorer(torch.randn(n_users, 6, generator=torch.Generator().manual_seed(seed)),
                             torch.randn(n_items, 6, generator=torch.Generator().manual_seed(seed + 1)))
    return scorer, forget, train.subtract(forget), valid, test


def test_audit_against_itself_gives_neutral_closeness():
    scorer, forget, residual, valid, test = small_case()
    result = audit(scorer, forget, residual, test, original=scorer, retrain=scorer, valid=valid, ks=(10, 20))
    assert result["jaccard@20_vs_retrain"] == 1.0
    assert result["sym_kl_vs_retrain"] == 0.0
    assert result["mia_auc_gap"] == result["forget_score_gap"] == result["over_forgetting"] == 0.0
    assert result["diff_auc"] == 0.5 and result["MI-BF"] == pytest.approx(1.0)
    assert {"forget_Recall@10", "forget_Recall@20", "mia_learned_auc", "MI-NG", "nonedge_score_std",
            "residual_score_mean", "forget_rank_pct"} <= set(result)
    assert result["audit_edges"] == len(forget)
    assert all(isinstance(value, float) for value in result.values())


def test_audit_keys_without_references_and_determinism():
    scorer, forget, residual, valid, test = small_case()
    result = audit(scorer, forget, residual, test, valid=valid)
    assert not {"diff_auc", "MI-BF", "jaccard@20_vs_retrain", "over_forgetting"} & set(result)
    assert audit(scorer, forget, residual, test, valid=valid) == result
    assert audit(scorer, forget, residual, test, valid=valid, seed=1) != result
    assert audit(scorer, forget, residual, test, valid=valid, max_users=5)["audit_users"] == 5


def test_audit_refuses_forgotten_edges_left_in_residual_train():
    scorer, forget, residual, valid, test = small_case()
    with pytest.raises(ValueError, match="still in residual_train"):
        audit(scorer, forget, residual.union(forget), test)
    with pytest.raises(ValueError, match="empty"):
        audit(scorer, forget.select(np.zeros(len(forget), dtype=bool)), residual, test)


def test_audit_sample_sets():
    _, forget, residual, valid, test = small_case()
    sample = draw_audit_sample(forget, residual, test, valid, seed=3, max_users=10)
    assert len(sample.users) == 10 and set(np.unique(sample.forget.users)) == set(sample.users)
    assert forget.contains(sample.forget.users, sample.forget.items).all()
    n = len(sample.forget)
    assert len(sample.non_members) == len(sample.residual) == n
    assert test.contains(sample.non_members.users, sample.non_members.items).all()
    # Matched per user: each user gives as many test edges as it has forgotten ones, while it has some.
    wanted = np.bincount(sample.forget.users, minlength=60)
    available = np.bincount(test.users, minlength=60)
    assert (np.bincount(sample.non_members.users, minlength=60) >= np.minimum(wanted, available)).all()
    assert residual.contains(sample.residual.users, sample.residual.items).all()
    assert set(sample.non_edges.users) <= set(sample.users) and len(sample.non_edges) >= 0.9 * n
    for split in (residual, forget, valid, test):
        assert not split.contains(sample.non_edges.users, sample.non_edges.items).any()


# --- utility around the request -----------------------------------------------------------------------------

def test_request_neighbourhood_and_its_utility():
    scorer, forget, residual, valid, test = small_case(n_users=200)
    users = request_neighbourhood(pairs([(0, 5)], 200, 80), residual)
    assert set(users) == {0} | set(residual.users[residual.items == 5])
    got = neighbourhood_utility(scorer, forget, residual, test, valid, ks=(20,))
    frame = per_user_metrics(scorer, test, residual.union(valid), 20, ("Recall", "NDCG"),
                             users=request_neighbourhood(forget, residual))
    assert got == {"neighbourhood_Recall@20": pytest.approx(frame["Recall@20"].mean()),
                   "neighbourhood_NDCG@20": pytest.approx(frame["NDCG@20"].mean()),
                   "neighbourhood_users": len(frame)}
    assert got["neighbourhood_users"] > 0


def test_active_gap_by_hand():
    # 20 users, one test item each (item 0); user 7 is the most active and the only one ranking item 0 first.
    n_users, n_items = 20, 30
    train = Interactions.from_arrays(np.r_[np.full(10, 7), np.arange(n_users)],
                                     np.r_[np.arange(10, 20), np.full(n_users, 25)], n_users, n_items)
    test = Interactions.from_arrays(np.arange(n_users), np.zeros(n_users), n_users, n_items)
    scores = np.tile(np.arange(n_items, dtype=np.float32), (n_users, 1))
    scores[7, 0] = 100.0
    got = active_gap(DenseScorer(scores), train, test, k=20)
    assert got == {"active_NDCG@20": 1.0, "inactive_NDCG@20": 0.0, "active_gap": 1.0}


# --- memorised versus retrained on ml-100k ------------------------------------------------------------------

def low_rank_scorer(train: Interactions, rank: int = 64) -> EmbeddingScorer:
    """Closed-form rank-r factorisation X ≈ (U S^½)(V S^½)ᵀ of the training matrix: it reproduces its own edges.

    From the eigendecomposition of the small Gram matrix X Xᵀ = U S² Uᵀ (users < items): V S^½ = Xᵀ U S^-½.
    """
    x = train.to_csr().astype(np.float64)
    eigenvalues, eigenvectors = (t.numpy() for t in torch.linalg.eigh(torch.as_tensor((x @ x.T).toarray())))
    top = np.argsort(eigenvalues)[::-1][:rank]
    root = eigenvalues[top] ** 0.25           # S^½, with S² the eigenvalues
    user_emb, item_emb = eigenvectors[:, top] * root, (x.T @ eigenvectors[:, top]) / root
    return EmbeddingScorer(torch.as_tensor(user_emb, dtype=torch.float32),
                           torch.as_tensor(item_emb, dtype=torch.float32))


@pytest.fixture(scope="module")
def ml100k_audits(data_root):
    if not (data_root / "ml-100k").is_dir():
        pytest.skip(f"{data_root / 'ml-100k'} not found")
    data = load_dataset("ml-100k", root=data_root, download=False)
    rng = np.random.default_rng(0)
    forget = data.train.select(np.sort(rng.choice(len(data.train), len(data.train) // 20, replace=False)))
    residual = data.train.subtract(forget)
    memorised, retrained = low_rank_scorer(data.train), low_rank_scorer(residual)
    kwargs = dict(original=memorised, retrain=retrained, valid=data.valid)
    return (audit(memorised, forget, residual, data.test, **kwargs),
            audit(retrained, forget, residual, data.test, **kwargs))


def test_audit_separates_memorised_from_retrained(ml100k_audits):
    memorised, retrained = ml100k_audits
    assert memorised["forget_score_mean"] > retrained["forget_score_mean"] + 0.2
    assert memorised["forget_rank_pct"] > retrained["forget_rank_pct"] + 0.1
    assert memorised["forget_Recall@20"] > 1.5 * retrained["forget_Recall@20"]
    assert memorised["mia_auc"] > 0.75 and memorised["mia_learned_auc"] > 0.75
    assert retrained["mia_auc"] == pytest.approx(0.5, abs=0.04)
    assert retrained["mia_learned_auc"] == pytest.approx(0.5, abs=0.06)
    assert memorised["mia_auc_gap"] > 0.2 and memorised["forget_score_gap"] > 0.2
    assert memorised["over_forgetting"] < -0.1        # the memorised model ranks them higher than retraining
    assert memorised["jaccard@20_vs_retrain"] < 0.8 and memorised["sym_kl_vs_retrain"] > 0


def test_audit_of_the_retrained_model_sees_the_deletion_against_the_original(ml100k_audits):
    memorised, retrained = ml100k_audits
    assert retrained["diff_auc"] > 0.8 and retrained["MI-BF"] > 1.05
    assert memorised["diff_auc"] == 0.5 and memorised["MI-BF"] == pytest.approx(1.0)
    assert retrained["MI-NG"] > memorised["MI-NG"]
    # Residual edges and non-edges are not what the request changed: both models score them alike.
    assert retrained["residual_score_mean"] == pytest.approx(memorised["residual_score_mean"], abs=0.05)
    assert retrained["nonedge_score_mean"] == pytest.approx(memorised["nonedge_score_mean"], abs=0.02)
