"""The `recunlearn` command end to end on ml-100k: datasets, train, evaluate, recommend, and input errors."""
from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from recunlearn.cli import app
from recunlearn.data.registry import load_dataset
from recunlearn.train.checkpoint import read_meta
from cli_helpers import assert_input_error

TINY = ["--quiet", "--set", "train.epochs=2", "--set", "train.batch_size=8192"]
METRIC_ROW = re.compile(r"│\s*((?:Recall|NDCG|Precision|HR)@\d+)\s*│\s*([0-9.]+)\s*│")


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def metric_rows(output: str) -> dict[str, float]:
    """{"Recall@20": 0.1, ...} from the first value column of a metrics table."""
    return {name: float(value) for name, value in METRIC_ROW.findall(output)}


def recommended_items(output: str, user: str) -> list[tuple[int, str]]:
    """(rank, item label) rows of the `recommend` table for one user (titles may wrap onto more lines)."""
    return [(int(rank), item) for rank, item in re.findall(rf"│\s*{user}\s*│\s*(\d+)\s*│\s*(\S+)\s*│", output)]


@pytest.fixture(scope="module")
def ml100k(data_root):
    return load_dataset("ml-100k", data_root)


@pytest.fixture(scope="module")
def checkpoint(data_root, tmp_path_factory):
    """One tiny training run through the command line, shared by the tests of this file."""
    out = tmp_path_factory.mktemp("cli") / "lightgcn"
    result = invoke("train", "--dataset", "ml-100k", "--model", "lightgcn", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result


# -------------------------------------------------------------------------------------------------- datasets

def test_datasets_lists_every_dataset_with_statistics(data_root, tmp_path):
    (tmp_path / "ml-100k").symlink_to(data_root / "ml-100k")   # only ml-100k present: fast
    result = invoke("datasets", "--root", tmp_path)
    assert result.exit_code == 0, result.output
    for name in ("ml-100k", "ml-1m", "gowalla", "yelp2018", "tiktok"):
        assert name in result.stdout
    row = next(line for line in result.stdout.splitlines() if "ml-100k" in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[:7] == ["ml-100k", "present", "943", "1682", "80808", "9596", "9596"]
    assert float(cells[7]) == pytest.approx(100_000 / (943 * 1682), abs=1e-4)
    assert "missing" in next(line for line in result.stdout.splitlines() if "gowalla" in line)


# ----------------------------------------------------------------------------------------------------- train

def test_train_writes_a_checkpoint_and_reports_metrics(checkpoint, ml100k):
    out, result = checkpoint
    assert (out / "config.json").is_file() and (out / "weights.pt").is_file()
    meta = read_meta(out)
    assert meta["run"]["train"]["epochs"] == 2 and meta["run"]["train"]["batch_size"] == 8192
    assert meta["run"]["model"]["name"] == "lightgcn" and meta["dataset"] == "ml-100k"
    assert meta["data_hash"] == ml100k.hash
    assert [r["epoch"] for r in meta["history"]] == [1, 2]
    assert meta["metrics"]["epochs_run"] == 2
    assert 0.05 < meta["metrics"]["test"]["Recall@20"] < 0.5
    assert f"checkpoint written to {out}" in result.stdout
    # the resolved config is printed first, the metrics with readable names last
    assert '"batch_size": 8192' in result.stdout
    table = result.stdout[result.stdout.index("lightgcn on ml-100k"):]
    assert "valid" in table and "test" in table
    assert metric_rows(table)["Recall@20"] == pytest.approx(meta["metrics"]["valid"]["Recall@20"], abs=5e-5)
    assert "it/s" not in result.output        # --quiet: no progress bars


def test_train_flags_beat_the_config_file_and_set_beats_both(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("data:\n  name: ml-1m\nmodel:\n  name: mf\n")
    # --model lightgcn wins over the file's mf: `layers` is a LightGCN key, so the error is about its value
    result = invoke("train", "--config", file, "--model", "lightgcn", "--set", "model.layers=abc", "--out", tmp_path / "x")
    assert_input_error(result, "model.layers", "valid integer")
    # --dataset wins over the file's ml-1m
    result = invoke("train", "--config", file, "--dataset", "nosuch", "--out", tmp_path / "x", "--quiet")
    assert_input_error(result, "unknown dataset 'nosuch'")
    # --set wins over --model
    result = invoke("train", "--model", "lightgcn", "--set", "model.name=mf", "--set", "model.layers=2",
                    "--out", tmp_path / "x")
    assert_input_error(result, "model.layers: unknown key")
    assert not (tmp_path / "x").exists()


# -------------------------------------------------------------------------------------------------- evaluate

def test_evaluate_prints_the_test_metrics(checkpoint):
    out, _ = checkpoint
    result = invoke("evaluate", "--checkpoint", out)
    assert result.exit_code == 0, result.output
    shown = metric_rows(result.stdout)
    expected = read_meta(out)["metrics"]["test"]
    assert {"Recall@10", "Recall@20", "NDCG@10", "NDCG@20"} <= set(shown)
    for name in ("Recall@20", "NDCG@20", "Recall@10", "NDCG@10"):
        assert shown[name] == pytest.approx(expected[name], abs=5e-5)


def test_evaluate_json_out_appends_one_parseable_line_per_run(checkpoint, ml100k, tmp_path):
    out, _ = checkpoint
    results = tmp_path / "results.jsonl"
    for ks in (["--k", "5"], ["--k", "20"]):
        assert invoke("evaluate", "--checkpoint", out, *ks, "--json-out", results).exit_code == 0
    lines = results.read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first["metrics"]) == {"Recall@5", "NDCG@5", "Precision@5", "HR@5", "users"}
    assert second["metrics"]["Recall@20"] == pytest.approx(read_meta(out)["metrics"]["test"]["Recall@20"])
    assert (second["dataset"], second["model"], second["data_hash"]) == ("ml-100k", "lightgcn", ml100k.hash)
    assert second["metrics"]["users"] == 943


# ------------------------------------------------------------------------------------------------- recommend

def test_recommend_prints_k_unseen_items(checkpoint, ml100k):
    out, _ = checkpoint
    result = invoke("recommend", "--checkpoint", out, "--user", "1", "-k", "5")
    assert result.exit_code == 0, result.output
    rows = recommended_items(result.stdout, "1")
    assert [rank for rank, _ in rows] == [1, 2, 3, 4, 5]
    items = ml100k.item_ids.index([item for _, item in rows], kind="item")
    assert len(set(items.tolist())) == 5
    user = ml100k.user_ids.index(["1"], kind="user")
    seen = ml100k.train.union(ml100k.valid)
    assert not seen.contains(user.repeat(5), items).any()
    assert "title" in result.stdout     # ml-100k ships movie titles


def test_recommend_for_several_users(checkpoint):
    out, _ = checkpoint
    result = invoke("recommend", "--checkpoint", out, "--user", "1", "--user", "42", "-k", "3")
    assert result.exit_code == 0, result.output
    assert len(recommended_items(result.stdout, "1")) == 3
    assert len(recommended_items(result.stdout, "42")) == 3


# ------------------------------------------------------------------------------------------------ bad input

def test_unknown_model_name(tmp_path):
    result = invoke("train", "--model", "ngcf", "--out", tmp_path / "x", "--quiet")
    assert_input_error(result, "'ngcf'", "lightgcn", "simgcl")


def test_unknown_dataset_name(tmp_path):
    result = invoke("train", "--dataset", "movielens", "--out", tmp_path / "x", "--quiet")
    assert_input_error(result, "unknown dataset 'movielens'", "ml-100k", "gowalla")


def test_unknown_config_key(tmp_path):
    result = invoke("train", "--set", "train.lrr=0.1", "--out", tmp_path / "x", "--quiet")
    assert_input_error(result, "train.lrr: unknown key")


def test_invalid_config_value(tmp_path):
    result = invoke("train", "--set", "train.lr=-1", "--out", tmp_path / "x", "--quiet")
    assert_input_error(result, "train.lr", "greater than 0")


@pytest.mark.parametrize("override, fragment", [("train.lr", "key=value"), ("train.lr=[1", "not valid YAML"),
                                                ("=1", "empty key")])
def test_malformed_set(tmp_path, override, fragment):
    result = invoke("train", "--set", override, "--out", tmp_path / "x", "--quiet")
    assert_input_error(result, fragment)


def test_bad_config_file(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("train: {epochs: 2\n")
    assert_input_error(invoke("train", "--config", file, "--out", tmp_path / "x"), "not valid YAML")
    assert_input_error(invoke("train", "--config", tmp_path / "none.yaml", "--out", tmp_path / "x"), "does not exist")


def test_missing_checkpoint_folder(tmp_path):
    missing = tmp_path / "no-such-run"
    for command in (["evaluate"], ["recommend", "--user", "1"]):
        result = invoke(*command, "--checkpoint", missing)
        assert_input_error(result, str(missing), "recunlearn train --out")


def test_unknown_user_id(checkpoint):
    out, _ = checkpoint
    result = invoke("recommend", "--checkpoint", out, "--user", "99999", "-k", "5")
    assert_input_error(result, "unknown user '99999'")


def test_list_length_out_of_range(checkpoint):
    out, _ = checkpoint
    assert_input_error(invoke("recommend", "--checkpoint", out, "--user", "1", "-k", "0"), "-k 0", "at least 1")


def test_messages_are_not_read_as_markup(tmp_path):
    result = invoke("train", "--set", "train.[bold]=1", "--out", tmp_path / "x")
    assert_input_error(result, "train.[bold]: unknown key")
    result = invoke("train", "--dataset", "[red]x[/red]", "--out", tmp_path / "x", "--quiet")
    assert_input_error(result, "unknown dataset '[red]x[/red]'")


def test_no_arguments_shows_the_commands():
    result = invoke()
    for command in ("datasets", "train", "evaluate", "recommend"):
        assert command in result.output


def _command_paths(group, prefix=()):
    import typer.main
    click_group = typer.main.get_command(group) if not hasattr(group, "commands") else group
    for name, command in click_group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _command_paths(command, (*prefix, name))


def test_every_help_page_renders():
    """Help texts are rich markup: a stray `[/...]` in one would crash that page."""
    paths = list(_command_paths(app))
    assert ("train",) in paths and ("bench", "run") in paths and ("request", "make") in paths
    for path in paths:
        result = invoke(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output
