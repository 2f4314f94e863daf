"""The CRAGRU benchmark's request (benchmarks/bench_cragru.py): the paper's protocol keeps exactly one training
interaction per forgotten user, the share variant forgets that share, both are seeded; and its report
averages over seeds, pairing each method with the references of the same seed."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from generated import taste_groups

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cragru.py"


def load_script():
    spec = importlib.util.spec_from_file_location("benchmarks_bench_cragru", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load_script()


@pytest.fixture(scope="module")
def data():
    return taste_groups(200, 120, 12, seed=3)


def per_user(interactions) -> dict[int, int]:
    users, counts = np.unique(interactions.users, return_counts=True)
    return dict(zip(users.tolist(), counts.tolist()))


def test_users_forget_all_but_one(data):
    forget = bench.forgotten_interactions(data, 0.1, seed=0)
    train = per_user(data.train)
    forgotten = per_user(forget)
    assert len(forgotten) == round(0.1 * data.n_users)
    assert all(train[user] - n == 1 for user, n in forgotten.items())
    assert len(data.train.subtract(forget)) == len(data.train) - len(forget)   # every forgotten pair is training


def test_share_variant_forgets_that_share_and_keeps_at_least_one(data):
    forget = bench.forgotten_interactions(data, 0.1, seed=0, share=0.5)
    train = per_user(data.train)
    for user, n in per_user(forget).items():
        assert n == int(np.clip(round(0.5 * train[user]), 1, train[user] - 1))
    assert set(per_user(forget)) == set(per_user(bench.forgotten_interactions(data, 0.1, seed=0)))


def test_requests_are_seeded(data):
    first, again, other = (bench.forgotten_interactions(data, 0.1, seed=s) for s in (0, 0, 1))
    assert first.hash == again.hash
    assert first.hash != other.hash


def row(method: str, seed: int, ndcg: float, similar: float, **extra) -> dict:
    metrics = {k: ndcg for k in ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")}
    return {"dataset": "d", "backbone": "b", "request": "users-but-one:0.1", "method": method, "seed": seed,
            "forget_users": 10, "forget_edges": 50, "load_average": 1.0, "seconds": {"total": 1.0},
            "forget": {**metrics, "users": 5}, "remaining": metrics, "similar": {"NDCG@10": similar},
            "propagation": {"identical_lists": 50, "top20_jaccard_vs_original": 1.0, "max_abs_score_change": 0.0},
            "completeness": {"mean_percentile_rank": 0.5, "forgotten_Recall@20": 0.0}, **extra}


def table_line(report: str, method: str, after: str) -> list[str]:
    section = report[report.index(after):]
    line = next(line for line in section.splitlines() if line.startswith(f"| {method} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_averages_seeds_and_pairs_references_by_seed(tmp_path):
    rows = [row("ori", 0, 0.2, 0.30), row("ori", 1, 0.4, 0.50),
            row("cragru", 0, 0.1, 0.30), row("cragru", 1, 0.9, 0.50), row("cragru", 1, 0.3, 0.50),  # rerun
            row("retrain", 1, 0.1, 0.20),                        # an early row: seed 1 is its own seed, request 0
            row("retrain", 1, 0.1, 0.45, retrain_seed=2)]        # request seed 1
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = bench.report(str(path))
    cragru = table_line(report, "cragru", "Forget users")
    assert cragru[1] == "2"                                  # seeds
    assert cragru[7] == f"{0.2:.4f} ± {np.std([0.1, 0.3], ddof=1):.4f}"   # NDCG@10: the latest seed-1 row
    propagation = table_line(report, "cragru", "Propagation")
    assert propagation[5] == "+0.0000 ± 0.0000"              # vs ori of the same seed
    assert propagation[6] == f"+0.0750 ± {np.std([0.10, 0.05], ddof=1):.4f}"   # vs Retrain of the same seed
