"""The quick suite end to end on ml-100k (slow): every method of benchmarks/suites/quick.yaml, reduced to two
seeds and a one-seed stream so that it stays near ten minutes on 2 cores, then the report."""
from __future__ import annotations

from pathlib import Path

import pytest

from recunlearn.bench import aggregate
from recunlearn.bench.report import write_report
from recunlearn.bench.results import read_rows
from recunlearn.bench.runner import Runner
from recunlearn.bench.suite import Suite, load_suite, units

QUICK = Path(__file__).resolve().parents[2] / "benchmarks" / "suites" / "quick.yaml"


def reduced_quick() -> Suite:
    spec = load_suite(QUICK).model_dump(mode="json")
    spec["seeds"] = [0, 1]
    for stream in spec["streams"]:
        stream["seeds"] = [0]
    return Suite.model_validate(spec)


@pytest.mark.slow
def test_quick_suite_end_to_end(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))
    suite = reduced_quick()
    results = tmp_path / "quick.jsonl"
    summary = Runner(suite, results, progress=False, echo=lambda _: None).run()
    rows = read_rows(results)
    assert summary.ran == len(rows) == len(units(suite))
    for group in aggregate.groups(rows):
        reference = aggregate.by_method(group.rows, "retrain")
        assert all(row["metrics"]["Recall@20"] > 0.2 for row in reference)   # a trained LightGCN on ml-100k
        assert aggregate.noise_floor(group)["retrains"] == 3
        for label in aggregate.methods(group.rows):
            mine = aggregate.by_method(group.rows, label)
            assert len(mine) == 2 and all(row["kind"] in ("none", "exact", "approximate", "control") for row in mine)
    # the original saw the injected edges: the attack finds them far better than on the independent retrain
    adversarial = [row for row in rows
                   if row["request"] == "adversarial:1.0" and row["role"] in ("original", "reference")]
    for seed in (0, 1):
        original, reference = (next(r for r in adversarial if r["seed"] == seed and r["role"] == role)
                               for role in ("original", "reference"))
        assert original["metrics"]["mia_auc"] > reference["metrics"]["mia_auc"] + 0.1
    text = write_report(results, tmp_path / "report").read_text()
    assert text.count("## ml-100k / lightgcn /") == 4          # three requests and the stream
    assert all((tmp_path / "report" / name).is_file() for name in
               ("utility_vs_time.png", "mia_gap.png", "stream_utility.png", "total_cost.png"))
