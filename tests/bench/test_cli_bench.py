"""`recunlearn bench run` / `bench report` from the command line: input errors as one line, a small suite on
ml-100k end to end (the default dataset loader), resuming, and the report."""
from __future__ import annotations

from typer.testing import CliRunner

from recunlearn.bench.results import read_rows
from recunlearn.cli import app
from cli_helpers import assert_input_error

SMALL = """
name: cli
datasets: [ml-100k]
backbones: [lightgcn]
requests: [random:0.01]
seeds: [0]
model: {dim: 16}
train: {epochs: 2, batch_size: 8192, lr: 0.01}
noise_floor: {retrains: 3}
"""


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_suite_with_an_unknown_key_is_one_line_of_error(tmp_path):
    suite = tmp_path / "bad.yaml"
    suite.write_text(SMALL + "methods: [{name: finetune, set: {epochz: 2}}]\n")
    assert_input_error(invoke("bench", "run", suite, "--out", tmp_path / "r.jsonl"), "finetune", "epochz")
    assert not (tmp_path / "r.jsonl").exists()


def test_a_seed_outside_the_suite_is_one_line_of_error(tmp_path):
    suite = tmp_path / "small.yaml"
    suite.write_text(SMALL)
    assert_input_error(invoke("bench", "run", suite, "--seed", "3", "--out", tmp_path / "r.jsonl"), "seed 3")
    assert not (tmp_path / "r.jsonl").exists()


def test_a_missing_results_file_is_one_line_of_error(tmp_path):
    assert_input_error(invoke("bench", "report", tmp_path / "none.jsonl", "--out", tmp_path), "none.jsonl")


def test_run_then_report_on_ml100k(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))
    suite, results = tmp_path / "small.yaml", tmp_path / "small.jsonl"
    suite.write_text(SMALL)
    first = invoke("bench", "run", suite, "--out", results, "--threads", "1", "--quiet")
    assert first.exit_code == 0, first.output
    rows = read_rows(results)
    # the reference, the original, the Suppress control added by the harness, 3 noise-floor retrains
    assert sorted(row["role"] for row in rows) == ["method", "noise_floor", "noise_floor", "noise_floor",
                                                   "original", "reference"]
    assert [line for line in first.output.splitlines() if line.startswith("run ")][0].startswith("run 1 of 6: ")
    again = invoke("bench", "run", suite, "--out", results, "--quiet")
    assert again.exit_code == 0 and "0 units run, 6 already done" in again.output
    report = invoke("bench", "report", results, "--out", tmp_path / "report")
    assert report.exit_code == 0, report.output
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## ml-100k / lightgcn / random:0.01 (cli)" in text and "Noise floor (3 independent retrains" in text
