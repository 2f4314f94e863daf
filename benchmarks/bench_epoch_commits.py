"""Seconds per LightGCN training epoch at two (or more) commits of this repository, measured one after the
other in one run, so that machine noise hits them alike: what a change to the trainer bought.

Each commit is checked out into a temporary git worktree and trained in a fresh process with that worktree's
`src/` first on the path (the project's virtual environment supplies the dependencies): `Trainer.fit` with no
validation pass for `--epochs` epochs on the whole shipped training file, seeded alike, and the epochs' own
seconds (`train_seconds`) are reported with the mean loss of the last epoch.

    .venv/bin/python benchmarks/bench_epoch_commits.py 323a28e a7894ac --dataset gowalla --threads 1
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


def run_commit(commit: str, args, root: Path) -> dict:
    tree = root / commit
    if not tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), commit], check=True)
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run([sys.executable, "-c", CHILD, args.dataset, str(args.epochs), str(args.batch_size),
                           str(args.lr), str(args.threads)], env=env, check=True, capture_output=True, text=True)
    return {"commit": commit, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commits", nargs="+", help="commits to compare, measured in this order")
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
                print(f"{commit}: {rows[-1]['sec_per_epoch']:.1f} s/epoch (loss {rows[-1]['loss']:.4f}, load "
                      f"{rows[-1]['load_before']} -> {rows[-1]['load_after']})", flush=True)
    finally:   # the worktrees' folders are gone: forget them
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)
    record = {"bench": "epoch_commits", "dataset": args.dataset, "args": vars(args), "runs": rows,
              "machine": machine_line(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with open(args.out, "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
