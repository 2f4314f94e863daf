"""Damaged checkpoint files give one clear error that names the file and the remedy: training-set edits, torch
files that are corrupt (not refused as unsafe) and resume states of another format (`train --resume`).

One tiny checkpoint of a generated CSV file (one epoch, dim 8), trained through the CLI, is damaged in copies.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import assert_input_error
from recunlearn.cli import app
from recunlearn.train.checkpoint import CheckpointError, load_checkpoint, load_tensors, save_checkpoint
from recunlearn.train.trainer import TRAINER_STATE, Trainer

TRAIN = ["--quiet", "--set", "train.epochs=1", "--set", "train.batch_size=512", "--set", "model.dim=8"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(a checkpoint trained on a CSV file, with its resume state; the CSV file)."""
    folder = tmp_path_factory.mktemp("damaged")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECUNLEARN_CACHE", str(folder / "cache"))
        mp.setenv("RECUNLEARN_LOCKS", str(folder / "locks"))
        rng = np.random.default_rng(0)
        users = np.repeat([f"u{k}" for k in range(30)], 10)
        items = [f"i{i}" for i in rng.integers(0, 40, users.size)]
        csv = folder / "clicks.csv"
        csv.write_text("\n".join(["user,item"] + sorted({f"{u},{i}" for u, i in zip(users, items)})) + "\n")
        result = invoke("train", "--data", csv, *TRAIN, "--out", folder / "model")
        assert result.exit_code == 0, result.output
        yield folder / "model", csv


@pytest.fixture
def copy(trained, tmp_path, monkeypatch):
    """A fresh copy of the trained checkpoint (and private cache and locks) for one test to damage."""
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RECUNLEARN_LOCKS", str(tmp_path / "locks"))
    return shutil.copytree(trained[0], tmp_path / "ckpt")


# ------------------------------------------------------------------------------------------ training-set edits

@pytest.fixture
def edited(copy):
    """The copy rewritten with an edited training set (10 training pairs removed): it has a train_edits.npz."""
    model, run, data, _ = load_checkpoint(copy)
    removed = data.train.select(np.arange(len(data.train)) < 10)
    save_checkpoint(copy, model, run, data.with_train(data.train.subtract(removed)))
    assert (copy / "train_edits.npz").is_file()
    return copy


def truncate(file, keep: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_edits_file_is_a_clear_error(edited):
    truncate(edited / "train_edits.npz")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(edited)
    assert str(edited / "train_edits.npz") in str(err.value)
    assert "damaged: write it again" in str(err.value)


def test_an_edits_file_without_its_arrays_is_a_clear_error(edited):
    np.savez(edited / "train_edits.npz", added_users=np.zeros(0, np.int64))
    with pytest.raises(CheckpointError, match="added_items") as err:
        load_checkpoint(edited)
    assert str(edited / "train_edits.npz") in str(err.value) and "write it again" in str(err.value)


def test_evaluate_reports_damaged_edits_in_one_line(edited):
    truncate(edited / "train_edits.npz")
    assert_input_error(invoke("evaluate", "--checkpoint", edited), "train_edits.npz", "write it again")


# ----------------------------------------------------------------------------------------------- torch files

def test_a_corrupt_torch_file_is_damaged_not_unsafe(tmp_path):
    (tmp_path / "weights.pt").write_text("garbage\n")
    with pytest.raises(CheckpointError) as err:
        load_tensors(tmp_path, "weights")
    message = str(err.value)
    assert str(tmp_path / "weights.pt") in message
    assert "damaged" in message and "write the checkpoint again" in message
    assert "run code" not in message and "refused" not in message


class Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_torch_file_that_would_run_code_is_refused(tmp_path):
    torch.save({"x": Payload()}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="refused to load: it holds more than plain tensors") as err:
        load_tensors(tmp_path, "weights")
    assert str(tmp_path / "weights.pt") in str(err.value)


# ------------------------------------------------------------------------------------------------ resuming

@pytest.fixture
def interrupted(copy):
    """The copy as a run stopped after its first epoch leaves it: with the state to resume from."""
    _, run, data, _ = load_checkpoint(copy)
    Trainer(run, progress=False, checkpoint_dir=copy).fit(data)
    assert (copy / f"{TRAINER_STATE}.pt").is_file()
    return copy


def resume(trained, folder):
    return invoke("train", "--data", trained[1], *TRAIN, "--set", "train.epochs=2", "--out", folder, "--resume")


def test_resuming_from_a_state_of_an_older_format_names_the_file_and_the_remedy(trained, interrupted):
    state = load_tensors(interrupted, TRAINER_STATE)
    del state["current"]
    torch.save(state, interrupted / f"{TRAINER_STATE}.pt")
    line = assert_input_error(resume(trained, interrupted), f"{TRAINER_STATE}.pt", "KeyError: current",
                              "train without --resume")
    assert str(interrupted / f"{TRAINER_STATE}.pt") in line


def test_resuming_from_a_damaged_state_says_to_start_over(trained, interrupted):
    (interrupted / f"{TRAINER_STATE}.pt").write_text("garbage\n")
    line = assert_input_error(resume(trained, interrupted), f"{TRAINER_STATE}.pt", "damaged",
                              "train without --resume")
    assert "write the checkpoint again" not in line


@pytest.mark.parametrize("file", ["config.json", "weights.pt", "train_edits.npz"])
def test_a_file_that_cannot_be_read_for_want_of_permission_is_named_as_such(edited, monkeypatch, file):
    """An access problem is not damage: the CLI says permission denied, not "write it again". Tests run as root,
    where chmod does not deny, so opening the one file is patched."""
    denied = edited / file
    real_open = open

    def guarded_open(name, *args, **kwargs):
        if str(name) == str(denied):
            raise PermissionError(13, "Permission denied", str(denied))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    monkeypatch.setattr("io.open", guarded_open)   # what pathlib opens with
    result = invoke("evaluate", "--checkpoint", edited)
    assert_input_error(result, str(denied), "permission denied")
    assert "damaged" not in result.output and "write it again" not in result.output
