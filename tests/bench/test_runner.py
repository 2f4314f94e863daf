"""The harness end to end on a tiny generated graph: Retrain, fine-tune and Suppress, 2 seeds, a random and an
adversarial request, the noise floor, a stream, resuming, and the reused-timing records."""
from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest

from recunlearn.bench import aggregate
from recunlearn.bench.results import FIELDS, read_rows
from recunlearn.bench.runner import Runner
from recunlearn.bench.setting import build_setting, fingerprint
from recunlearn.bench.suite import units
from recunlearn.train.cache import train_cached
from bench.tiny import tiny_dataset, tiny_loader, tiny_suite


@pytest.fixture(scope="module")
def suite(tiny_run):
    return tiny_run.suite


@pytest.fixture(scope="module")
def results(tiny_run):
    return tiny_run.path, tiny_run.summary, tiny_run.rows, tiny_run.lines


@pytest.fixture(scope="module")
def bench_cache(tiny_run):
    return tiny_run.cache


def rows_of(rows, **where):
    return [row for row in rows if all(row[key] == value for key, value in where.items())]


# ------------------------------------------------------------------------------------------- the rows

def test_one_row_per_unit_with_every_schema_field(suite, results):
    path, summary, rows, _ = results
    planned = units(suite)
    assert summary.total == summary.ran == len(rows) == len(planned)
    for row in rows:
        assert set(FIELDS) <= set(row), set(FIELDS) - set(row)
        assert row["suite"] == "tiny" and row["code_version"] and row["machine"] and row["date"]
        assert set(row["load"]) == {"before", "after"}
    # per setting: the reference, the original, fine-tune and the Suppress control the suite did not list
    for request, seed in itertools.product(suite.requests, suite.seeds):
        setting = rows_of(rows, request=request, seed=seed, role="method")
        assert sorted(row["method"] for row in setting) == ["finetune", "suppress"]
        assert len(rows_of(rows, request=request, seed=seed, role="reference")) == 1
        assert len(rows_of(rows, request=request, seed=seed, role="original")) == 1


def test_method_rows_carry_utility_forgetting_and_timing_columns(results):
    _, _, rows, _ = results
    for row in rows_of(rows, role="method"):
        metrics, timings = row["metrics"], row["timings"]
        for key in ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20", "mia_auc", "mia_auc_gap", "mia_learned_auc",
                    "over_forgetting", "forget_rank_pct", "jaccard@20_vs_retrain", "neighbourhood_Recall@20",
                    "Recall@20_vs_retrain", "speedup"):
            assert key in metrics, (row["method"], key)
        assert timings["unlearn"] > 0 and timings["prepare"] >= 0
        reference = rows_of(rows, role="reference", request=row["request"], seed=row["seed"])[0]
        assert metrics["speedup"] == pytest.approx(reference["timings"]["unlearn"] / timings["unlearn"])
        ratio = metrics["Recall@20"] / reference["metrics"]["Recall@20"]
        assert metrics["Recall@20_vs_retrain"] == pytest.approx(ratio)
        assert metrics["mia_auc_gap"] == pytest.approx(metrics["mia_auc"] - reference["metrics"]["mia_auc"])
        assert row["prepare_report"] == {}   # neither fine-tune nor Suppress decides anything in preparation
    kinds = {row["method"]: row["kind"] for row in rows}
    assert kinds == {"retrain": "exact", "original": "none", "finetune": "approximate", "suppress": "control"}


def test_the_reference_is_an_independent_retrain(results):
    _, _, rows, _ = results
    for row in rows:
        assert row["reference_seed"] != row["seed"] and row["models"]["reference_seed"] == row["reference_seed"]
        assert row["models"]["reference"] != row["models"]["original"]
    for row in rows_of(rows, role="reference"):
        # measured against itself, and timed without the validation passes of early stopping
        assert row["metrics"]["mia_auc_gap"] == 0 and row["metrics"]["jaccard@20_vs_retrain"] == 1
        timings = row["timings"]
        assert "seconds_to_best" in timings
        if row["reused"]["unlearn"]:   # the cache answered: the seconds recorded when it was trained
            assert timings["clock"] == "recorded" and timings["unlearn"] == timings["method_total"]
        else:
            assert timings["clock"] == "training epochs" and timings["excluded"] > 0
            assert timings["unlearn"] + timings["excluded"] == pytest.approx(timings["unlearn_wall"])


def test_noise_floor_is_the_spread_between_independent_retrains(suite, results):
    _, _, rows, _ = results
    for group in aggregate.groups(rows):
        retrains = group.retrains
        assert sorted(row["retrain_seed"] for row in retrains) == [1, 2, 3]   # seed 0's request, 3 retrains
        assert all(row["seed"] == suite.seeds[0] for row in retrains)
        # independent: three different models, the first being seed 0's reference itself
        assert len({row["models"]["retrain"] for row in retrains}) == 3
        reference = rows_of(group.rows, role="reference", seed=suite.seeds[0])[0]
        assert rows_of(retrains, retrain_seed=1)[0]["models"]["retrain"] == reference["models"]["reference"]
        floor = aggregate.noise_floor(group)
        mia = [row["metrics"]["mia_auc"] for row in retrains]
        assert floor["mia_auc"] == pytest.approx(max(abs(a - b) for a in mia for b in mia))
        assert floor["Recall@20_std"] == pytest.approx(np.std([r["metrics"]["Recall@20"] for r in retrains], ddof=1))


def test_adversarial_reference_is_not_the_model_that_chose_the_injected_edges(suite, results, bench_cache):
    _, _, rows, _ = results
    adversarial = rows_of(rows, request="adversarial:1.0")
    assert adversarial
    for row in adversarial:
        models = row["models"]
        assert models["selector_seed"] == row["seed"] != models["reference_seed"]
        assert models["selector"] not in (models["reference"], models["original"])
    # the recorded selector is the clean model of the setting's seed (the one that picks the edges)
    run = suite.run_config("tiny", "lightgcn", 0)
    clean_model, _, cached = train_cached(run, tiny_dataset(), bench_cache, progress=False)
    recorded = rows_of(adversarial, seed=0, role="reference")[0]["models"]["selector"]
    assert cached and fingerprint(clean_model) == recorded


def test_adversarial_non_members_are_least_likely_pairs_never_injected(suite, bench_cache):
    run = suite.run_config("tiny", "lightgcn", 0)
    setting = build_setting(run, "adversarial:1.0", 0, tiny_loader, bench_cache, progress=False)
    clean, injected, non_members = tiny_dataset(), setting.request.edges, setting.audit_test
    assert len(non_members) > 0
    assert not injected.contains(non_members.users, non_members.items).any()
    for split in (clean.train, clean.valid, clean.test):   # never a real interaction either
        assert not split.contains(non_members.users, non_members.items).any()
    # of the same kind: among the selector's lowest-scored pairs of their users
    scores = setting.selector.model.score_users(np.arange(clean.n_users)).numpy()
    ranks = scores.argsort(axis=1).argsort(axis=1)
    assert np.median(ranks[non_members.users, non_members.items]) < 0.1 * clean.n_items
    # utility is still measured on the real held-out test set
    assert setting.residual.test.hash == clean.test.hash


def test_stream_rows_measure_each_checkpoint_against_a_retrain_of_the_cumulative_set(results):
    _, _, rows, _ = results
    stream = rows_of(rows, role="stream")
    assert sorted(row["method"] for row in stream) == ["finetune", "retrain", "suppress"]
    request_size = stream[0]["request_size"]
    for row in stream:
        marks = row["stream"]["checkpoints"]
        assert [mark["step"] for mark in marks] == [1, 2, 3, 4]
        assert marks[-1]["forgotten"] == request_size
        assert all(a["forgotten"] < b["forgotten"] for a, b in zip(marks, marks[1:]))
    finetune = rows_of(stream, method="finetune")[0]
    seconds = [mark["seconds"] for mark in finetune["stream"]["checkpoints"]]
    assert all(a <= b for a, b in zip(seconds, seconds[1:]))              # cumulative
    assert len(finetune["timings"]["per_request"]) == 4


def test_progress_prints_run_i_of_n_with_elapsed_and_eta(results):
    _, summary, _, lines = results
    progress = [line for line in lines if line.startswith("run ")]
    assert len(progress) == summary.ran
    assert progress[0].startswith(f"run 1 of {summary.total}: ") and "elapsed" in progress[0] and "ETA" in progress[0]


# ------------------------------------------------------------------------------------------- resuming

def test_resume_skips_finished_units_and_redoes_the_rest(suite, results, bench_cache, tmp_path):
    path, summary, rows, _ = results
    copy = tmp_path / "resumed.jsonl"
    shutil.copy(path, copy)
    again = Runner(suite, copy, load=tiny_loader, cache_dir=bench_cache, progress=False, echo=lambda _: None).run()
    assert (again.ran, again.skipped) == (0, summary.total)
    # an interruption: the last three lines lost, and a fourth cut short mid-write
    lines = path.read_text().splitlines()
    copy.write_text("\n".join(lines[:-4]) + "\n" + lines[-4][:50])
    with pytest.warns(UserWarning, match="not a complete JSON line"):
        resumed = Runner(suite, copy, load=tiny_loader, cache_dir=bench_cache, progress=False,
                         echo=lambda _: None).run()
    assert resumed.ran == 4
    with pytest.warns(UserWarning):
        final = read_rows(copy)
    assert sorted(row["unit"] for row in final) == sorted(row["unit"] for row in rows)


def test_the_one_off_imports_are_paid_before_the_first_timed_unit(suite, results, bench_cache, tmp_path, monkeypatch):
    """The first optimiser a process builds imports torch's compiler package; the harness builds one before any
    unit, so whichever method runs first does not carry it (and a suite with nothing left to run skips it)."""
    from recunlearn.bench import runner

    events = []
    monkeypatch.setattr(runner, "warm_up", lambda: events.append("warm-up"))
    real_run_unit = Runner.run_unit
    monkeypatch.setattr(Runner, "run_unit", lambda self, unit, key: events.append("unit") or real_run_unit(self, unit, key))
    path, _, _, _ = results
    copy = tmp_path / "warm.jsonl"
    copy.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")   # the last unit left to run
    Runner(suite, copy, load=tiny_loader, cache_dir=bench_cache, progress=False, echo=lambda _: None).run()
    assert events == ["warm-up", "unit"]
    events.clear()
    Runner(suite, copy, load=tiny_loader, cache_dir=bench_cache, progress=False, echo=lambda _: None).run()
    assert events == []


def test_warm_up_imports_what_the_first_optimiser_imports():
    import subprocess
    import sys
    check = ("import sys; from recunlearn.bench.measure import warm_up; "
             "assert 'torch._dynamo' not in sys.modules; warm_up(); assert 'torch._dynamo' in sys.modules")
    subprocess.run([sys.executable, "-c", check], check=True)


def test_a_changed_setting_is_a_new_unit(suite, results, bench_cache, tmp_path):
    """A unit is skipped only when its configuration is the same: other audit settings rerun everything."""
    path, summary, _, _ = results
    changed = tiny_suite(requests=["random:0.05"], seeds=[0], streams=[], audit={"ks": [20]})
    copy = tmp_path / "changed.jsonl"
    shutil.copy(path, copy)
    resumed = Runner(changed, copy, load=tiny_loader, cache_dir=bench_cache, progress=False, echo=lambda _: None).run()
    assert resumed.skipped == 0 and resumed.ran == len(units(changed))


def test_cached_timings_are_marked_reused_with_where_they_were_measured(results, bench_cache, tmp_path):
    """A second run of a setting finds the trained models and prepared states in the cache: its rows say
    which timings were reused, with the machine and load they were measured under."""
    again = tmp_path / "again.jsonl"
    smaller = tiny_suite(requests=["random:0.05"], seeds=[0], streams=[], audit={"ks": [10, 20], "max_users": 999})
    Runner(smaller, again, load=tiny_loader, cache_dir=bench_cache, progress=False, echo=lambda _: None).run()
    rows = read_rows(again)
    reference = rows_of(rows, role="reference")[0]
    assert reference["reused"]["unlearn"] is True
    origin = reference["reused_from"]["unlearn"]
    assert {"code_version", "machine", "load", "comparable", "why"} <= set(origin)
    # the counted seconds are the recorded ones, not the time it took to load the model
    assert reference["timings"]["unlearn"] == reference["timings"]["method_total"] > 0
    assert reference["timings"]["excluded"] == 0
    for row in rows_of(rows, role="method"):
        assert row["reused"]["prepare"] is True and "machine" in row["reused_from"]["prepare"]
    original = rows_of(rows, role="original")[0]
    assert original["reused"]["original_train"] is True
    assert json.dumps(rows)   # every value serialisable
