"""Benchmark: the triples of part of an epoch (UnlearnRec's fractional fine-tuning), drawn for the part alone
against drawn for the whole pass and cut (before `bpr_epoch(edges=...)`), side by side in one run.

    .venv/bin/python benchmarks/bench_partial_epoch.py --dataset ml-1m --fraction 0.25 --repeats 5
"""
from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
import torch

from recunlearn.bench.environment import load_average, machine_line
from recunlearn.data.registry import load_dataset
from recunlearn.data.sampling import bpr_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = load_dataset(args.dataset).train
    n_batches = max(1, math.ceil(args.fraction * len(train) / args.batch_size))
    edges = min(len(train), n_batches * args.batch_size)
    ways = {"whole pass drawn, then cut": {}, "part drawn alone": {"edges": edges}}
    seconds = {name: [] for name in ways}
    for repeat in range(args.repeats):
        for name, options in ways.items():   # alternating, so that load drifts hit both alike
            began = time.perf_counter()
            for _ in itertools.islice(bpr_epoch(train, np.random.default_rng(repeat), args.batch_size, **options),
                                      n_batches):
                pass
            seconds[name].append(time.perf_counter() - began)
    print(f"{machine_line()}, load {load_average()}")
    print(f"{args.dataset}: {len(train):,} training edges, {args.fraction} epoch = {n_batches} batches of "
          f"{args.batch_size} ({edges:,} edges), {args.repeats} repeats")
    for name, values in seconds.items():
        print(f"  {name}: median {np.median(values):.3f} s ({', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
