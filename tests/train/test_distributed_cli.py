"""`recunlearn train --nproc N` on ml-100k: one process is the plain trainer bit for bit, two local gloo ranks
write a complete checkpoint that loads and holds the one-process weights to float summation order, and
settings no rank could train with fail at once with one line."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from recunlearn.cli import app
from recunlearn.train.checkpoint import load_checkpoint, read_meta
from recunlearn.train import runs
from recunlearn.train.trainer import Trainer
from cli_helpers import assert_input_error

# two epochs of about ten batches of 8,192 edges (two ranks: a half of each batch)
TINY = ["--dataset", "ml-100k", "--quiet", "--set", "train.epochs=2", "--set", "train.batch_size=8192"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def trained_on(nproc: int, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"nproc{nproc}") / "ckpt"
    result = invoke("train", *TINY, "--nproc", nproc, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def one_process(data_root, tmp_path_factory):
    return trained_on(1, tmp_path_factory)


@pytest.fixture(scope="module")
def two_processes(data_root, tmp_path_factory):
    return trained_on(2, tmp_path_factory)


def test_one_process_is_the_plain_trainer_bit_for_bit(one_process):
    model, run, data, _ = load_checkpoint(one_process)
    assert run.train.nproc == 1
    plain, _ = Trainer(run, progress=False).fit(data)
    assert all(torch.equal(model.state_dict()[k], plain.state_dict()[k]) for k in plain.state_dict())


def test_two_processes_write_a_complete_checkpoint_that_loads_with_the_one_process_weights(one_process,
                                                                                           two_processes):
    meta = read_meta(two_processes)
    assert meta["complete"] and meta["run"]["train"]["nproc"] == 2
    assert not (two_processes / "trainer_state.pt").exists()    # the finished run's folder, as one process leaves it
    model, run, data, _ = load_checkpoint(two_processes)
    reference, _, _, _ = load_checkpoint(one_process)
    for name, weights in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], weights, rtol=1e-4, atol=1e-5)
    recorded = meta["metrics"]["test"]
    assert runs.test_metrics(model, data, run.eval.ks)["Recall@20"] == pytest.approx(recorded["Recall@20"], abs=1e-9)


def test_no_process_is_refused():
    assert_input_error(invoke("train", "--nproc", 0, "--out", "unused"), "--nproc 0", "at least 1")


def test_more_processes_than_a_batch_has_triples_are_refused():
    result = invoke("train", "--nproc", 3, "--set", "train.batch_size=2", "--out", "unused")
    assert_input_error(result, "train.nproc=3", "train.batch_size >= 3")


def test_a_backbone_whose_loss_couples_the_batch_is_refused():
    result = invoke("train", "--model", "sgl", "--nproc", 2, "--out", "unused")
    assert_input_error(result, "sgl", "train.nproc=1")
