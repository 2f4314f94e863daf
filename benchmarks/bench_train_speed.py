"""Benchmark 2 (training speed): our LightGCN against RecBole's LightGCN in one run, on the same graph
(the whole shipped training file), the same embedding size, layers, batch size, learning rate and
number of epochs: seconds per training epoch (sampling, forward, backward, step) and test Recall@20 /
NDCG@20 after those epochs, training items masked.

    .venv/bin/python benchmarks/bench_train_speed.py --dataset gowalla --epochs 2
(the peer needs `bash benchmarks/peers/setup_recbole.sh` first)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recunlearn.bench.environment import load_average, machine_line
from recunlearn.data.graph import build_graph
from recunlearn.data.registry import load_dataset
from recunlearn.eval.ranking import evaluate
from recunlearn.models.registry import build_model
from recunlearn.train.config import RunConfig
from recunlearn.train.version import TRAINING_PACKAGES, code_version
from recunlearn.train.trainer import Trainer, optimizer_for

REPO = Path(__file__).resolve().parents[1]


def ours(args) -> dict:
    data = load_dataset(args.dataset)
    data = data.with_train(data.train.union(data.valid))      # the whole shipped training file, like the peer
    run = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": args.dim, "layers": args.layers,
                                              "reg": args.reg},
                                    "train": {"batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}})
    model = build_model(run.model, data.n_users, data.n_items).attach(build_graph(data.train))
    trainer = Trainer(run, progress=False)
    optimizer = optimizer_for(model, args.lr)
    rng, gen = np.random.default_rng(args.seed), torch.Generator().manual_seed(args.seed)
    seconds = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        trainer.train_epoch(model, optimizer, data, rng, gen, epoch)
        seconds.append(time.perf_counter() - start)
        print(f"  ours epoch {epoch + 1}: {seconds[-1]:.1f}s", flush=True)
    metrics = evaluate(model, data.test, data.train, ks=[20])
    return {"peer": "recunlearn", "sec_per_epoch": seconds, "sec_per_epoch_mean": float(np.mean(seconds)),
            "recall@20": metrics["Recall@20"], "ndcg@20": metrics["NDCG@20"]}


def recbole(args) -> dict:
    python = REPO / ".peer-recbole" / "bin" / "python"
    if not python.exists():
        sys.exit("RecBole peer missing: run `bash benchmarks/peers/setup_recbole.sh` first")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recbole.json"
        subprocess.run([str(python), str(REPO / "benchmarks" / "peers" / "recbole_lightgcn.py"), "--dataset",
                        args.dataset, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                        "--dim", str(args.dim), "--layers", str(args.layers), "--lr", str(args.lr),
                        "--reg", str(args.reg), "--threads", str(args.threads), "--json-out", str(out)],
                       check=True, env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PATH": "/usr/bin:/bin"})
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="gowalla", choices=["gowalla", "ml-1m"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--reg", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", default="benchmarks/results/train_speed.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("machine:", machine_line(), flush=True)
    load = {"before_ours": load_average()}
    a = ours(args)
    load["before_recbole"] = load_average()
    b = recbole(args)
    load["after"] = load_average()
    ratio = b["sec_per_epoch_mean"] / a["sec_per_epoch_mean"]
    for r in (a, b):
        print(f"{r['peer']:10s} {np.mean(r['sec_per_epoch']):8.1f} s/epoch   Recall@20 {r['recall@20']:.4f}   "
              f"NDCG@20 {r['ndcg@20']:.4f}   after {args.epochs} epochs")
    print(f"speed-up per epoch (RecBole / ours): {ratio:.2f}x")
    with open(args.json_out, "a") as fh:
        fh.write(json.dumps({"bench": "train_speed", "dataset": args.dataset, "args": vars(args), "ours": a,
                             "recbole": b, "speedup": ratio, "machine": machine_line(),
                             "code": code_version(TRAINING_PACKAGES), "load_average": load,
                             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}) + "\n")


if __name__ == "__main__":
    main()
