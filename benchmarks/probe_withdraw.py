"""Probe: could the encoder's withdraw term forget the adversarial request zero-shot, had pre-training
learned it? Applies the pre-trained encoder of the UnlearnRec benchmark with its learned withdraw rates W_η,
then with every W_η set to one value, and audits each zero-shot model against Retrain.

    .venv/bin/python benchmarks/probe_withdraw.py --dataset ml-1m --values -5 5 20

Probes the encoder pre-trained with the spec's withdraw start (W_η 0.002, lr 0.05: the suite's setting
before the withdraw prior), from the benchmark cache (pre-trained first if absent).
"""
from __future__ import annotations

import argparse

import torch

from recunlearn.bench.unlearnrec import build_setting, prepared_encoder
from recunlearn.eval.forgetting import audit
from recunlearn.train.runs import test_metrics
from recunlearn.unlearn.influence_encoder import IEConfig
from recunlearn.unlearn.retrain import Retrain

SPEC_START_IE = IEConfig(lr=0.05, epochs=10, finetune_lr=0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--backbone", default="lightgcn")
    parser.add_argument("--values", type=float, nargs="+", default=[-5.0, 5.0, 20.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    setting = build_setting(args.dataset, args.backbone, "adversarial:1.0", progress=False)
    ie = prepared_encoder(setting, SPEC_START_IE, progress=False)
    retrain = Retrain(setting.run, None, progress=False).prepare(setting.original, setting.dataset).unlearn(setting.edges)
    residual = retrain.dataset
    reference = test_metrics(retrain.model, residual, ks=[20])["Recall@20"]
    learned = ie.encoder.withdraw.detach().clone()
    print(f"learned W_η: mean {learned.mean():.3f}, min {learned.min():.3f}, max {learned.max():.3f}")
    print("| W_η | Recall@20 (× Retrain) | forget score | non-edge score | MIA gap vs Retrain |")
    print("|---|---|---|---|---|")
    for value in [None, *args.values]:
        with torch.no_grad():
            ie.encoder.withdraw.copy_(learned if value is None else torch.full_like(learned, value))
        model = ie.fork().unlearn(setting.edges, finetune_epochs=0).model
        recall = test_metrics(model, residual, ks=[20])["Recall@20"]
        report = audit(model, setting.edges, residual.train, residual.test, retrain=retrain.model,
                       valid=residual.valid)
        print(f"| {'learned' if value is None else f'{value:g}'} | {recall:.4f} ({recall / reference:.3f}) | "
              f"{report['forget_score_mean']:.2f} | {report['nonedge_score_mean']:.2f} | "
              f"{abs(report['mia_auc_gap']):.3f} |")


if __name__ == "__main__":
    main()
