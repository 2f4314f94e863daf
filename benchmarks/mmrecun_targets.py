"""The issue's MMRecUn targets, checked on a results file of the harness: per request and method, mean ± std
over seeds of Retain Recall@20 / Gold, forget-set Recall@20 (Gold's + the noise floor as the bound), MIA AUC
gap (within max(0.03, noise floor)), taken-down items in any top-20 (item requests), speed-up over Gold.

    .venv/bin/python benchmarks/mmrecun_targets.py benchmarks/results/mmrecun-tiktok.jsonl
"""
from __future__ import annotations

import itertools
import json
import sys
from collections import defaultdict

import numpy as np


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    groups = defaultdict(list)
    for row in rows:
        groups[(row["request"], row["role"], row["method"])].append(row)
    for request in dict.fromkeys(row["request"] for row in rows):
        floor_rows = groups[(request, "noise_floor", "retrain")] + [
            r for r in groups[(request, "reference", "retrain")] if r["seed"] == 0]
        forget = [r["metrics"].get("audit", {}).get("forget_Recall@20") for r in floor_rows]
        forget = [f for f in forget if f is not None]
        mia = [r["metrics"]["mia_auc"] for r in floor_rows if "mia_auc" in r["metrics"]]
        floor_forget = float(np.std(forget, ddof=1)) if len(forget) > 1 else float("nan")
        floor_mia = max((abs(a - b) for a, b in itertools.combinations(mia, 2)), default=float("nan"))
        gold = {r["seed"]: r for r in groups[(request, "reference", "retrain")]}
        print(f"\n### {request}\nnoise floor: forget-set Recall@20 std {floor_forget:.4f}, "
              f"max |ΔMIA AUC| {floor_mia:.4f}\n")
        print("| method | Recall@20 × Gold | forget Recall@20 | Gold forget Recall@20 | MIA AUC gap | "
              "take-down in top-20 (appearances / users / items) | speed-up |")
        print("|---|---|---|---|---|---|---|")
        for method in dict.fromkeys(r["method"] for r in rows if r["request"] == request):
            if method == "retrain (noise floor)":
                continue
            role = "reference" if method == "retrain" else "original" if method == "original" else "method"
            got = sorted(groups[(request, role, method)], key=lambda r: r["seed"])
            if not got:
                continue
            def ms(values):
                values = [v for v in values if v is not None and np.isfinite(v)]
                if not values:
                    return "-"
                return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else f"{values[0]:.4f}"
            m = [r["metrics"] for r in got]
            g = [gold[r["seed"]]["metrics"] for r in got]
            td = [(x.get("takedown_in_top20"), x.get("takedown_users_top20"), x.get("takedown_items_top20")) for x in m]
            td_text = " / ".join(ms([t[i] for t in td]) for i in range(3)) if td[0][0] is not None else "-"
            print(f"| {method} | {ms([x['Recall@20'] / y['Recall@20'] for x, y in zip(m, g)])} "
                  f"| {ms([x.get('audit', {}).get('forget_Recall@20') for x in m])} "
                  f"| {ms([y.get('audit', {}).get('forget_Recall@20') for y in g])} "
                  f"| {ms([x.get('mia_auc_gap') for x in m])} | {td_text} "
                  f"| {ms([x.get('speedup') for x in m])} |")


if __name__ == "__main__":
    main(sys.argv[1])
