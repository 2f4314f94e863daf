"""Quality of the multi-modal backbones against LightGCN without content: test Recall@20 / NDCG@20 after
training with early stopping on validation Recall@20, with the training settings of an MMRecUn suite.

    .venv/bin/python benchmarks/bench_mm_quality.py --models lightgcn freedom vbpr --seeds 0 1 2 --threads 1
"""
from __future__ import annotations

import argparse
import json

import torch

from recunlearn.bench.environment import machine_line
from recunlearn.bench.suite import load_suite
from recunlearn.train.cache import train_cached
from recunlearn.train.inputs import load_data
from recunlearn.train.runs import test_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="benchmarks/suites/mmrecun-tiktok.yaml")
    parser.add_argument("--models", nargs="+", default=["lightgcn", "freedom", "vbpr"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/mmrecun-quality.jsonl")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    dataset = suite.datasets[0].name
    for model_name in args.models:
        for seed in args.seeds:
            run = suite.run_config(dataset, model_name, seed)
            data = load_data(run.data)
            model, meta, cached = train_cached(run, data, progress=False)
            metrics = test_metrics(model, data, [20])
            row = {"dataset": dataset, "model": model_name, "seed": seed, "run": run.model_dump(mode="json"),
                   "Recall@20": metrics["Recall@20"], "NDCG@20": metrics["NDCG@20"],
                   "valid": meta["metrics"].get("valid", {}).get("Recall@20"),
                   "best_epoch": meta["metrics"]["best_epoch"], "train_seconds": meta["metrics"]["train_seconds"],
                   "cached": cached, "machine": machine_line()}
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as out:
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
