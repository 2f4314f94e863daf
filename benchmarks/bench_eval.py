"""Time and peak memory of full-ranking evaluation: every gowalla test user, d=64 embeddings, training items masked.

    python benchmarks/bench_eval.py [--batch-sizes 256 512 2048] [--k 20] [--dim 64]

Each batch size runs in a fresh process, so that its peak RSS (ru_maxrss) is its own. The embeddings
are random: the work (one matmul, one top-k and the masking per batch) does not depend on their values.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from recunlearn.data.registry import load_dataset
from recunlearn.eval.ranking import evaluate
from recunlearn.eval.scorer import EmbeddingScorer

DATA = os.environ.get("RECUNLEARN_DATA", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_one(batch_size: int, k: int, dim: int) -> dict:
    """Load gowalla, evaluate once; called in a fresh process."""
    data = load_dataset("gowalla", root=DATA, download=False)
    mask = data.train.union(data.valid)  # the whole shipped training file is masked at test time
    generator = torch.Generator().manual_seed(0)
    scorer = EmbeddingScorer(torch.randn(data.n_users, dim, generator=generator),
                             torch.randn(data.n_items, dim, generator=generator))
    rss_before = peak_rss_mb()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    result = evaluate(scorer, data.test, mask, ks=(k,), batch_size=batch_size)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    return {"batch_size": batch_size, "seconds": seconds, "cpu_seconds": cpu, "users": result["users"],
            "peak_rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb(), f"Recall@{k}": result[f"Recall@{k}"],
            "shape": f"{data.n_users} users x {data.n_items} items, {len(mask)} masked, {len(data.test)} test"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512, 2048])
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one batch size, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.k, args.dim)))
        return
    print(f"machine: {machine()}")
    runs = [_child(batch_size, args.k, args.dim) for batch_size in args.batch_sizes]
    print(f"gowalla: {runs[0]['shape']}; random N(0,1) embeddings d={args.dim} "
          f"(timing does not depend on their values); K={args.k}; full ranking, training items masked")
    print(f"{'batch':>6} {'users':>6} {'seconds':>8} {'CPU s':>6} {'users/s':>8} {'peak RSS after load MB':>23} {'peak RSS MB':>12}")
    for run in runs:
        print(f"{run['batch_size']:>6} {run['users']:>6} {run['seconds']:>8.2f} {run['cpu_seconds']:>6.1f} {run['users'] / run['seconds']:>8.0f} "
              f"{run['peak_rss_before_mb']:>23.0f} {run['peak_rss_mb']:>12.0f}")


def _child(batch_size: int, k: int, dim: int) -> dict:
    command = [sys.executable, __file__, "--one", str(batch_size), "--k", str(k), "--dim", str(dim)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
