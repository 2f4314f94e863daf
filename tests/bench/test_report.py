"""`bench report`: one Markdown table per (dataset, backbone, request) and per stream, the noise floor, the
reused timings, Suppress flagged where it passes a forgetting measure, and the PNG plots."""
from __future__ import annotations

import copy
import json

import pytest

from recunlearn.bench import aggregate
from recunlearn.bench.report import NOT_EVIDENCE, STREAM_COLUMNS, TABLE_COLUMNS, write_report

PLOTS = ("utility_vs_time.png", "mia_gap.png", "stream_utility.png", "total_cost.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def header(columns) -> str:
    return "| " + " | ".join(columns) + " |"


def table_rows(text: str, title: str) -> list[list[str]]:
    """The body rows of the table under the heading that starts with `title`."""
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]   # after the rule


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = write_report(tiny_run.path, out)
    return path, path.read_text()


def test_report_writes_one_table_per_setting_and_stream_with_the_expected_columns(report):
    path, text = report
    assert path.name == "report.md"
    assert text.count(header(TABLE_COLUMNS)) == 2            # random and adversarial
    assert text.count(header(STREAM_COLUMNS)) == 1
    for title in ("tiny / lightgcn / random:0.05", "tiny / lightgcn / adversarial:1.0"):
        rows = table_rows(text, title)
        assert [row[0] for row in rows] == ["original", "retrain", "finetune", "suppress"]
        assert all(len(row) == len(TABLE_COLUMNS) for row in rows)
        retrain = dict(zip(TABLE_COLUMNS, rows[1]))
        assert retrain["× Retrain"].startswith("1.000") and retrain["seeds"] == "0, 1"
        assert "±" in retrain["Recall@20"]                    # mean ± std over the two seeds


def test_report_prints_the_noise_floor_and_the_timing_provenance(report, tiny_run):
    _, text = report
    assert text.count("Noise floor (3 independent retrains of seed 0's request, seeds 1, 2, 3)") == 2
    group = aggregate.groups(tiny_run.rows)[0]
    floor = aggregate.noise_floor(group)
    assert f"max |ΔMIA AUC| = {floor['mia_auc']:.4f}" in text
    assert text.count("Timings reused from a cache:") == 3
    assert "validation and evaluation passes" in text       # what Retrain's clock leaves out
    assert text.count("Only 2 seed(s): not a headline table") == 2


def test_report_draws_the_plots(report):
    path, text = report
    for name in PLOTS:
        image = path.parent / name
        assert image.read_bytes()[:8] == PNG_MAGIC, name
        assert f"]({name})" in text


def test_a_forgetting_measure_that_suppress_passes_is_flagged_not_evidence(tiny_run, tmp_path):
    """Where the control meets a measure, the table says so next to the control's value, and only there."""
    rows = copy.deepcopy(tiny_run.rows)
    for row in rows:
        if row["request"] == "random:0.05" and row["method"] in ("suppress", "finetune"):
            row["metrics"]["mia_auc_gap"] = 0.001   # both "pass" the MIA gap
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(row) + "\n" for row in rows))
    text = write_report(edited, tmp_path / "out", plots=False).read_text()
    cells = {row[0]: dict(zip(TABLE_COLUMNS, row)) for row in table_rows(text, "tiny / lightgcn / random:0.05")}
    assert cells["suppress"]["MIA gap"] == f"0.001 ± 0.000 ({NOT_EVIDENCE})"
    assert NOT_EVIDENCE not in cells["finetune"]["MIA gap"]
    assert "suppress (parameters unchanged, forgotten pairs hidden at serving time) passes MIA gap" in text


def test_report_refuses_a_file_without_harness_lines(tmp_path):
    other = tmp_path / "old.jsonl"
    other.write_text(json.dumps({"bench": "quality", "dataset": "ml-1m"}) + "\n")
    with pytest.raises(ValueError, match="no benchmark result lines"):
        write_report(other, tmp_path / "out")


def test_the_difference_attack_is_a_column(tiny_run, tmp_path):
    """The difference attack (on original − unlearned scores) appears beside the other forgetting measures,
    with the value each row recorded."""
    text = write_report(tiny_run.path, tmp_path / "diff", plots=False).read_text()
    cells = {row[0]: dict(zip(TABLE_COLUMNS, row)) for row in table_rows(text, "tiny / lightgcn / random:0.05")}
    assert "difference-attack AUC" in TABLE_COLUMNS
    assert all(0.0 <= float(cell["difference-attack AUC"].split(" ")[0]) <= 1.0 for cell in cells.values()
               if cell["difference-attack AUC"] != "-")
    assert float(cells["suppress"]["difference-attack AUC"].split(" ")[0]) > 0.9   # hidden scores dropped to the floor
