"""Your own data files wherever a dataset name is accepted: train, request make, unlearn and evaluate a model
of a CSV file, which its checkpoints reload by the recorded path."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from recunlearn.cli import app
from recunlearn.train.checkpoint import load_checkpoint, read_meta

TRAIN = ["--quiet", "--set", "train.epochs=2", "--set", "train.batch_size=512", "--set", "train.lr=0.01",
         "--set", "model.dim=8"]


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def own_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    users = np.repeat([f"u{k}" for k in range(40)], 15)
    items = [f"item-{i}" for i in rng.integers(0, 60, users.size)]
    lines = ["user,item"] + sorted({f"{u},{i}" for u, i in zip(users, items)})
    path = tmp_path / "clicks.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_own_csv_trains_unlearns_and_reloads(own_csv, tmp_path):
    model_dir, request, out = tmp_path / "model", tmp_path / "forget-u3.json", tmp_path / "unlearned"
    invoke("train", "--data", own_csv, *TRAIN, "--out", model_dir)
    run = read_meta(model_dir)["run"]
    assert run["data"]["path"] == str(own_csv.resolve()) and run["data"]["name"] == "clicks"
    invoke("request", "make", "--data", own_csv, "--spec", "user:0.05", "--seed", "1", "--out", request)
    record = json.loads(request.read_text())
    assert record["dataset"] == "clicks" and record["size"] > 0
    assert all(user.startswith("u") for user in record["edges"]["user"])
    invoke("unlearn", "--checkpoint", model_dir, "--method", "finetune", "--request", request, "--out", out, "--quiet")
    # the unlearned checkpoint reloads its data from the recorded file, without any dataset name
    _, _, data, _ = load_checkpoint(out)
    assert len(data.train) == len(load_checkpoint(model_dir)[2].train) - record["size"]
    result = invoke("evaluate", "--checkpoint", out)
    assert "Recall@20" in result.stdout
    result = invoke("recommend", "--checkpoint", out, "--user", "u0", "-k", "3")
    assert "item-" in result.stdout


def test_a_folder_with_two_files_for_one_split_names_both_and_trains_nothing(tmp_path):
    folder = tmp_path / "clicks"
    folder.mkdir()
    rows = "user,item\n" + "".join(f"u{u},i{(u * 7 + k) % 30}\n" for u in range(20) for k in range(6))
    for name in ("train.csv", "train.txt", "test.csv"):   # e.g. an older export left beside the new one
        (folder / name).write_text(rows)
    result = CliRunner().invoke(app, ["train", "--data", str(folder), *TRAIN, "--out", str(tmp_path / "model")])
    assert result.exit_code == 2, result.output
    assert "2 train files (train.csv, train.txt): keep one train.* file" in " ".join(result.output.split())
    assert not (tmp_path / "model").exists()
