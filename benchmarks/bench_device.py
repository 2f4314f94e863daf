"""Benchmark: LightGCN's training epoch and validation pass on a GPU against the CPU, side by side in one run on
one machine, with the trainer's own code (`train.device`): the epoch samples on the CPU (shuffle and negatives
for every edge) and steps on the device; validation ranks every item for every user with a validation item.

    python benchmarks/bench_device.py --dataset gowalla --epochs 3 --cpu-threads 16 --out results.jsonl

One JSON line per device goes to --out; the GPU's speed-up over the CPU is printed.
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone

import numpy as np
import torch

from recunlearn.bench.environment import load_average, machine_line
from recunlearn.data.graph import build_graph
from recunlearn.data.registry import load_dataset
from recunlearn.models.registry import build_model
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer, optimizer_for, seed_everything, training_device
from recunlearn.train.version import TRAINING_PACKAGES, code_version


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args, data, device_name: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    run = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": args.dim, "layers": args.layers},
                                    "train": {"batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                                              "device": device_name, "threads": threads}})
    device = training_device(device_name)
    seed_everything(args.seed)
    model = build_model(run.model, data.n_users, data.n_items).attach(build_graph(data.train)).move_to(device)
    trainer = Trainer(run, progress=False)
    optimizer = optimizer_for(model, args.lr)
    rng, gen = np.random.default_rng(args.seed), torch.Generator().manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    epochs, validations, metrics = [], [], {}
    for epoch in range(args.epochs):
        began = time.perf_counter()
        loss = trainer.train_epoch(model, optimizer, data, rng, gen, epoch)
        synchronise(device)
        epochs.append(time.perf_counter() - began)
        began = time.perf_counter()
        metrics = trainer.validate(model, data)
        validations.append(time.perf_counter() - began)
        print(f"  {device_name} epoch {epoch + 1}: {epochs[-1]:.2f} s, validation {validations[-1]:.2f} s, loss "
              f"{loss:.4f}, valid Recall@20 {metrics['Recall@20']:.4f}", flush=True)
    return {"bench": "device", "dataset": args.dataset, "device": device_name, "threads": threads,
            "sec_per_epoch": [round(s, 3) for s in epochs], "sec_per_validation": [round(s, 3) for s in validations],
            # the first epoch pays the device's warm-up (kernel loading, allocator): the mean leaves it out
            "sec_per_epoch_after_first": float(np.mean(epochs[1:] or epochs)),
            "sec_per_validation_after_first": float(np.mean(validations[1:] or validations)),
            "valid_recall20_last": metrics.get("Recall@20"), "loss_last": loss,
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
            "machine": machine_line(device_name), "load_average": load_average(), "args": vars(args),
            "code": code_version(TRAINING_PACKAGES), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--cpu-threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="benchmarks/results/device.jsonl")
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    rows = {}
    for device_name in args.devices:
        rows[device_name] = row = measure(args, data, device_name, args.cpu_threads)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
    if {"cuda", "cpu"} <= rows.keys():
        cpu, gpu = rows["cpu"], rows["cuda"]
        print(f"GPU speed-up: epoch {cpu['sec_per_epoch_after_first'] / gpu['sec_per_epoch_after_first']:.1f}x, "
              f"validation {cpu['sec_per_validation_after_first'] / gpu['sec_per_validation_after_first']:.1f}x "
              f"({args.cpu_threads} CPU threads)")


if __name__ == "__main__":
    main()
