"""`recunlearn bench run` / `bench report` from the command line: input errors as one line, a small suite on
ml-100k end to end (the default dataset loader), resuming, and the report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recunlearn.bench.results import read_rows
from recunlearn.cli import app
from cli_helpers import assert_input_error

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
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


# --- input errors found before any work, leaving nothing on disk -----------------------------------

OLDER_RECORD = '{"bench": "quality", "dataset": "ml-1m"}'   # a free-form line: the report skips it


@pytest.mark.parametrize("line, problem", [("5", "found the number 5"), ("[1, 2]", "found an array"),
                                           ('{"schema": 1}', "lacks suite, unit"),
                                           ('{"schema": 1, "suite": "s"}', "lacks unit")])
def test_a_results_line_that_is_not_a_result_is_one_line_naming_its_file_and_line(tmp_path, line, problem):
    results, out = tmp_path / "r.jsonl", tmp_path / "report"
    results.write_text(f"{OLDER_RECORD}\n{line}\n")
    assert_input_error(invoke("bench", "report", results, "--out", out), f"{results}:2: ", problem)
    assert not out.exists()


@pytest.mark.parametrize("key, value, problem", [("metrics", 5, "`metrics` should be an object, found the number 5"),
                                                ("timings", [], "`timings` should be an object, found an array"),
                                                ("stream", "x", "`stream` should be an object or null"),
                                                ("seed", True, "`seed` should be an integer, found true"),
                                                ("seed", 1.5, "`seed` should be an integer, found the number 1.5")])
def test_a_result_line_with_a_value_of_the_wrong_type_is_one_line_of_error(tmp_path, key, value, problem):
    """The report would otherwise fail deep inside with a traceback (or count True as seed 1)."""
    row = json.loads((RESULTS / "baselines-quick.jsonl").read_text().splitlines()[0])
    results, out = tmp_path / "r.jsonl", tmp_path / "report"
    results.write_text(json.dumps({**row, key: value}) + "\n")
    assert_input_error(invoke("bench", "report", results, "--out", out), f"{results}:1: ", problem)
    assert not out.exists()


def test_every_recorded_results_file_reads():
    """The committed results (the figures of BENCHMARKS.md) pass the same checks as new ones."""
    for path in sorted(RESULTS.glob("*.jsonl")):
        read_rows(path)


def test_a_report_without_result_lines_leaves_no_folder(tmp_path):
    results, out = tmp_path / "old.jsonl", tmp_path / "report"
    results.write_text(OLDER_RECORD + "\n")
    assert_input_error(invoke("bench", "report", results, "--out", out), "no benchmark result lines")
    assert not out.exists()


def test_a_report_out_that_is_a_file_is_one_line_of_error(tmp_path):
    results, out = tmp_path / "r.jsonl", tmp_path / "taken"
    results.write_text(OLDER_RECORD + "\n")
    out.write_text("mine\n")
    assert_input_error(invoke("bench", "report", results, "--out", out), str(out), "is a file")
    assert out.read_text() == "mine\n"


@pytest.mark.parametrize("change, problem", [
    ("datasets: [{name: own, path: /nonexistent.csv}]", "path /nonexistent.csv does not exist"),
    ("datasets: [nosuchds]", "unknown dataset 'nosuchds'"),
    ("audit: {ks: [0]}", "every K must be at least 1")])
def test_a_suite_that_names_no_data_or_a_bad_cutoff_fails_before_any_work(tmp_path, monkeypatch, change, problem):
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))
    suite, results = tmp_path / "bad.yaml", tmp_path / "r.jsonl"
    key = change.split(":")[0]
    suite.write_text("".join(line + "\n" for line in SMALL.splitlines() if not line.startswith(key + ":")) + change)
    assert_input_error(invoke("bench", "run", suite, "--out", results), problem)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_run_out_that_is_a_folder_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))
    suite, out = tmp_path / "small.yaml", tmp_path / "results"
    suite.write_text(SMALL)
    out.mkdir()
    assert_input_error(invoke("bench", "run", suite, "--out", out), f"--out {out} is a folder")
    assert list(out.iterdir()) == [] and not (tmp_path / "cache").exists()


def test_a_damaged_results_file_fails_before_any_work_and_is_left_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))
    suite, results = tmp_path / "small.yaml", tmp_path / "r.jsonl"
    suite.write_text(SMALL)
    results.write_text("5\n")
    assert_input_error(invoke("bench", "run", suite, "--out", results, "--quiet"), f"{results}:1: ",
                       "found the number 5")
    assert results.read_text() == "5\n" and not (tmp_path / "cache").exists()


def test_a_dataset_file_that_cannot_be_read_is_one_line_of_error(tmp_path, monkeypatch):
    """A DataError during the run (here loading the data, before any training) names the suite's dataset."""
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))
    suite, results, data = tmp_path / "own.yaml", tmp_path / "r.jsonl", tmp_path / "bad.csv"
    data.write_text("a,b,c,d,e,f,g\n")
    suite.write_text(SMALL.replace("datasets: [ml-100k]", f"datasets: [{{name: own, path: {data}}}]"))
    assert_input_error(invoke("bench", "run", suite, "--out", results, "--quiet"), "dataset 'own'", str(data))
    assert not results.exists()


def test_a_line_cut_short_is_one_line_of_warning_and_the_rest_is_reported(tmp_path):
    """An interrupted write leaves a last line cut short: the report skips it with one warning line that names
    the file and line (not Python's two-line warning with a source line of the library)."""
    rows = [line for line in (RESULTS / "baselines-quick.jsonl").read_text().splitlines() if line.strip()]
    results = tmp_path / "r.jsonl"
    results.write_text("\n".join(rows) + "\n" + rows[0][: len(rows[0]) // 2])
    result = invoke("bench", "report", results, "--out", tmp_path / "report", "--no-plots")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if "not a complete JSON line" in line]
    assert warned == [f"warning: {results}, line {len(rows) + 1}: not a complete JSON line (an interrupted "
                      "write?); skipped"], result.output
    assert "warnings.warn" not in result.output and (tmp_path / "report" / "report.md").is_file()
