#!/usr/bin/env bash
# The recorded UnlearnRec benchmarks (BENCHMARKS.md). Each line appends to benchmarks/results/unlearnrec.jsonl
# and prints its table. Trained models (original, poisoned, retrained) are cached by data hash, so the
# lines share them. Usage: bash benchmarks/unlearnrec_suite.sh [main|backbones|finetune|requests|gowalla]
set -euo pipefail
cd "$(dirname "$0")/.."
B=".venv/bin/recunlearn bench unlearnrec --quiet --threads 1 --out benchmarks/results/unlearnrec.jsonl"
IE="--ie-set lr=0.01 --ie-set epochs=10 --ie-set finetune_lr=0.01 --ie-set withdraw_init=5"
part="${1:-all}"
if [[ $part == main || $part == all ]]; then
  $B --dataset ml-1m --backbone lightgcn --request adversarial:1.0 $IE
fi
if [[ $part == backbones || $part == all ]]; then
  $B --dataset ml-1m --backbone simgcl --request adversarial:1.0 $IE
  $B --dataset ml-1m --backbone sgl --request adversarial:1.0 $IE
fi
if [[ $part == finetune || $part == all ]]; then   # fractional fine-tuning (encoders cached by the lines above)
  $B --dataset ml-1m --backbone lightgcn --request adversarial:1.0 $IE --finetune-epochs 0.25
  for backbone in lightgcn sgl simgcl; do
    $B --dataset ml-1m --backbone $backbone --request adversarial:1.0 $IE --finetune-epochs 0.5
  done
  for backbone in sgl simgcl; do
    $B --dataset ml-1m --backbone $backbone --request adversarial:1.0 $IE --finetune-epochs 0.25
  done
  $B --dataset ml-1m --backbone lightgcn --request adversarial:1.0 $IE --finetune-epochs 0.33
fi
if [[ $part == requests || $part == all ]]; then
  $B --dataset ml-1m --backbone lightgcn --request random:0.01 $IE
  $B --dataset ml-1m --backbone lightgcn --request user:0.01:random $IE
  $B --dataset ml-1m --backbone lightgcn --request random:0.01 --stream 10 $IE
  $B --dataset ml-1m --backbone lightgcn --request random:0.01 --stream 10 $IE --ie-set sequential=compose
  $B --dataset ml-1m --backbone lightgcn --request random:0.01 --stream 10 $IE --stream-finetune-every 5 --finetune-epochs 0.5
fi
if [[ $part == gowalla || $part == all ]]; then
  $B --dataset gowalla --backbone lightgcn --request random:0.01 $IE
fi
