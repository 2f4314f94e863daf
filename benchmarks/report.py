"""Markdown tables from the benchmark results (JSON lines), for BENCHMARKS.md.

    .venv/bin/python benchmarks/report.py benchmarks/results/unlearnrec.jsonl benchmarks/results/quality.jsonl
"""
from __future__ import annotations

import sys
from collections import defaultdict

from recunlearn.bench.results import read_results
from recunlearn.unlearn.influence_encoder import IEConfig


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def encoder_overrides(row: dict) -> str:
    defaults = IEConfig().model_dump()
    changed = {k: v for k, v in row["ie"].items() if k in defaults and k != "sequential" and v != defaults[k]}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changed.items()) or "none"


def unlearnrec_tables(rows: list[dict]) -> None:
    # One table per bench invocation: its rows are consecutive and begin with the Original, or for a stream
    # with the Retrain row of its first checkpoint (a step no later than the row before).
    groups, run, last_step = defaultdict(list), 0, None
    for row in rows:
        step = row.get("step")
        if step is None:
            run += row["method"] == "Original"
        else:
            run += row["method"] == "Retrain" and (last_step is None or step <= last_step)
        last_step = step
        groups[(run, row["bench"], row["dataset"], row["backbone"], row["request"], row["machine"])].append(row)
    for (_, bench, dataset, backbone, request, machine), group in groups.items():
        methods = ", ".join(r["method"] for r in group if r["method"].startswith("UnlearnRec +"))
        # streams recorded before the `sequential` field existed used the paper's rule (compose)
        stream = f" (stream, {group[0]['ie'].get('sequential', 'compose')})" if bench.endswith("stream") else ""
        print(f"\n#### {dataset} / {backbone} / {request}{stream}{f' ({methods})' if methods else ''}\n")
        print(f"Machine: {machine}. Encoder settings other than the defaults: {encoder_overrides(group[0])}\n")
        retrain = {r.get("step"): r for r in group if r["method"] == "Retrain"}
        cols = ["method", "Recall@20", "vs Retrain", "NDCG@20", "forget score", "non-edge score", "MIA AUC",
                "MIA gap vs Retrain", "forget rank", "Jaccard@20 vs Retrain", "unlearn s", "speed-up", "pre-train s"]
        if bench.endswith("stream"):
            cols = ["step"] + cols[:8] + ["unlearn s"]
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in group:
            ref = retrain.get(r.get("step"))
            audit = r.get("audit", {})
            values = {"step": f"{r.get('step')}/{r.get('of')}", "method": r["method"], "Recall@20": fmt(r["Recall@20"]),
                      "vs Retrain": fmt(r["Recall@20"] / ref["Recall@20"], 3) if ref else "-",
                      "NDCG@20": fmt(r["NDCG@20"]), "forget score": fmt(r["forget_score"], 3),
                      "non-edge score": fmt(r["nonedge_score"], 3), "MIA AUC": fmt(r["mia_auc"], 3),
                      "MIA gap vs Retrain": fmt(abs(r["mia_auc"] - ref["mia_auc"]), 3) if ref else "-",
                      "forget rank": fmt(audit.get("forget_rank_pct"), 3),
                      "Jaccard@20 vs Retrain": fmt(audit.get("jaccard@20_vs_retrain"), 3),
                      "unlearn s": fmt(r.get("unlearn_s"), 3), "speed-up": fmt(r.get("speedup"), 1),
                      "pre-train s": fmt(r.get("prepare_s"), 1)}
            print("| " + " | ".join(values[c] for c in cols) + " |")


def quality_table(rows: list[dict]) -> None:
    print("\n| dataset | model | Recall@20 | NDCG@20 | best epoch / run | train s | s/epoch | lr |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['model']} | {fmt(r['Recall@20'])} | {fmt(r['NDCG@20'])} | "
              f"{r['best_epoch']}/{r['epochs_run']} | {r['train_seconds']:.0f} | {r['sec_per_epoch']:.1f} | "
              f"{r['run']['train']['lr']} |")


def main() -> None:
    for path in sys.argv[1:]:
        rows = read_results(path)
        if rows and rows[0]["bench"].startswith("unlearnrec"):
            unlearnrec_tables(rows)
        elif rows and rows[0]["bench"] == "quality":
            quality_table(rows)


if __name__ == "__main__":
    main()
