"""Benchmark: training spread over processes on this machine.

1. LightGCN seconds per training epoch and peak memory (RSS) per rank: the plain loop in one process against
   data-parallel training on 2 gloo ranks (`train.nproc=2`: each rank computes half of every batch; both
   propagate over the whole graph), with the largest weight difference between the two after the epochs.
2. SISA's shard training (`prepare`: every sub-model, fixed epochs, no validation) wall time with 1 and 2
   worker processes, and whether the sub-models came out bit-identical.

Every process runs `--threads` torch threads, so 2 processes use twice the cores of 1. One JSON line per run
goes to `--json-out`, with the machine line, the load average before each measurement, the date and the
code version.

    RECUNLEARN_DATA=/path/to/data .venv/bin/python benchmarks/bench_distributed.py --dataset ml-1m
    (a smoke run: --dataset ml-100k --epochs 1 --shards 2 --sisa-epochs 1 --json-out /tmp/distributed.jsonl)
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import datetime, timezone

import torch
import torch.distributed as dist

from recunlearn.bench.environment import load_average, machine_line
from recunlearn.data.registry import load_dataset
from recunlearn.models.registry import build_model
from recunlearn.train.config import RunConfig
from recunlearn.train.distributed import Ranks
from recunlearn.train.launch import run_on_ranks
from recunlearn.train.trainer import Trainer
from recunlearn.train.version import code_version
from recunlearn.unlearn.sisa import Sisa


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # kilobytes on Linux


def lightgcn_rank(run: RunConfig, dataset, plain: bool) -> dict:
    """In each rank's process: `run.train.epochs` epochs without validation (the plain loop when `plain`);
    rank 0 returns the epochs' seconds, its weights and every rank's peak RSS."""
    ranks = None if plain else Ranks.current()
    model, result = Trainer(run, progress=False, validate=False, ranks=ranks).fit(dataset)
    rss = [peak_rss_mib()]
    if ranks is not None:
        rss = [None] * ranks.world_size
        dist.all_gather_object(rss, peak_rss_mib())
    ends = [record["seconds"] for record in result.history]
    return {"sec_per_epoch": [round(b - a, 3) for a, b in zip([0.0, *ends], ends)],
            "train_seconds": result.train_seconds, "peak_rss_mib_per_rank": [round(r, 1) for r in rss],
            "weights": model.state_dict()}


def measure_lightgcn(args, dataset, nproc: int) -> dict:
    run = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": args.dim, "layers": args.layers},
                                    "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                                              "seed": args.seed, "threads": args.threads, "nproc": nproc}})
    load = load_average()
    start = time.perf_counter()
    # one process too runs in a fresh child, so that its peak memory compares with a rank's
    found = run_on_ranks(lightgcn_rank, nproc, run, dataset, nproc == 1, threads=args.threads)
    found.update(ranks=nproc, wall_seconds=round(time.perf_counter() - start, 2), load_before=load)
    found["sec_per_epoch_mean"] = round(found["train_seconds"] / args.epochs, 3)
    print(f"  lightgcn on {nproc} rank(s): {found['sec_per_epoch_mean']:.2f} s/epoch, peak RSS per rank "
          f"{found['peak_rss_mib_per_rank']} MiB, {found['wall_seconds']:.1f} s with start-up", flush=True)
    return found


def measure_sisa(args, dataset, workers: int) -> tuple[dict, list]:
    run = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": args.dim, "layers": args.layers},
                                    "train": {"batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                                              "threads": args.threads}})
    model = build_model(run.model, dataset.n_users, dataset.n_items)   # SISA's prepare reads no weights of it
    sisa = Sisa({"shards": args.shards, "epochs": args.sisa_epochs, "workers": workers}, run=run, progress=False)
    load = load_average()
    sisa.prepare(model, dataset)
    found = {"workers": workers, "wall_seconds": round(sisa.prepare_seconds, 2), "load_before": load}
    print(f"  sisa {args.shards} shards x {args.sisa_epochs} epochs on {workers} process(es): "
          f"{found['wall_seconds']:.1f} s", flush=True)
    return found, [None if m is None else m.state_dict() for m in sisa.state.scorer.models]


def same(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--epochs", type=int, default=2, help="LightGCN epochs per measurement")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=int, default=10, help="SISA shards")
    parser.add_argument("--sisa-epochs", type=int, default=2, help="fixed epochs per SISA sub-model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--json-out", default="benchmarks/results/distributed.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("machine:", machine_line(), flush=True)
    dataset = load_dataset(args.dataset)

    one, two = (measure_lightgcn(args, dataset, nproc) for nproc in (1, 2))
    weight_gap = max((one["weights"][k] - two["weights"][k]).abs().max().item() for k in one["weights"])
    for found in (one, two):
        del found["weights"]
    print(f"  largest weight difference, 2 ranks against 1 after {args.epochs} epochs: {weight_gap:.2e}")
    sisa_one, sisa_two = (measure_sisa(args, dataset, workers) for workers in (1, 2))
    identical = all(same(a, b) for a, b in zip(sisa_one[1], sisa_two[1]))
    print(f"  sisa sub-models bit-identical on 1 and 2 processes: {identical}")

    record = {"bench": "distributed", "dataset": args.dataset, "args": vars(args),
              "lightgcn": {"one_process": one, "two_ranks": two, "speedup": round(
                  one["sec_per_epoch_mean"] / two["sec_per_epoch_mean"], 3), "max_weight_difference": weight_gap},
              "sisa": {"one_process": sisa_one[0], "two_workers": sisa_two[0], "speedup": round(
                  sisa_one[0]["wall_seconds"] / sisa_two[0]["wall_seconds"], 3), "bit_identical": identical},
              "machine": machine_line(), "load_after": load_average(), "code_version": code_version(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with open(args.json_out, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    print(f"written to {args.json_out}")


if __name__ == "__main__":
    main()
