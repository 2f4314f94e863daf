"""Reused timings and prepared states: a timing recorded elsewhere stands in only when machine and load
match (rule 3); a prepared state is reused only for the same code, method config, weights and data (rule 7)."""
from __future__ import annotations

import torch

from recunlearn.bench import provenance
from recunlearn.bench.prepared import prepared_key
from recunlearn.models.registry import build_model
from bench.tiny import tiny_dataset, tiny_suite


def test_a_recorded_timing_is_comparable_only_on_the_same_machine_under_the_same_load():
    now = provenance.here(1.0)
    elsewhere = {**now, "run": "another run"}
    assert provenance.comparable(now, now) == (True, "measured earlier in this run")
    assert provenance.comparable({**elsewhere, "load": 1.3}, now)[0]
    assert not provenance.comparable({**elsewhere, "load": 2.0}, now)[0]
    assert "another machine" in provenance.comparable({**elsewhere, "machine": "a laptop"}, now)[1]
    assert "not timed by the harness" in provenance.comparable(None, now)[1]


def test_the_ledger_round_trips_and_misses_unknown_keys(tmp_path):
    record = {**provenance.here(0.5), "seconds": 12.0}
    provenance.remember(tmp_path, "train-lightgcn-abc", record)
    assert provenance.recall(tmp_path, "train-lightgcn-abc") == record
    assert provenance.recall(tmp_path, "train-lightgcn-other") is None


def test_a_prepared_state_is_keyed_by_config_weights_and_data():
    run, data = tiny_suite().run_config("tiny", "lightgcn", 0), tiny_dataset()
    model = build_model(run.model, data.n_users, data.n_items)
    key = prepared_key("finetune", {"epochs": 1}, run, model, data)
    assert key == prepared_key("finetune", {"epochs": 1}, run, model.clone(), data)
    assert key != prepared_key("finetune", {"epochs": 2}, run, model, data)
    other = model.clone()
    with torch.no_grad():
        other.embedding.weight[0, 0] += 1e-3
    assert key != prepared_key("finetune", {"epochs": 1}, run, other, data)
    residual = data.with_train(data.train.select(data.train.users != 0))
    assert key != prepared_key("finetune", {"epochs": 1}, run, model, residual)


def test_entries_that_differ_only_in_request_time_settings_share_one_preparation(tmp_path):
    """Zero-shot and fine-tuned UnlearnRec entries pre-train once; the reused state answers requests with
    the settings of the entry that asked for it."""
    from recunlearn.bench.prepared import prepared
    from recunlearn.train.trainer import Trainer

    run, data = tiny_suite().run_config("tiny", "lightgcn", 0), tiny_dataset()
    model, _ = Trainer(run.model_copy(update={"train": run.train.model_copy(update={"epochs": 2})}),
                       progress=False).fit(data)
    fast = {"epochs": 1, "batch_size": 256}
    zero_shot = prepared("unlearnrec", fast, run, model, data, cache_dir=tmp_path, progress=False)
    tuned = prepared("unlearnrec", {**fast, "finetune_epochs": 1}, run, model, data, cache_dir=tmp_path,
                     progress=False)
    assert not zero_shot.reused and tuned.reused and tuned.key == zero_shot.key
    assert tuned.unlearner.config.finetune_epochs == 1 and zero_shot.unlearner.config.finetune_epochs == 0
    other = prepared("unlearnrec", {**fast, "lambda_p": 0.5}, run, model, data, cache_dir=tmp_path, progress=False)
    assert not other.reused
