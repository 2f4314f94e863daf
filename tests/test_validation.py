"""Failing early and clearly: nonsensical settings fail at config load naming the key and the allowed range,
the early-stopping metric is checked against eval.ks before any epoch, advice names options that exist, and
data with an empty split fails before training instead of giving NaN metrics."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cli_helpers import assert_input_error
from recunlearn.cli import app
from recunlearn.config import ConfigError, load_config
from recunlearn.data.interactions import DataError, Dataset, IdMap, Interactions
from recunlearn.train import runs
from recunlearn.train.checkpoint import read_meta
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def config_error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(RunConfig, None, list(overrides))
    message = str(err.value)
    assert "\n" not in message
    return message


def cli_options() -> set[str]:
    """Every `--option` of every `recunlearn` command and subcommand."""
    names: set[str] = set()

    def walk(command) -> None:
        for param in command.params:
            names.update(opt for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--"))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)
    walk(typer.main.get_command(app))
    return names


def assert_options_exist(message: str) -> None:
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", message))
    assert named <= cli_options(), f"{message!r} names options that do not exist: {named - cli_options()}"


# ----------------------------------------------------------------------------------------- value ranges

@pytest.mark.parametrize("overrides, key, allowed", [
    (["model.dim=0"], "model.dim", "greater than or equal to 1"),
    (["model.dim=-8"], "model.dim", "greater than or equal to 1"),
    (["model.layers=0"], "model.layers", "greater than or equal to 1"),
    (["model.name=sgl", "model.layers=0"], "model.layers", "greater than or equal to 1"),
    (["model.name=simgcl", "model.layers=0"], "model.layers", "greater than or equal to 1"),
    (["model.reg=-0.1"], "model.reg", "greater than or equal to 0"),
    (["model.init_std=0"], "model.init_std", "greater than 0"),
    (["model.name=sgl", "model.drop_ratio=1"], "model.drop_ratio", "less than 1"),
    (["model.name=sgl", "model.ssl_temp=0"], "model.ssl_temp", "greater than 0"),
    (["model.name=sgl", "model.ssl_weight=-1"], "model.ssl_weight", "greater than or equal to 0"),
    (["model.name=simgcl", "model.eps=-0.1"], "model.eps", "greater than or equal to 0"),
    (["model.name=simgcl", "model.ssl_temp=0"], "model.ssl_temp", "greater than 0"),
    (["train.batch_size=0"], "train.batch_size", "greater than or equal to 1"),
    (["train.epochs=0"], "train.epochs", "greater than or equal to 1"),
    (["train.patience=-1"], "train.patience", "greater than or equal to 1"),
    (["train.lr=0"], "train.lr", "greater than 0"),
    (["train.lr=-0.01"], "train.lr", "greater than 0"),
    (["train.threads=0"], "train.threads", "greater than or equal to 1"),
    (["data.valid_ratio=0"], "data.valid_ratio", "greater than 0"),
    (["data.valid_ratio=1"], "data.valid_ratio", "less than 1"),
    (["eval.ks=[]"], "eval.ks", "at least 1 item"),
    (["eval.ks=[0, 20]"], "eval.ks.0", "greater than or equal to 1"),
    (["eval.batch_size=0"], "eval.batch_size", "greater than or equal to 1"),
])
def test_nonsensical_values_fail_at_load_naming_the_key_and_the_range(overrides, key, allowed):
    message = config_error(*overrides)
    assert message.startswith(f"invalid RunConfig: {key}: ") and allowed in message


def test_the_message_shows_the_value_given():
    assert "model.dim: Input should be greater than or equal to 1 (got 0)" in config_error("model.dim=0")


def test_model_dim_zero_fails_on_the_command_line_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--set", "model.dim=0", "--out", out, "--quiet")
    assert_input_error(result, "model.dim", "greater than or equal to 1", "(got 0)")
    assert not out.exists()


# ---------------------------------------------------------------------------------- early-stopping metric

def test_metric_missing_from_eval_ks_fails_at_load_with_advice_that_works():
    message = config_error("eval.ks=[10]")
    assert "train.metric=Recall@20" in message and "eval.ks=[10]" in message
    assert "add 20 to eval.ks (--set 'eval.ks=[10, 20]') or set train.metric=Recall@10" in message
    assert_options_exist(message)
    # either piece of advice gives a valid config
    assert load_config(RunConfig, None, ["eval.ks=[10, 20]"]).eval.ks == [10, 20]
    assert load_config(RunConfig, None, ["eval.ks=[10]", "train.metric=Recall@10"]).train.metric == "Recall@10"


@pytest.mark.parametrize("metric, fragment", [
    ("recall@20", "write it as train.metric=Recall@20"),
    ("NDCG@5", "add 5 to eval.ks"),
    ("MAP@20", "choose one of Recall@10, Recall@20, NDCG@10"),
    ("Recall", "choose one of"),
])
def test_metric_that_validation_does_not_compute_is_a_config_error(metric, fragment):
    assert fragment in config_error(f"train.metric={metric}")


def test_metric_error_on_the_command_line_comes_before_any_epoch(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--set", "eval.ks=[10]", "--out", out, "--quiet")
    assert_input_error(result, "train.metric=Recall@20", "add 20 to eval.ks")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- advice

def test_unknown_key_lists_the_keys_that_exist_instead_of_a_help_page():
    message = config_error("model.name=mf", "model.layers=2")
    assert "model.layers: unknown key" in message and "known keys here: name, dim, reg, init_std" in message
    assert "--help" not in message
    assert "known keys here: data, model, train, eval" in config_error("learning_rate=0.1")
    assert "known keys here: epochs, batch_size, lr" in config_error("train.lrr=0.1")


def test_duplicate_lines_advice_works_on_the_command_line(tmp_path):
    data = tmp_path / "clicks.csv"
    data.write_text("user,item\nu1,a\nu1,b\nu1,a\n")
    line = assert_input_error(invoke("train", "--data", data, "--out", tmp_path / "run", "--quiet"),
                              str(data), "line 4 repeats line 2", "remove the repeated lines")
    assert_options_exist(line)
    assert "--dedupe" not in line


def test_unknown_file_extension_advice_works_on_the_command_line(tmp_path):
    data = tmp_path / "clicks.xlsx"
    data.write_text("u1,a\n")
    line = assert_input_error(invoke("train", "--data", data, "--out", tmp_path / "run", "--quiet"),
                              "rename it to end in one of", ".csv")
    assert_options_exist(line)


# ----------------------------------------------------------------------------------------- degenerate data

def test_one_line_dataset_fails_before_training_naming_the_file_and_the_empty_splits(tmp_path):
    data, out = tmp_path / "one.csv", tmp_path / "run"
    data.write_text("u1,a\n")
    line = assert_input_error(invoke("train", "--data", data, "--out", out, "--quiet"),
                              str(data.resolve()), "the valid and test splits are empty", "(1 train, 0 valid, 0 test",
                              "add interactions")
    assert_options_exist(line)
    assert not out.exists()


def tiny(valid: bool = True, test: bool = True, train: bool = True, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((20, 30)) < 0.3)
    data = Interactions.from_arrays(users, items, 20, 30)
    part = rng.random(len(data))
    parts = [part < 0.8 if train else part < 0, (part >= 0.8) & (part < 0.9) & valid, (part >= 0.9) & test]
    return Dataset("tiny", *(data.select(p) for p in parts), IdMap(np.arange(20)), IdMap(np.arange(30)))


FAST = ["train.epochs=1", "model.dim=8", "train.batch_size=512"]


@pytest.mark.parametrize("missing, fragment", [
    ({"train": False}, "tiny: the train split is empty"),
    ({"valid": False}, "tiny: the valid split is empty"),
    ({"test": False}, "tiny: the test split is empty"),
])
def test_empty_split_fails_before_anything_is_written(tmp_path, missing, fragment):
    out = tmp_path / "run"
    with pytest.raises(DataError, match=re.escape(fragment)):
        runs.train_and_save(load_config(RunConfig, None, FAST), tiny(**missing), out, progress=False)
    assert not out.exists()


def test_fine_tuning_needs_no_validation_split():
    run = load_config(RunConfig, None, FAST)
    Trainer(run, progress=False, validate=False).fit(tiny(valid=False))
    with pytest.raises(DataError, match="the valid split is empty"):
        Trainer(run, progress=False).fit(tiny(valid=False))


def test_nan_metrics_after_training_fail_and_the_run_is_not_marked_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "test_metrics", lambda model, dataset, ks: {"Recall@20": math.nan, "users": 0})
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"tiny: test metrics Recall@20 are NaN after training"):
        runs.train_and_save(load_config(RunConfig, None, FAST), tiny(), out, progress=False)
    assert not read_meta(out).get("complete")


def test_diverged_training_fails_naming_the_learning_rate(monkeypatch):
    monkeypatch.setattr(Trainer, "train_epoch", lambda *args: math.nan)
    with pytest.raises(ValueError, match=r"diverged in epoch 1: the loss is nan; lower train.lr \(now 0.001\)"):
        Trainer(load_config(RunConfig, None, FAST), progress=False).fit(tiny())


@pytest.mark.parametrize("model", ["freedom", "vbpr"])
def test_a_multimodal_backbone_on_data_without_features_fails_with_advice_that_loads(tmp_path, model):
    out = tmp_path / "run"
    line = assert_input_error(invoke("train", "--dataset", "ml-100k", "--model", model, "--out", out, "--quiet"),
                              f"{model} reads item features, but this data has none", "model.modalities=[]")
    assert not out.exists()
    for advice in ("data.modalities=[text]", "model.modalities=[]"):   # both settings the message names parse
        run = load_config(RunConfig, None, [f"model.name={model}", advice])
        assert run.data.modalities == ["text"] or run.model.modalities == []
