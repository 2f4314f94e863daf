"""Seconds per LightGCN training epoch, or of UnlearnRec's preparation, at two (or more) commits of this
repository, measured one after the other in one run, so that machine noise hits them alike: what a change
bought.

Each commit is checked out into a temporary git worktree and run in a fresh process with that worktree's
`src/` first on the path (the project's virtual environment supplies the dependencies).
- `--measure epoch`: `Trainer.fit` with no validation pass for `--epochs` epochs on the whole shipped training
  file, seeded alike; the epochs' own seconds (`train_seconds`) with the mean loss of the last epoch.
- `--measure prepare`: LightGCN trained as above on the training split (seeded alike, not timed), then
  UnlearnRec's `prepare` with its defaults, timed; with the pre-training history (loss and held-out AUC per
  check), which must agree between commits that only change speed.

    .venv/bin/python benchmarks/bench_epoch_commits.py 323a28e a7894ac --dataset gowalla --threads 1
    .venv/bin/python benchmarks/bench_epoch_commits.py 2b479be HEAD --measure prepare --dataset ml-1m \
        --epochs 20 --batch-size 8192 --lr 0.01 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from recunlearn.bench.environment import machine_line

REPO = Path(__file__).resolve().parents[1]

# Runs inside the worktree's process: only APIs that every compared commit has.
CHILD = """
import json, os, sys, torch
from recunlearn.data.registry import load_dataset
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer
dataset, epochs, batch_size, lr, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
data = load_dataset(dataset)
data = data.with_train(data.train.union(data.valid))
run = RunConfig.model_validate({"model": {"name": "lightgcn"}, "train": {"epochs": epochs, "batch_size": batch_size,
                                "lr": lr, "seed": 0, "threads": threads}})
load = os.getloadavg()[0]
_, result = Trainer(run, progress=False, validate=False).fit(data)
print(json.dumps({"sec_per_epoch": result.train_seconds / result.epochs_run, "loss": result.history[-1]["loss"],
                  "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}))
"""

PREPARE = """
import json, os, sys, time, torch
from recunlearn.data.registry import load_dataset
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer
from recunlearn.unlearn.registry import build_unlearner
dataset, epochs, batch_size, lr, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
data = load_dataset(dataset)
run = RunConfig.model_validate({"model": {"name": "lightgcn"}, "train": {"epochs": epochs, "batch_size": batch_size,
                                "lr": lr, "seed": 0, "threads": threads}})
model, _ = Trainer(run, progress=False, validate=False).fit(data)
load = os.getloadavg()[0]
start = time.perf_counter()
method = build_unlearner("unlearnrec", run=run, progress=False).prepare(model, data)
seconds = time.perf_counter() - start
history = [[c["epoch"], round(c.get("loss", 0.0), 6), round(c["request_auc"], 5)] for c in method.pretraining["history"]]
print(json.dumps({"prepare_seconds": seconds, "history": history, "calibration": method.calibration,
                  "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}))
"""


def run_commit(commit: str, args, root: Path) -> dict:
    tree = root / commit
    if not tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), commit], check=True)
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    child = PREPARE if args.measure == "prepare" else CHILD
    done = subprocess.run([sys.executable, "-c", child, args.dataset, str(args.epochs), str(args.batch_size),
                           str(args.lr), str(args.threads)], env=env, check=True, capture_output=True, text=True)
    return {"commit": commit, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commits", nargs="+", help="commits to compare, measured in this order")
    parser.add_argument("--measure", choices=("epoch", "prepare"), default="epoch")
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/epoch_commits.jsonl")
    args = parser.parse_args()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="recunlearn-commits-") as tmp:
            for commit in args.commits:
                rows.append(run_commit(commit, args, Path(tmp)))
                row = rows[-1]
                what = (f"prepare {row['prepare_seconds']:.1f} s (history {row['history']}"
                        if args.measure == "prepare" else f"{row['sec_per_epoch']:.1f} s/epoch (loss {row['loss']:.4f}")
                print(f"{commit}: {what}, load {row['load_before']} -> {row['load_after']})", flush=True)
    finally:   # the worktrees' folders are gone: forget them
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)
    torch.set_num_threads(args.threads)   # the machine line names the children's thread count, not this process's default
    record = {"bench": "epoch_commits" if args.measure == "epoch" else "prepare_commits", "dataset": args.dataset, "args": vars(args), "runs": rows,
              "machine": machine_line(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with open(args.out, "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
