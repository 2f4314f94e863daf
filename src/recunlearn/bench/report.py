"""`recunlearn bench report`: Markdown tables from a results file, one per (dataset, backbone, request), and
one per stream; the plots beside them (`plots`).

Each table: rows are methods, cells mean ± std over seeds. Utility relative to Retrain, the forgetting
measures of evaluation.md rule 5 with the noise floor printed above them, the timings with preparation and
break-even, and a line naming every timing reused from a cache. A forgetting measure that the Suppress
control passes is marked "not evidence": hiding scores at serving time already meets it.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import aggregate
from .aggregate import Group, StreamGroup, by_method, mean_std, methods, noise_floor, passes, tolerance
from .results import read_rows

# (header, key, section, digits); the key is looked up in the row's `metrics` or `timings`.
COLUMNS = [("Recall@20", "Recall@20", "metrics", 4), ("× Retrain", "Recall@20_vs_retrain", "metrics", 3),
           ("NDCG@20", "NDCG@20", "metrics", 4), ("MIA AUC", "mia_auc", "metrics", 3),
           ("MIA gap", "mia_auc_gap", "metrics", 3), ("learned-attack gap", "mia_learned_auc_gap", "metrics", 3),
           # The attack on (original − unlearned) scores; Retrain's value is the reference, since a retrain
           # moves the forgotten edges' scores too.
           ("difference-attack AUC", "diff_auc", "metrics", 3),
           ("over-forgetting", "over_forgetting", "metrics", 3), ("forget rank", "forget_rank_pct", "metrics", 3),
           ("Jaccard@20", "jaccard@20_vs_retrain", "metrics", 3),
           ("neighbourhood Recall@20", "neighbourhood_Recall@20", "metrics", 4),
           ("unlearn s", "unlearn", "timings", 3), ("speed-up", "speedup", "metrics", 1),
           ("prepare s", "prepare", "timings", 2)]
TABLE_COLUMNS = ["method", "kind", "seeds", *(header for header, *_ in COLUMNS), "n*"]
# Measures a control can pass, by the header of their column.
FLAGGED = {"MIA gap": "mia_auc_gap", "learned-attack gap": "mia_learned_auc_gap",
           "over-forgetting": "over_forgetting", "Jaccard@20": "jaccard@20_vs_retrain"}
STREAM_COLUMNS = ["method", "step", "forgotten", "Recall@20", "× Retrain", "MIA gap", "over-forgetting",
                  "forget rank", "Jaccard@20", "cumulative s"]
NOT_EVIDENCE = "not evidence"
# Beside a timing cell whose seconds include a reused timing that rule 3 does not allow (named below the table).
NOT_COMPARABLE = "†"
# The timing cells, by header, and the timings each one is computed from ("reference": the Retrain reference's
# unlearn seconds of the same seed).
TIMING_SOURCES = {"unlearn s": ("unlearn",), "speed-up": ("unlearn", "reference"), "prepare s": ("prepare",),
                  "n*": ("prepare", "unlearn", "reference")}
HEADLINE_SEEDS = 3


def write_report(results: str | Path | list[str | Path], out: str | Path, plots: bool = True) -> Path:
    """report.md (and the PNG plots) in `out` from one or more results files."""
    files = [results] if isinstance(results, (str, Path)) else list(results)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder: name a folder for report.md and the plots")
    rows = [row for file in files for row in read_rows(file)]
    batch, streams = aggregate.groups(rows), aggregate.stream_groups(rows)
    if not batch and not streams:
        raise ValueError(f"no benchmark result lines in {', '.join(map(str, files))} (write them with "
                         "`recunlearn bench run SUITE.yaml`)")
    out.mkdir(parents=True, exist_ok=True)   # only now: a report that fails leaves no empty folder behind
    images = []
    if plots:
        from .plots import write_plots   # matplotlib only when plotting
        images = write_plots(batch, streams, out)
    text = render(batch, streams, images, files, aggregate.superseded(rows))
    path = out / "report.md"
    path.write_text(text)
    return path


def render(batch: list[Group], streams: list[StreamGroup], images: list[Path], files: list,
           set_aside: list[dict] = ()) -> str:
    lines = [f"# Benchmark report: {', '.join(sorted({g.suite for g in [*batch, *streams]}))}", "",
             f"From {', '.join(str(f) for f in files)}. Cells are mean ± std over seeds (sample std). Utility: "
             "full ranking on the test set with the residual training and validation items masked; forgetting "
             "measured against the Retrain reference (an independent retrain with another seed). Unlearn seconds: "
             "from the `unlearn` call to the first answered query, the same clock for every method. × Retrain: the "
             "method's Recall@20 over Retrain's (evaluation.md's relative change (method − retrain) / retrain is "
             "this minus 1). Speed-up: "
             "Retrain's seconds over the method's, per seed, then averaged; n* (requests to pay back preparation): "
             "mean prepare / (mean Retrain − mean request).", ""]
    if set_aside:
        codes = ", ".join(sorted({row["code_version"] for row in set_aside}))
        lines += [f"Set aside: {len(set_aside)} older line(s) of units that newer lines of these results replace "
                  f"(the newest by date is used; the older ones are of code {codes}).", ""]
    for group in batch:
        lines += group_table(group)
    for group in streams:
        lines += stream_table(group)
    if images:
        lines += ["## Plots", ""] + [f"![{image.stem}]({image.name})" for image in images] + [""]
    return "\n".join(lines)


# --- one-batch tables --------------------------------------------------------------------------------

def group_table(group: Group) -> list[str]:
    floor = noise_floor(group)
    lines = [f"## {group.title} ({group.suite})", "", context_line(group.rows), "", floor_line(floor), "",
             *machine_lines(group.rows)]
    seeds = {row["seed"] for row in group.rows}
    if len(seeds) < HEADLINE_SEEDS:
        lines += [f"Only {len(seeds)} seed(s): not a headline table (evaluation.md rule 6 asks for "
                  f"{HEADLINE_SEEDS} at least).", ""]
    reference = by_method(group.rows, "retrain")
    retrain_seconds = mean_std(reference, "unlearn", "timings")[0]
    reference_broken = {row["seed"] for row in reference if not _comparable(row, "unlearn")}
    table = [TABLE_COLUMNS, ["---"] * len(TABLE_COLUMNS)]
    notes = []
    marked = False
    for label in methods(group.rows):
        rows = by_method(group.rows, label)
        cells = method_cells(rows, retrain_seconds)
        for header, sources in TIMING_SOURCES.items():
            column = TABLE_COLUMNS.index(header)
            if rows[0]["role"] == "reference" and "reference" in sources:
                continue   # the reference against itself: 1.0 whatever its seconds
            if cells[column] not in ("-", "never") and _timing_broken(rows, sources, reference_broken):
                cells[column] += f" {NOT_COMPARABLE}"
                marked = True
        if rows[0]["kind"] == "control":
            passed = [header for header, key in FLAGGED.items() if passes(rows, floor)[key]]
            for header in passed:
                cells[TABLE_COLUMNS.index(header)] += f" ({NOT_EVIDENCE})"
            if passed:
                these = "this measure is" if len(passed) == 1 else "these measures are"
                notes.append(f"{label} (parameters unchanged, forgotten pairs hidden at serving time) passes "
                             f"{', '.join(passed)}: in this setting {these} {NOT_EVIDENCE} of forgetting.")
        table.append(cells)
    lines += ["| " + " | ".join(row) + " |" for row in table]
    if marked:
        notes.append(f"{NOT_COMPARABLE}: the cell's seconds include a timing reused from a cache that evaluation.md "
                     "rule 3 does not allow (listed below): read it as indicative only.")
    lines += ["", *notes, *timing_lines(group.rows), *settings_lines(group.rows), *check_lines(group.rows), ""]
    return [line for line in lines if line is not None]


def _reuse_break(row: dict, what: str) -> str | None:
    """Why `row`'s timing `what` breaks rule 3 (reused from a cache where it may not stand in), or None when it
    was measured in its run or reused comparably."""
    if not row["reused"].get(what):
        return None
    origin = row["reused_from"].get(what)
    if origin is None:
        return "where and under what load it was timed is not recorded"
    return None if origin.get("comparable") else origin.get("why") or "not comparable (no reason recorded)"


def _comparable(row: dict, what: str) -> bool:
    return _reuse_break(row, what) is None


def _timing_broken(rows: list[dict], sources: tuple[str, ...], reference_broken: set) -> bool:
    """Whether any seed's value in a timing cell rests on a reused timing that is not comparable."""
    return any(row["seed"] in reference_broken if what == "reference" else not _comparable(row, what)
               for row in rows for what in sources)


def method_cells(rows: list[dict], retrain_seconds: float) -> list[str]:
    first = rows[0]
    seeds = ", ".join(str(row["seed"]) for row in rows)
    cells = [first["method"], first["kind"], seeds]
    for header, key, section, digits in COLUMNS:
        if first["role"] == "original" and section == "timings":
            cells.append("-")
            continue
        cells.append(fmt(*mean_std(rows, key, section)[:2], digits))
    cells.append(break_even_cell(rows, retrain_seconds))
    return cells


def break_even_cell(rows: list[dict], retrain_seconds: float) -> str:
    """n* = prepare / (retrain − request) from the mean timings; "never" when a request is not cheaper."""
    if rows[0]["role"] != "method":
        return "-"
    prepare = mean_std(rows, "prepare", "timings")[0]
    request = mean_std(rows, "unlearn", "timings")[0]
    if not (math.isfinite(prepare) and math.isfinite(request) and math.isfinite(retrain_seconds)):
        return "-"
    if retrain_seconds <= request:
        return "never"
    return f"{prepare / (retrain_seconds - request):.2f}"


def fmt(mean: float, std: float = float("nan"), digits: int = 4) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    text = f"{mean:.{digits}f}" if abs(mean) < 1e4 else f"{mean:,.0f}"
    return f"{text} ± {std:.{digits}f}" if std is not None and math.isfinite(std) else text


def floor_line(floor: dict | None) -> str:
    if floor is None:
        return "Noise floor: not measured (fewer than 2 independent retrains in these results)."
    return (f"Noise floor ({floor['retrains']} independent retrains of seed {floor['request_seed']}'s request, "
            f"seeds {', '.join(map(str, floor['seeds']))}): max |ΔMIA AUC| = {floor['mia_auc']:.4f}, Recall@20 std "
            f"= {floor['Recall@20_std']:.4f}, max |Δforget rank| = {floor['forget_rank']:.4f}, lowest Jaccard@20 "
            f"between retrains = {fmt(floor['jaccard'], digits=3)}. A target \"within X of Retrain\" means within "
            f"max(X, floor): MIA gaps within ±{tolerance(floor['mia_auc']):.3f}."
            + (f" Only {floor['retrains']} retrains: evaluation.md rule 2 asks for {HEADLINE_SEEDS} at least."
               if floor["retrains"] < HEADLINE_SEEDS else ""))


def machine_of(row: dict) -> str:
    """The machine line without its date: what two timings must share to compare."""
    return row["machine"].rsplit(", ", 1)[0]


def machine_lines(rows: list[dict]) -> list[str]:
    """Evaluation.md rule 3 (the same machine) where a table's rows come from several: a method timed on
    another machine than its seed's reference breaks it; seeds on different machines make the mean seconds and
    n* mix machines, while each speed-up still compares one seed's timings."""
    machines = sorted({machine_of(row) for row in rows})
    if len(machines) < 2:
        return []
    references = {row["seed"]: machine_of(row) for row in rows if row["role"] == "reference"}
    broken = sorted({f"{row['method']}, seed {row['seed']}" for row in rows if row["role"] == "method"
                     and row["seed"] in references and machine_of(row) != references[row["seed"]]})
    out = [f"Rows from {len(machines)} machines ({'; '.join(machines)}): each speed-up compares timings of "
           "one seed, but the mean seconds and n* mix machines.", ""]
    if broken:
        out[0:0] = [f"Timed on another machine than their reference (evaluation.md rule 3 broken): "
                    f"{'; '.join(broken)}.", ""]
    return out


def context_line(rows: list[dict]) -> str:
    first = rows[0]
    sizes = sorted({row["request_size"] for row in rows})
    machines = sorted({row["machine"].rsplit(", ", 1)[0] for row in rows})
    codes = sorted({row["code_version"] for row in rows})
    return (f"Request {first['request']} ({first['request_kind']}, {', '.join(map(str, sizes))} edges); split "
            f"{first['split_hash']}; code {', '.join(codes)}; machine: {'; '.join(machines)}; load average "
            f"{min(r['load']['before'] for r in rows):.2f}–{max(r['load']['after'] for r in rows):.2f}.")


def timing_lines(rows: list[dict]) -> list[str]:
    """Which timings were reused from a cache (and whether comparably), and what the clock left out."""
    reused, breaks, excluded = [], [], []
    for label in methods(rows):
        mine = by_method(rows, label)
        for what in ("unlearn", "prepare", "original_train"):
            hits = [row for row in mine if row["reused"].get(what)]
            if not hits:
                continue
            reused.append(f"{label} {what.replace('_', ' ')} ({len(hits)} of {len(mine)} seeds)")
            breaks += [f"{label} {what.replace('_', ' ')}, seed {row['seed']}: {why}"
                       for row in hits if (why := _reuse_break(row, what)) is not None]
        cut, _, _ = mean_std(mine, "excluded", "timings")
        if math.isfinite(cut) and cut > 0.01:
            to_best, _, _ = mean_std(mine, "seconds_to_best", "timings")
            excluded.append(f"{label}: its training epochs are counted, {cut:.2f} s of validation and evaluation "
                            "passes (and model I/O) left out" + (f"; time to its best epoch {to_best:.2f} s"
                                                                  if math.isfinite(to_best) else ""))
    out = [f"Timings reused from a cache: {'; '.join(reused) if reused else 'none'}."]
    if breaks:
        out.append(f"Reused timings that are not comparable (evaluation.md rule 3 broken): {'; '.join(breaks)}.")
    if excluded:
        out.append(f"Excluded from the timed region: {'; '.join(excluded)}.")
    return out


def settings_lines(rows: list[dict]) -> list[str]:
    """The settings that differ from the library's defaults (evaluation.md rule 1: the report says where
    every non-default setting came from; here, the suite file)."""
    # Against the defaults of the code that ran (recorded in each row); older rows lack them, so today's stand in.
    defaults = rows[0].get("train_defaults")
    compared = ""
    if defaults is None:
        from ..train.config import TrainConfig
        defaults = TrainConfig().model_dump(mode="json")
        compared = " (compared with the current defaults: these rows do not record the defaults they ran with)"
    train = rows[0]["run"]["train"]
    changed = [f"{key}={value}" for key, value in train.items()
               if key not in ("seed", "threads") and value != defaults.get(key)]
    out = [f"Backbone training settings from the suite file: {', '.join(changed) or 'the defaults'}{compared}."]
    methods_changed = []
    for label in methods(rows):
        first = by_method(rows, label)[0]
        if first["role"] != "method":
            continue
        default = first.get("method_defaults") or {}
        diff = [f"{key}={value}" for key, value in (first["method_config"] or {}).items() if value != default.get(key)]
        if diff:
            methods_changed.append(f"{label}: {', '.join(diff)}")
    out.append(f"Method settings other than the defaults (from the suite file): "
               f"{'; '.join(methods_changed) if methods_changed else 'none'}.")
    return out


def check_lines(rows: list[dict]) -> list[str]:
    """The rule-2 facts of these rows: the reference is an independent retrain, never the selector."""
    same_seed = [row["seed"] for row in rows if row["reference_seed"] == row["seed"]]
    selector = [row["seed"] for row in rows if row["models"].get("selector")
                and row["models"]["selector"] == row["models"].get("reference")]
    out = []
    if same_seed:
        out.append(f"Rule 2 broken: the reference was trained with the original's seed (seeds "
                   f"{sorted(set(same_seed))}).")
    if selector:
        out.append(f"Rule 2 broken: the reference is the model that chose the injected edges (seeds "
                   f"{sorted(set(selector))}).")
    return out


# --- streams -------------------------------------------------------------------------------------------

def stream_table(group: StreamGroup) -> list[str]:
    lines = [f"## {group.title} ({group.suite})", "",
             "Each method applies the requests one after another; at ¼, ½, ¾ and the end it is measured against "
             "a Retrain of the same cumulative set. Seconds are cumulative over the requests so far (Retrain: one "
             "retrain of the cumulative set). A stream has no noise floor of its own (one Retrain per checkpoint): "
             "read its gaps against the batch table's floor.", ""]
    table = [STREAM_COLUMNS, ["---"] * len(STREAM_COLUMNS)]
    for label in methods(group.rows):
        rows = by_method(group.rows, label)
        for position, mark in enumerate(rows[0]["stream"]["checkpoints"]):
            marks = [row["stream"]["checkpoints"][position] for row in rows]
            table.append([label, f"{mark['step']}/{group.parts}", str(mark["forgotten"]),
                          *(fmt(*_spread([m["metrics"].get(key) for m in marks]), digits) for key, digits in
                            (("Recall@20", 4), ("Recall@20_vs_retrain", 3), ("mia_auc_gap", 3),
                             ("over_forgetting", 3), ("forget_rank_pct", 3), ("jaccard@20_vs_retrain", 3))),
                          fmt(*_spread([m["seconds"] for m in marks]), 3)])
    lines += ["| " + " | ".join(row) + " |" for row in table]
    lines += ["", *timing_lines(group.rows), ""]
    return lines


def _spread(numbers: list) -> tuple[float, float]:
    found = np.array([n for n in numbers if n is not None], dtype=float)
    if found.size == 0:
        return float("nan"), float("nan")
    return float(found.mean()), float(found.std(ddof=1)) if found.size > 1 else float("nan")
