"""What UnlearnRec's pre-training epochs buy, on tuning seeds that no report evaluates (991 and 993 by default).

    .venv/bin/python benchmarks/probe_pretrain_epochs.py --dataset ml-100k --out results.jsonl

For each seed and backbone: the original (the tuning suite's training settings, that seed), then one preparation
with `--epochs` pre-training epochs and a check every `--every` epochs. A check is what preparation's own
selection looks at (`selection.Probe.check`, training and validation data only): the held-out simulated
request's zero-shot model, its validation Recall@20 and the AUC of its request edges against validation edges
(0.5 is what a retrained model gives). One JSON line per check, with the preparation's seconds, so the cost of
each extra epoch can be set against what it changes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from recunlearn.bench.suite import load_suite
from recunlearn.train.cache import train_cached
from recunlearn.train.inputs import load_data
from recunlearn.unlearn.unlearnrec import UnlearnRec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[991, 993], help="tuning seeds")
    parser.add_argument("--backbones", nargs="+", default=["lightgcn", "sgl", "simgcl"])
    parser.add_argument("--epochs", type=int, default=10, help="pre-training epochs (IEConfig.epochs)")
    parser.add_argument("--every", type=int, default=5, help="epochs between checks (IEConfig.select_every)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per (seed, backbone, check)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = load_suite(Path(__file__).parent / "suites" / "tuning-withdraw-scaling.yaml")
    for seed in args.seeds:
        for backbone in args.backbones:
            run = suite.run_config("ml-100k", backbone, seed)
            run = run.model_copy(update={"data": run.data.model_copy(update={"name": args.dataset})})
            data = load_data(run.data)
            original, _, _ = train_cached(run, data, progress=False)
            unlearner = UnlearnRec({"epochs": args.epochs, "select_every": args.every}, progress=False)
            unlearner.prepare(original, data)
            selected = unlearner.pretraining["selected"]["epoch"]
            for check in unlearner.pretraining["history"]:
                row = {"dataset": args.dataset, "seed": seed, "backbone": backbone, **check,
                       "selected": check["epoch"] == selected, "prepare_seconds": unlearner.prepare_seconds}
                with args.out.open("a") as out:
                    out.write(json.dumps(row) + "\n")
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                      flush=True)


if __name__ == "__main__":
    main()
