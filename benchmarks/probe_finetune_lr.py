"""UnlearnRec fine-tuning on ml-100k, validation data only: utility and forgetting against the number of
Adam steps and the fine-tuning learning rate, on tuning requests that no report evaluates.

    .venv/bin/python benchmarks/probe_finetune_lr.py [--seeds 991 993]

Batch 1024 gives one ml-100k epoch about as many steps as one ml-1m epoch at batch 8192. Prints validation
Recall@20 and the AUC of request-edge scores against validation-edge scores (0.5: like a retrained model).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from recunlearn.bench.suite import load_suite
from recunlearn.data.registry import load_dataset
from recunlearn.data.requests import random_request
from recunlearn.eval.ranking import evaluate
from recunlearn.train.cache import train_cached
from recunlearn.unlearn.unlearnrec import UnlearnRec

SETTINGS = [{}, {"finetune_epochs": 1}, {"finetune_epochs": 1, "batch_size": 1024},
            {"finetune_epochs": 1, "batch_size": 1024, "finetune_lr": 3e-4},
            {"finetune_epochs": 1, "batch_size": 1024, "finetune_lr": 1e-4}, {"finetune_epochs": 1, "finetune_lr": 1e-4}]


def validation_measures(scorer, data, request, residual) -> tuple[float, float]:
    recall = evaluate(scorer, data.valid, residual, ks=[20])["Recall@20"]
    pairs = [scorer.score_pairs(torch.from_numpy(s.users), torch.from_numpy(s.items)).numpy()
             for s in (request, data.valid)]
    labels = np.r_[np.ones(len(pairs[0])), np.zeros(len(pairs[1]))]
    return recall, roc_auc_score(labels, np.concatenate(pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[991, 993], help="tuning request seeds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("ml-100k")
    model, _, _ = train_cached(load_suite("benchmarks/suites/quick.yaml").run_config("ml-100k", "lightgcn", 0), data,
                               progress=False)
    state = Path(tempfile.mkdtemp())
    UnlearnRec({}, progress=False).prepare(model.clone(), data).save(state)
    for seed in args.seeds:
        request = random_request(data, 0.01, seed=seed).edges
        residual = data.train.subtract(request)
        for setting in SETTINGS:
            unlearner = UnlearnRec.load(state, model.clone(), data, progress=False)
            unlearner.config = unlearner.config.model_copy(update=setting)
            recall, auc = validation_measures(unlearner.unlearn(request).scorer, data, request, residual)
            print(f"request seed {seed}  {setting or 'zero-shot'}: valid Recall@20 {recall:.4f}, "
                  f"request-vs-validation AUC {auc:.3f}", flush=True)


if __name__ == "__main__":
    main()
