"""Benchmark 1 (quality): Recall@20 / NDCG@20 on the test set after training with early stopping on
validation Recall@20, with the wall time of training on this machine.

    .venv/bin/python benchmarks/bench_quality.py --runs ml-1m:mf ml-1m:lightgcn ml-1m:sgl ml-1m:simgcl gowalla:lightgcn

`--refit-epochs N` instead trains on train + validation for N epochs (a number chosen earlier on validation)
with no validation pass, as published implementations train on the whole training file, and reports test.
"""
from __future__ import annotations

import argparse
import time

import torch

from recunlearn.bench.environment import load_average, machine_line
from recunlearn.bench.results import append_results
from recunlearn.bench.suite import load_suite
from recunlearn.config import apply_overrides
from recunlearn.data.registry import load_dataset
from recunlearn.eval.ranking import evaluate
from recunlearn.train.cache import train_cached
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer
from recunlearn.train.version import TRAINING_PACKAGES, code_version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["ml-1m:lightgcn"], help="dataset:model pairs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/quality.jsonl")
    parser.add_argument("--suite", default="benchmarks/suites/standard.yaml", help="training settings of this suite")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="run overrides key=value")
    parser.add_argument("--refit-epochs", type=int, default=None,
                        help="train on train + validation for this many epochs (chosen on validation before)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("machine:", machine_line(), flush=True)
    for spec in args.runs:
        dataset, model = spec.split(":")
        base = load_suite(args.suite).run_config(dataset, model, seed=0).model_dump(mode="json")
        run = RunConfig.model_validate(apply_overrides(base, args.overrides))
        data = load_dataset(dataset, seed=run.data.seed, valid_ratio=run.data.valid_ratio)
        if args.refit_epochs:
            refit(args, dataset, model, run, data)
            continue
        start = time.perf_counter()
        _, meta, cached = train_cached(run, data, progress=False)
        m = meta["metrics"]
        row = {"model": model, "Recall@20": m["test"]["Recall@20"], "NDCG@20": m["test"]["NDCG@20"],
               "valid_Recall@20": m["valid"]["Recall@20"], "best_epoch": m["best_epoch"],
               "epochs_run": m["epochs_run"], "train_seconds": m["seconds"], "sec_per_epoch": m["seconds"] / m["epochs_run"],
               "cached": cached, "wall_this_call": round(time.perf_counter() - start, 1)}
        print(f"{dataset:8s} {model:9s} Recall@20 {row['Recall@20']:.4f} NDCG@20 {row['NDCG@20']:.4f} "
              f"best epoch {row['best_epoch']}/{row['epochs_run']} train {row['train_seconds']:.0f}s "
              f"({row['sec_per_epoch']:.1f} s/epoch)", flush=True)
        append_results(args.out, [row], bench="quality", dataset=dataset, split_hash=data.hash,
                       run=run.model_dump(mode="json"))


def refit(args, dataset: str, model: str, run: RunConfig, data) -> None:
    """Train on train + validation for `args.refit_epochs` epochs; test items masked by everything trained on."""
    run = run.model_copy(update={"train": run.train.model_copy(update={"epochs": args.refit_epochs})})
    whole = data.with_train(data.train.union(data.valid))
    load = load_average()
    trained, result = Trainer(run, progress=False, validate=False).fit(whole)
    m = evaluate(trained, data.test, whole.train, ks=[20])
    row = {"model": model, "refit": "train+valid", "Recall@20": m["Recall@20"], "NDCG@20": m["NDCG@20"],
           "epochs_run": result.epochs_run, "train_seconds": result.train_seconds,
           "sec_per_epoch": result.train_seconds / result.epochs_run, "load_average_before": load,
           "load_average_after": load_average(), "code": code_version(TRAINING_PACKAGES)}
    print(f"{dataset:8s} {model:9s} refit on train+valid, {result.epochs_run} epochs: Recall@20 {row['Recall@20']:.4f} "
          f"NDCG@20 {row['NDCG@20']:.4f} train {row['train_seconds']:.0f}s ({row['sec_per_epoch']:.1f} s/epoch)",
          flush=True)
    append_results(args.out, [row], bench="quality", dataset=dataset, split_hash=whole.hash,
                   run=run.model_dump(mode="json"))


if __name__ == "__main__":
    main()
