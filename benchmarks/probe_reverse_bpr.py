"""Choosing reverse-bpr's settings without the reported requests (evaluation.md rule 1): on tiktok's FREEDOM
original of seed 0, requests drawn with seed 100 (the suite draws seeds 0-2), measured on training and
validation data only: validation Recall@20 (residual training items masked), the forgotten edges' mean
percentile rank among all items (a retrained model that never saw a whole user or item ranks them about at
random, 0.5), and the seconds of the request.

    .venv/bin/python benchmarks/probe_reverse_bpr.py --threads 1 --set lr=0.001 --set lr=0.01
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from recunlearn.bench.suite import load_suite
from recunlearn.data.requests import GENERATORS, parse_spec
from recunlearn.eval.ranking import evaluate
from recunlearn.train.cache import train_cached
from recunlearn.train.inputs import load_data
from recunlearn.unlearn.registry import build_unlearner


def forget_rank(scorer, edges) -> float:
    """Mean share of items scored above each forgotten item, for its user (0 top, 1 bottom)."""
    users = torch.from_numpy(edges.users)
    scores = scorer.score_users(users)
    own = scores[torch.arange(len(users)), torch.from_numpy(edges.items)]
    return float((scores > own[:, None]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="benchmarks/suites/mmrecun-tiktok.yaml")
    parser.add_argument("--requests", nargs="+", default=["user:0.05", "item:0.05"])
    parser.add_argument("--seed", type=int, default=100, help="request seed (not one of the suite's)")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        help="one reverse-bpr setting per flag: key=value[,key=value]")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/mmrecun-probe.jsonl")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    run = suite.run_config(suite.datasets[0].name, suite.backbones[0], seed=0)
    data = load_data(run.data)
    model, _, _ = train_cached(run, data, progress=False)
    for spec in args.requests:
        kind, params = parse_spec(spec)
        request = GENERATORS[kind](data, seed=args.seed, **params)
        for setting in args.settings or [""]:
            overrides = dict(item.split("=", 1) for item in setting.split(",") if item)
            unlearner = build_unlearner("reverse-bpr", overrides, run=run, progress=False).prepare(model.clone(), data)
            start = time.perf_counter()
            result = unlearner.unlearn(request)
            seconds = time.perf_counter() - start
            valid = evaluate(result.scorer, result.dataset.valid, result.dataset.train, ks=[20])["Recall@20"]
            row = {"request": spec, "seed": args.seed, "setting": overrides, "seconds": round(seconds, 2),
                   "valid_Recall@20": round(valid, 4), "forget_rank": round(forget_rank(result.scorer, request.edges), 3),
                   **{k: v for k, v in result.report.items() if k != "history"}}
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as out:
                out.write(json.dumps(row) + "\n")
    before = evaluate(model, data.valid, data.train, ks=[20])["Recall@20"]
    print(json.dumps({"original_valid_Recall@20": round(before, 4)}))


if __name__ == "__main__":
    main()
