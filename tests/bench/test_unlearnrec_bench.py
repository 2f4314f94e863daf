"""The UnlearnRec benchmark harness on ml-100k with tiny settings: the settings it builds, the five-method
table of one request, and the sequential stream against Retrain at each checkpoint of the stream."""
from __future__ import annotations

import math

import numpy as np
import pytest

from recunlearn.bench.unlearnrec import STREAM_COLUMNS, TABLE_COLUMNS, build_setting, make_run, run_benchmark, \
    run_stream, table_rows
from recunlearn.data.requests import adversarial_edges, random_request
from recunlearn.train.cache import train_cached
from recunlearn.train.runs import test_metrics as utility_of
from recunlearn.unlearn.influence_encoder import IEConfig

# One encoder epoch. The adversarial request touches every user and item; one epoch at lr 0.05 overshoots
# there (zero-shot Recall@20 near 0, injected edges scored above the original's), one at lr 0.01 forgets.
TINY_IE = IEConfig(epochs=1, batch_size=8192, lr=0.01)
METHODS = ["Original", "Retrain", "Fine-tune (1 ep)", "UnlearnRec zero-shot", "UnlearnRec + FT (0.25 ep)"]
METRICS = ["Recall@20", "NDCG@20", "forget_score", "nonedge_score", "mia_auc", "mia_gap_vs_retrain"]


@pytest.fixture(scope="module", autouse=True)
def model_cache(isolated_model_cache):
    return isolated_model_cache


@pytest.fixture(scope="module")
def run(data_root):
    return make_run("ml-100k", "lightgcn", ["train.epochs=2"])


@pytest.fixture(scope="module")
def adversarial(run):
    return build_setting("ml-100k", "lightgcn", "adversarial:1.0", seed=0, run=run, progress=False)


@pytest.fixture(scope="module")
def adversarial_rows(adversarial):
    return run_benchmark(adversarial, TINY_IE, finetune_epochs=0.25, baseline_epochs=1, seed=0, progress=False)


def by_method(rows: list[dict]) -> dict[str, dict]:
    return {row["method"]: row for row in rows}


# ------------------------------------------------------------------------------------------------ settings

def test_make_run_uses_the_benchmark_training_settings_with_overrides(run):
    assert (run.data.name, run.model.name) == ("ml-100k", "lightgcn")
    assert run.train.epochs == 2                                    # the override
    assert (run.train.batch_size, run.train.lr, run.train.patience) == (8192, 0.01, 5)


def test_adversarial_setting_requests_exactly_the_injected_edges(adversarial, run, model_cache):
    setting, clean = adversarial, adversarial.clean
    edges = setting.edges
    assert setting.info["injected"] == len(edges) > 0
    # none of them is a clean interaction; the original model's training set is clean + injected
    for split in (clean.train, clean.valid, clean.test):
        assert not split.contains(edges.users, edges.items).any()
    assert setting.dataset.train.hash == clean.train.union(edges).hash
    assert len(setting.dataset.train) == len(clean.train) + len(edges)
    assert setting.original.graph.source_hash == setting.dataset.train.hash
    # the injected edges are the clean model's least-likely partners: one per user, one per item
    clean_model, _, cached = train_cached(run, clean, progress=False)
    assert cached
    assert edges.hash == adversarial_edges(clean, clean_model, 1.0, 1.0, seed=0).hash
    assert set(edges.users.tolist()) == set(range(clean.n_users))
    # both models were trained once and cached; the recorded training time travels with the setting
    assert len(list(model_cache.glob("lightgcn-*"))) == 2
    assert setting.original_seconds > 0


def test_random_setting_draws_from_the_clean_training_set(run):
    setting = build_setting("ml-100k", "lightgcn", "random:0.01", seed=3, run=run, progress=False)
    assert setting.dataset is setting.clean and setting.info == {}
    assert setting.edges.hash == random_request(setting.clean, 0.01, seed=3).edges.hash
    assert len(setting.edges) == round(0.01 * len(setting.clean.train))


def test_malformed_request_spec_is_refused(run):
    with pytest.raises(ValueError, match="valid forms"):
        build_setting("ml-100k", "lightgcn", "adversarial", run=run, progress=False)


# ---------------------------------------------------------------------------------------------- benchmark

def test_benchmark_returns_the_five_methods_with_finite_metrics(adversarial_rows):
    assert [row["method"] for row in adversarial_rows] == METHODS
    assert [row["kind"] for row in adversarial_rows] == ["-", "exact", "approximate", "approximate", "approximate"]
    for row in adversarial_rows:
        for name in METRICS:
            assert math.isfinite(row[name]), (row["method"], name, row[name])
        assert 0 <= row["Recall@20"] <= 1 and 0 <= row["NDCG@20"] <= 1 and 0 <= row["mia_auc"] <= 1
    rows = by_method(adversarial_rows)
    for row in adversarial_rows:   # nobody loses much utility on this request
        assert row["Recall@20"] > 0.8 * rows["Retrain"]["Recall@20"], row["method"]
    assert rows["Original"]["unlearn_s"] is None and rows["Original"]["speedup"] is None
    for method in METHODS[1:]:
        assert rows[method]["unlearn_s"] > 0
        assert rows[method]["speedup"] == pytest.approx(rows["Retrain"]["unlearn_s"] / rows[method]["unlearn_s"])
    # the table shows every column, with "-" where a value does not apply
    table = table_rows(adversarial_rows)
    assert [list(row) for row in table] == [TABLE_COLUMNS] * 5
    assert table[0]["unlearn_s"] == "-" and table[0]["prepare_s"] == "-"


def test_retrain_is_the_reference(adversarial_rows, adversarial, run):
    rows = by_method(adversarial_rows)
    assert rows["Retrain"]["mia_gap_vs_retrain"] == 0
    assert rows["Retrain"]["speedup"] == 1
    for method in METHODS:
        assert rows[method]["mia_gap_vs_retrain"] == pytest.approx(abs(rows[method]["mia_auc"]
                                                                      - rows["Retrain"]["mia_auc"]))
    # retraining on the residual (= clean) data is answered by the cached clean model, with its recorded time
    _, meta, cached = train_cached(run, adversarial.clean, progress=False)
    assert cached and rows["Retrain"]["unlearn_s"] == meta["metrics"]["seconds"] > 0
    # a model that never saw the injected edges puts them below random non-edges; the poisoned one does not
    assert rows["Retrain"]["forget_score"] < rows["Retrain"]["nonedge_score"]
    assert rows["Original"]["forget_score"] > rows["Retrain"]["forget_score"]


def test_unlearnrec_forgets_the_injected_edges(adversarial_rows):
    rows = by_method(adversarial_rows)
    for method in ("UnlearnRec zero-shot", "UnlearnRec + FT (0.25 ep)"):
        row = rows[method]
        assert row["forget_score"] < row["nonedge_score"] and row["forget_score"] < rows["Original"]["forget_score"]
        assert row["mia_gap_vs_retrain"] < rows["Original"]["mia_gap_vs_retrain"]
        assert row["audit"]["MI-BF"] > 1          # σ(score) on the request edges fell


def test_utility_is_measured_with_the_right_mask(adversarial_rows, adversarial):
    rows = by_method(adversarial_rows)
    setting = adversarial
    # the original on the data it was trained on (injected edges masked), the others on the residual data
    original = utility_of(setting.original, setting.dataset, ks=[20])
    assert rows["Original"]["Recall@20"] == pytest.approx(original["Recall@20"])
    assert rows["Original"]["NDCG@20"] == pytest.approx(original["NDCG@20"])


def test_only_unlearnrec_rows_carry_the_pretraining_time(adversarial_rows):
    rows = by_method(adversarial_rows)
    prepare = rows["UnlearnRec zero-shot"]["prepare_s"]
    assert prepare > 0 and rows["UnlearnRec + FT (0.25 ep)"]["prepare_s"] == prepare
    for method in ("Original", "Retrain", "Fine-tune (1 ep)"):
        assert rows[method]["prepare_s"] is None
    # fine-tuning comes on top of the same zero-shot step
    assert rows["UnlearnRec + FT (0.25 ep)"]["unlearn_s"] > rows["UnlearnRec zero-shot"]["unlearn_s"]


# ------------------------------------------------------------------------------------------------- stream

def test_stream_pairs_retrain_and_unlearnrec_at_each_step(adversarial, adversarial_rows):
    rows = run_stream(adversarial, TINY_IE, parts=4, seed=0, progress=False)
    assert [(row["step"], row["method"]) for row in rows] == [
        (step, method) for step in (1, 2, 3, 4) for method in ("Retrain", "UnlearnRec stream")]
    assert all(row["of"] == 4 for row in rows)
    for row in rows:
        assert set(STREAM_COLUMNS) <= set(row)
        for name in ("Recall@20", "NDCG@20", "forget_score", "nonedge_score", "mia_auc"):
            assert math.isfinite(row[name]), (row["step"], row["method"], name)
    forgotten = [row["forgotten"] for row in rows[::2]]
    assert forgotten == [row["forgotten"] for row in rows[1::2]]
    # near-equal parts that add up to the whole request
    parts = np.diff([0, *forgotten])
    assert forgotten[-1] == len(adversarial.edges) and parts.sum() == len(adversarial.edges)
    assert parts.max() - parts.min() <= 1
    # the stream's time is cumulative
    spent = [row["unlearn_s"] for row in rows[1::2]]
    assert spent[0] > 0 and all(b >= a for a, b in zip(spent, spent[1:]))
    # at the end every injected edge is forgotten: the Retrain row is then the one of the one-batch table
    reference = by_method(adversarial_rows)["Retrain"]
    for name in ("Recall@20", "NDCG@20", "forget_score", "nonedge_score", "mia_auc"):
        assert rows[-2][name] == pytest.approx(reference[name]), name


def test_stream_fine_tunes_every_kth_request(adversarial, monkeypatch):
    from recunlearn.unlearn.influence_encoder import UnlearnRec
    epochs_asked = []
    real_unlearn = UnlearnRec.unlearn

    def spy(self, edges, finetune_epochs=None):
        epochs_asked.append(finetune_epochs)
        return real_unlearn(self, edges, finetune_epochs=finetune_epochs)

    monkeypatch.setattr(UnlearnRec, "unlearn", spy)
    rows = run_stream(adversarial, TINY_IE, parts=4, finetune_epochs=0.25, finetune_every=2, seed=0, progress=False)
    assert epochs_asked == [0.0, 0.25, 0.0, 0.25]
    assert {row["method"] for row in rows} == {"Retrain", "UnlearnRec stream + FT (0.25 ep every 2)"}
    with pytest.raises(ValueError, match="finetune_every must be at least 1"):
        run_stream(adversarial, TINY_IE, parts=4, finetune_epochs=0.25, finetune_every=0, progress=False)
