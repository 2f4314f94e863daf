"""Benchmark: how LightGCN's training cost grows with the graph and with the number of ranks.

For each size in `--edges`, a synthetic power-law graph shaped like gowalla (benchmarks/synthetic.py) is
generated once; then, for each count in `--nproc`, LightGCN trains on it in fresh processes (one process, or
data-parallel gloo ranks as `train.nproc` runs them) with the library's own set-up and step: the graph build,
an epoch's sampling (shuffle and negatives for every edge), `--warmup-steps` untimed steps, then `--steps`
timed optimiser steps. A whole epoch at the largest sizes would take hours, so the seconds per epoch are
projected: the epoch's sampling plus steps per epoch times seconds per step. Each rank reports its peak memory
(RSS), and what it held at start, after imports and before the data.

Every process runs `--threads` torch threads, so 2 ranks use twice the cores of 1. One JSON line per
(size, ranks) measurement goes to `--out`, then a Markdown table is printed; `--report` prints the table of
an existing file without running anything.

    .venv/bin/python benchmarks/bench_scaling.py --edges 1000000 4000000 16000000 --nproc 1 2 --steps 10
    (--readout whole split: on 2 ranks, also the readout split by rows of row_split.py, side by side)
    (a smoke run: --edges 200000 --steps 5 --out /tmp/scaling.jsonl)
    .venv/bin/python benchmarks/bench_scaling.py --report
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import resource
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from recunlearn.bench.environment import load_average, machine_line
from recunlearn.data import sampling
from recunlearn.data.graph import build_graph
from recunlearn.data.interactions import Interactions
from recunlearn.models.registry import build_model
from recunlearn.train.config import RunConfig
from recunlearn.train.distributed import Ranks
from recunlearn.train.launch import run_on_ranks
from recunlearn.train.trainer import Trainer, optimizer_for, seed_everything, training_device
from recunlearn.train.version import code_version
from row_split import RowBlockPropagation, split_step
from synthetic import as_dataset, power_law_interactions


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # kilobytes on Linux


def load_train(folder: str) -> Interactions:
    """The training edges the parent saved: already sorted and distinct, so no re-check (whose temporary
    arrays would count in the peak memory)."""
    meta = json.loads((Path(folder) / "shape.json").read_text())
    users, items = (np.load(Path(folder) / f"{name}.npy") for name in ("users", "items"))
    for array in (users, items):
        array.flags.writeable = False
    return Interactions(users, items, meta["n_users"], meta["n_items"])


def scaling_rank(run: RunConfig, folder: str, steps: int, warmup_steps: int, readout: str = "whole") -> dict:
    """In each rank's process: LightGCN set up as Trainer.fit sets it up, one epoch's sampling, then
    `warmup_steps` + `steps` optimiser steps with the trainer's step (the plain one in a single process, the
    data-parallel one on ranks, whose readout is whole on every rank) or, with `readout="split"` on ranks, the
    experiment of row_split.py. Rank 0 returns the timings and every rank's memory."""
    start_rss = peak_rss_mib()
    ranks = Ranks.active()   # None in a single process: the plain loop
    dataset = as_dataset(load_train(folder))
    cfg = run.train
    trainer = Trainer(run, progress=False, validate=False, ranks=ranks)
    seed_everything(cfg.seed, cfg.deterministic)
    torch.set_num_threads(cfg.threads)
    model = build_model(run.model, dataset.n_users, dataset.n_items, content=dataset)
    began = time.perf_counter()
    model.attach(build_graph(dataset.train))
    graph_seconds = time.perf_counter() - began
    device = training_device(cfg.device)
    if device.type == "cuda":
        model.move_to(device)
        torch.cuda.reset_peak_memory_stats(device)
    if ranks is not None:
        ranks.require_same(f"{dataset.hash}/{run.model_dump_json()}", "data or run configs")
        ranks.sync_parameters(model)
    optimizer = optimizer_for(model, cfg.lr)
    rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)

    model.train()
    model.start_epoch(gen)
    began = time.perf_counter()
    batches = sampling.bpr_epoch(dataset.train, rng, cfg.batch_size)
    first = next(batches)   # the generator shuffles and draws the whole epoch's negatives here
    sampling_seconds = time.perf_counter() - began
    batches = itertools.chain([first], batches)
    if ranks is None:
        step = trainer._step
    elif readout == "split":
        step = functools.partial(split_step, ranks, RowBlockPropagation.for_model(model, ranks))
    else:
        step = ranks.step
    for users, pos, neg in itertools.islice(batches, warmup_steps):
        step(model, optimizer, users, pos, neg)
    losses, step_seconds = [], []
    for users, pos, neg in itertools.islice(batches, steps):
        began = time.perf_counter()
        losses.append(step(model, optimizer, users, pos, neg))
        step_seconds.append(time.perf_counter() - began)   # ranks wait for each other every step: the group's pace
    if not all(math.isfinite(loss) for loss in losses):
        raise ValueError(f"the loss diverged: {losses}")

    memory = (start_rss, peak_rss_mib())
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    per_rank = [memory]
    if ranks is not None:
        per_rank = [None] * ranks.world_size
        dist.all_gather_object(per_rank, memory)
    return {"users": dataset.n_users, "items": dataset.n_items, "graph_build_seconds": round(graph_seconds, 3),
            "sampling_seconds_per_epoch": round(sampling_seconds, 3), "timed_steps": len(losses),
            "sec_per_step": sum(step_seconds) / len(losses), "step_seconds": [round(s, 4) for s in step_seconds],
            "last_loss": round(losses[-1], 5),
            "start_rss_mib_per_rank": [round(s, 1) for s, _ in per_rank],
            "peak_rss_mib_per_rank": [round(p, 1) for _, p in per_rank],
            "peak_gpu_mib_rank0": None if gpu_peak is None else round(gpu_peak, 1)}


def measure(args, folder: str, n_edges: int, nproc: int, readout: str) -> dict:
    run = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": args.dim, "layers": args.layers},
                                    "train": {"batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                                              "threads": args.threads, "nproc": nproc,
                                              "device": args.device}})
    load = load_average()
    began = time.perf_counter()
    # one process too runs in a fresh child, so that its memory compares with a rank's
    found = run_on_ranks(scaling_rank, nproc, run, folder, args.steps, args.warmup_steps, readout,
                         threads=args.threads, device=args.device)
    steps_per_epoch = math.ceil(n_edges / args.batch_size)
    found.update(ranks=nproc, readout=readout, steps_per_epoch=steps_per_epoch,
                 sec_per_step=round(found["sec_per_step"], 4),
                 projected_sec_per_epoch=round(found["sampling_seconds_per_epoch"]
                                               + steps_per_epoch * found["sec_per_step"], 1),
                 wall_seconds=round(time.perf_counter() - began, 2), load_before=load, load_after=load_average())
    print(f"  {n_edges:,} edges on {nproc} rank(s), {readout} readout: {found['sec_per_step']:.3f} s/step, projected "
          f"{found['projected_sec_per_epoch']:,.0f} s/epoch, graph build {found['graph_build_seconds']:.1f} s, "
          f"peak RSS per rank {found['peak_rss_mib_per_rank']} MiB, {found['wall_seconds']:.1f} s with start-up",
          flush=True)
    return found


def generate(n_edges: int, seed: int, folder: Path) -> dict:
    """Generates the graph and saves its training edges to `folder` for the ranks to load."""
    began = time.perf_counter()
    train = power_law_interactions(n_edges, seed)
    seconds = time.perf_counter() - began
    np.save(folder / "users.npy", train.users)
    np.save(folder / "items.npy", train.items)
    (folder / "shape.json").write_text(json.dumps({"n_users": train.n_users, "n_items": train.n_items}))
    print(f"{n_edges:,} edges: {train.n_users:,} users, {train.n_items:,} items, generated in {seconds:.1f} s",
          flush=True)
    return {"generation_seconds": round(seconds, 2), "max_user_degree": int(train.user_degree().max()),
            "max_item_degree": int(train.item_degree().max())}


# --- the table ---------------------------------------------------------------------------------------------

COLUMNS = ("edges", "users", "items", "ranks", "readout", "s/step", "sampling s/epoch", "steps/epoch",
           "projected s/epoch", "graph build s", "generation s", "RSS at start MiB", "peak RSS MiB per rank",
           "peak GPU MiB (rank 0)",
           "load before/after")


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        projected = r["projected_sec_per_epoch"]
        cells = (f"{r['edges']:,}", f"{r['users']:,}", f"{r['items']:,}", r["ranks"],
                 "" if r["ranks"] == 1 else r.get("readout", "whole"),   # older rows: the trainer's, whole
                 f"{r['sec_per_step']:.3f}",
                 f"{r['sampling_seconds_per_epoch']:.2f}", f"{r['steps_per_epoch']:,}",
                 f"{projected:,.0f}" + (f" ({projected / 3600:.1f} h)" if projected >= 3600 else ""),
                 f"{r['graph_build_seconds']:.2f}", f"{r['generation_seconds']:.2f}",
                 " / ".join(f"{m:,.0f}" for m in r["start_rss_mib_per_rank"]),
                 " / ".join(f"{m:,.0f}" for m in r["peak_rss_mib_per_rank"]),
                 "" if r.get("peak_gpu_mib_rank0") is None else f"{r['peak_gpu_mib_rank0']:,.0f}",
                 f"{r['load_before']} / {r['load_after']}")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    machines = sorted({r["machine"] for r in rows})
    steps = sorted({(r["timed_steps"], r["args"]["warmup_steps"], r["threads"]) for r in rows})
    notes = [f"Projected s/epoch = sampling s/epoch + steps/epoch x s/step, from {timed} timed steps after "
             f"{warm} warm-up steps ({threads} torch thread(s) per process); not a measured epoch."
             for timed, warm, threads in steps]
    return "\n".join([*lines, "", *notes, *(f"Machine: {m}" for m in machines)])


def read_rows(path: str) -> list[dict]:
    with open(path) as fh:
        return [row for row in map(json.loads, filter(str.strip, fh)) if row.get("bench") == "scaling"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, nargs="+", default=[1_000_000, 4_000_000, 16_000_000])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="rank counts to measure")
    parser.add_argument("--readout", nargs="+", choices=["whole", "split"], default=["whole"],
                        help="on several ranks: LightGCN's readout whole on every rank (the trainer's), or split "
                             "by rows (the experiment of row_split.py); each one given is measured in turn")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps per measurement")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0, help="seeds the graph and the training")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: the model, graph and steps on the GPU "
                        "(sampling stays on the CPU, as in the trainer; NCCL between ranks, one GPU each)")
    parser.add_argument("--out", default="benchmarks/results/scaling.jsonl")
    parser.add_argument("--report", action="store_true", help="print the table of --out and stop")
    args = parser.parse_args()
    if args.report:
        if not Path(args.out).is_file():
            parser.error(f"no results to report: {args.out} does not exist (run the benchmark first)")
        print(table(read_rows(args.out)))
        return
    if args.steps < 1 or args.warmup_steps < 0:
        parser.error("--steps must be at least 1 and --warmup-steps at least 0")
    for n_edges in args.edges:
        if math.ceil(n_edges / args.batch_size) < args.steps + args.warmup_steps:
            parser.error(f"{n_edges} edges make {math.ceil(n_edges / args.batch_size)} batches of "
                         f"{args.batch_size}, fewer than --steps + --warmup-steps")
    torch.set_num_threads(args.threads)
    print("machine:", machine_line(args.device), flush=True)

    rows = []
    for n_edges in args.edges:
        with tempfile.TemporaryDirectory(prefix="recunlearn-scaling-") as tmp:
            graph = generate(n_edges, args.seed, Path(tmp))
            for nproc, readout in [(n, r) for n in args.nproc for r in (args.readout if n > 1 else ["whole"])]:
                found = measure(args, tmp, n_edges, nproc, readout)
                row = {"bench": "scaling", "edges": n_edges, **found, **graph, "batch_size": args.batch_size,
                       "dim": args.dim, "layers": args.layers, "threads": args.threads, "seed": args.seed,
                       "args": vars(args), "machine": machine_line(args.device), "torch": torch.__version__,
                       "code_version": code_version(),
                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                with open(args.out, "a") as fh:   # one line per measurement, so a later failure keeps it
                    fh.write(json.dumps(row) + "\n")
                rows.append(row)
    print(f"written to {args.out}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
