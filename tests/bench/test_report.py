"""`bench report`: one Markdown table per (dataset, backbone, request) and per stream, the noise floor, the
reused timings, Suppress flagged where it passes a forgetting measure, and the PNG plots."""
from __future__ import annotations

import copy
import json
import math

import pytest

from recunlearn.bench import aggregate
from recunlearn.bench.report import NOT_COMPARABLE, NOT_EVIDENCE, STREAM_COLUMNS, TABLE_COLUMNS, write_report

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


# ------------------------------------------------------------------------------- rows the rules single out

def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def finetune_cell(text: str, column: str) -> str:
    cells = {row[0]: dict(zip(TABLE_COLUMNS, row)) for row in table_rows(text, "tiny / lightgcn / random:0.05")}
    return cells["finetune"][column]


@pytest.mark.parametrize("newer_first", [True, False])
def test_a_unit_run_twice_is_read_from_its_newest_line_whatever_the_order_of_the_files(tiny_run, tmp_path,
                                                                                         newer_first):
    """An older run of the same unit (another code version, an older file named beside the newer one) is set
    aside by date, not by which file comes last, and the report says how many lines it set aside."""
    older = copy.deepcopy(tiny_run.rows)
    for row in older:
        row["date"], row["code_version"] = "2000-01-01T00:00:00+00:00", "0.0.1+old"
        row["metrics"]["mia_auc_gap"] = 0.987   # what a stale run would say
    files = [write_rows(tmp_path / "newer.jsonl", tiny_run.rows), write_rows(tmp_path / "older.jsonl", older)]
    text = write_report(files if newer_first else files[::-1], tmp_path / "out", plots=False).read_text()
    assert "0.987" not in finetune_cell(text, "MIA gap")
    assert f"Set aside: {len(older)} older line(s)" in text and "0.0.1+old" in text


def test_the_noise_floor_compares_retrains_of_one_request_only(tiny_run):
    """Floor retrains of another request seed (a rerun with another first seed) are not paired with these: the
    floor stays the spread among the retrains of one residual."""
    group = copy.deepcopy(aggregate.groups(tiny_run.rows)[0])
    alone = aggregate.noise_floor(group)
    others = copy.deepcopy(group.retrains[:2])
    for row in others:
        row["seed"], row["metrics"]["mia_auc"] = 7, 0.0   # far from every retrain of the first request
    group.retrains += others
    mixed = aggregate.noise_floor(group)
    assert mixed["mia_auc"] == alone["mia_auc"] and mixed["seeds"] == alone["seeds"]
    assert mixed["request_seed"] == alone["request_seed"] == 0


def test_the_largest_gap_leaves_out_what_a_row_did_not_measure():
    """A retrain without a MIA AUC (written as null, or NaN) neither breaks the floor nor, by its position,
    changes it."""
    assert aggregate.max_pairwise_gap([float("nan"), 0.5, 0.6]) == pytest.approx(0.1)
    assert aggregate.max_pairwise_gap([0.5, 0.6, float("nan")]) == pytest.approx(0.1)
    assert aggregate.max_pairwise_gap([None, 0.5, 0.6]) == pytest.approx(0.1)
    assert math.isnan(aggregate.max_pairwise_gap([None, 0.5]))


def test_a_floor_from_fewer_than_three_retrains_says_so(tiny_run, tmp_path):
    rows = [row for row in tiny_run.rows if not (row["role"] == "noise_floor" and row["retrain_seed"] == 3)]
    text = write_report(write_rows(tmp_path / "two.jsonl", rows), tmp_path / "out", plots=False).read_text()
    assert text.count("Only 2 retrains: evaluation.md rule 2 asks for 3 at least.") == 2
    full = write_report(tiny_run.path, tmp_path / "full", plots=False).read_text()
    assert "retrains: evaluation.md rule 2" not in full


def test_rows_from_several_machines_are_named_and_a_method_timed_away_from_its_reference_breaks_rule_3(
        tiny_run, tmp_path):
    one = write_report(tiny_run.path, tmp_path / "one", plots=False).read_text()
    assert "machines (" not in one and "another machine" not in one
    rows = copy.deepcopy(tiny_run.rows)
    for row in rows:
        if row["seed"] == 1:   # seed 1 ran elsewhere, whole
            row["machine"] = "Other CPU, 2 cores, torch (1 threads), device cpu, 2026-01-01"
    text = write_report(write_rows(tmp_path / "two.jsonl", rows), tmp_path / "two", plots=False).read_text()
    assert "Rows from 2 machines" in text and "rule 3 broken): finetune" not in text
    for row in rows:
        if row["seed"] == 1 and row["method"] == "finetune":   # now only the method, not its reference
            row["machine"] = tiny_run.rows[0]["machine"]
    text = write_report(write_rows(tmp_path / "three.jsonl", rows), tmp_path / "three", plots=False).read_text()
    assert "Timed on another machine than their reference (evaluation.md rule 3 broken): finetune, seed 1" in text


def test_a_reused_timing_without_its_provenance_is_not_taken_as_comparable(tiny_run, tmp_path):
    rows = copy.deepcopy(tiny_run.rows)
    edited = next(row for row in rows if row["role"] == "method" and row["method"] == "finetune")
    edited["reused"]["unlearn"], edited["reused_from"] = True, {}
    text = write_report(write_rows(tmp_path / "r.jsonl", rows), tmp_path / "out", plots=False).read_text()
    assert (f"finetune unlearn, seed {edited['seed']}: where and under what load it was timed is not recorded"
            in text)


def test_a_stream_retrain_that_reuses_a_timing_records_where_it_was_timed(tiny_run):
    """The stream's Retrain row carries the provenance of a reused checkpoint timing, as a batch row does, so the
    report can check it (evaluation.md rule 3)."""
    streams = [row for row in tiny_run.rows if row["role"] == "stream" and row["method"] == "retrain"]
    # the last checkpoint's cumulative set is the batch request, whose retrain the cache already holds
    assert any(mark["reused"] for row in streams for mark in row["stream"]["checkpoints"])
    for row in streams:
        reused = [mark for mark in row["stream"]["checkpoints"] if mark["reused"]]
        assert row["reused"]["unlearn"] == bool(reused)
        if reused:
            assert "comparable" in row["reused_from"]["unlearn"]


def test_the_stream_table_carries_the_forget_rank_of_each_checkpoint(report, tiny_run):
    """Each stream row shows the checkpoint's forget-set rank (evaluation.md rule 5 holds for streams too), the
    mean over seeds of the recorded values at that step."""
    _, text = report
    stream = aggregate.stream_groups(tiny_run.rows)[0]
    rows = table_rows(text, stream.title)
    assert all(len(row) == len(STREAM_COLUMNS) for row in rows)
    for label in aggregate.methods(stream.rows):
        runs = aggregate.by_method(stream.rows, label)
        mine = [dict(zip(STREAM_COLUMNS, row)) for row in rows if row[0] == label]
        assert len(mine) == len(runs[0]["stream"]["checkpoints"])
        for position, cells in enumerate(mine):
            values = [run["stream"]["checkpoints"][position]["metrics"]["forget_rank_pct"] for run in runs]
            assert cells["forget rank"].startswith(f"{sum(values) / len(values):.3f}")
    assert "no noise floor of its own" in text


def test_timing_cells_resting_on_a_non_comparable_reused_timing_are_marked(tiny_run, tmp_path, report):
    """A reused timing that rule 3 does not allow marks the cells computed from it, and only those: the method's
    own seconds, speed-up and n*; a Retrain reference's marks its seconds and every method's speed-up."""
    title = "tiny / lightgcn / random:0.05"
    assert NOT_COMPARABLE not in report[1]          # the tiny run's reuses are its own measurements

    def cells_after(edit) -> dict:
        rows = copy.deepcopy(tiny_run.rows)
        edit(next(row for row in rows if row["role"] == edit.role and row["request"] == "random:0.05"))
        folder = tmp_path / edit.role
        text = write_report(write_rows(folder.with_suffix(".jsonl"), rows), folder, plots=False).read_text()
        assert "the cell's seconds include a timing reused from a cache" in text
        return {row[0]: dict(zip(TABLE_COLUMNS, row)) for row in table_rows(text, title)}

    def not_comparable(row):
        row["reused"]["unlearn"] = True
        row["reused_from"] = {"unlearn": {"comparable": False, "why": "timed under load 0.1, now 3.0"}}

    not_comparable.role = "method"
    cells = cells_after(not_comparable)
    edited = next(label for label, row in cells.items() if NOT_COMPARABLE in row["unlearn s"])
    assert NOT_COMPARABLE in cells[edited]["speed-up"]
    assert all(NOT_COMPARABLE not in value for label, row in cells.items() if label != edited
               for value in row.values())

    not_comparable.role = "reference"
    cells = cells_after(not_comparable)
    assert NOT_COMPARABLE in cells["retrain"]["unlearn s"] and NOT_COMPARABLE not in cells["retrain"]["speed-up"]
    for label in ("finetune", "suppress"):
        assert NOT_COMPARABLE in cells[label]["speed-up"] and NOT_COMPARABLE not in cells[label]["unlearn s"]
    assert all(NOT_COMPARABLE not in value for value in cells["original"].values())


def test_training_settings_are_compared_with_the_defaults_the_rows_ran_with(tiny_run, tmp_path):
    """A default changed since a run must not make its suite's settings look like overrides (or hide one): the
    report compares with the defaults each row records, and says so where a row does not record them."""
    rows = copy.deepcopy(tiny_run.rows)
    assert all(row["train_defaults"]["lr"] is not None for row in rows)
    suite_lr = rows[0]["run"]["train"]["lr"]
    for row in rows:
        row["train_defaults"]["lr"] = suite_lr          # the defaults of that day had the suite's lr
    text = write_report(write_rows(tmp_path / "same.jsonl", rows), tmp_path / "same", plots=False).read_text()
    line = next(line for line in text.splitlines() if line.startswith("Backbone training settings"))
    assert f"lr={suite_lr}" not in line and "current defaults" not in line
    for row in rows:
        del row["train_defaults"]                        # lines written before the defaults were recorded
    text = write_report(write_rows(tmp_path / "old.jsonl", rows), tmp_path / "old", plots=False).read_text()
    assert "compared with the current defaults" in text
