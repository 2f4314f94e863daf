"""CRAGRU against the base model's own order ("ori"), Retrain, UnlearnRec and Fine-tune, on the paper's protocol:
10% of users forgotten, all their training interactions but one (kept at random, seeded).

Per method: HR/NDCG@5/10/20 of the remaining users and of the forgotten users (test set, residual training
items masked); propagation bias on the 50 non-target users most similar to the targets (Jaccard of training
histories): how far their top-20 lists and scores moved from the original model's, and their utility against
the original's and Retrain's; completeness on the forgotten pairs (mean score, percentile rank, Recall@20 with
the forgotten items as truth) against Retrain's; CRAGRU's latency per forgotten user and generate's failure rate.

    python benchmarks/bench_cragru.py --dataset ml-100k --backbone lightgcn --out benchmarks/results/cragru.jsonl
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from recunlearn.bench.environment import load_average, machine_line, versions
from recunlearn.bench.prepared import prepared
from recunlearn.data.interactions import Dataset, Interactions
from recunlearn.data.registry import load_dataset
from recunlearn.eval.forgetting import jaccard_at_k, pair_scores, percentile_ranks
from recunlearn.eval.ranking import evaluate
from recunlearn.train.cache import train_cached
from recunlearn.train.config import RunConfig
from recunlearn.unlearn.cragru import CRAGRU, RerankScorer
from recunlearn.unlearn.cragru.retrieval import STRATEGIES
from recunlearn.unlearn.finetune import FineTune
from recunlearn.unlearn.retrain import Retrain

KS = (5, 10, 20)
TRAIN = {"batch_size": 8192, "lr": 0.01, "patience": 5, "epochs": 200}   # the project's quick/standard suites


def users_but_one(data: Dataset, rho: float, seed: int) -> Interactions:
    """All training interactions but one (drawn at random) of a fraction `rho` of the users with at least two."""
    rng = np.random.default_rng(seed)
    csr = data.train.to_csr()
    eligible = np.flatnonzero(np.diff(csr.indptr) >= 2)
    users = np.sort(rng.choice(eligible, int(round(rho * data.n_users)), replace=False))
    pairs = []
    for user in users:
        items = csr[user].indices
        keep = rng.integers(len(items))
        pairs += [(user, item) for n, item in enumerate(items) if n != keep]
    return Interactions.from_arrays(*np.array(pairs).T, data.n_users, data.n_items)


def most_similar(train: Interactions, targets: np.ndarray, n: int) -> np.ndarray:
    """The `n` non-target users with the highest Jaccard similarity of training histories to any target."""
    csr = train.to_csr().astype(np.float32)
    overlap = (csr @ csr[targets].T).toarray()
    sizes = np.diff(csr.indptr)
    jaccard = overlap / np.maximum(sizes[:, None] + sizes[targets][None, :] - overlap, 1)
    best = jaccard.max(axis=1)
    best[targets] = -1
    return np.argsort(-best, kind="stable")[:n]


def utility(scorer, data: Dataset, residual: Interactions, users) -> dict:
    found = evaluate(scorer, data.test, residual, KS, ("HR", "NDCG"), users=users)
    return {k: round(v, 5) for k, v in found.items()}


def measure(scorer, original, retrain, data: Dataset, residual: Interactions, forget: Interactions,
            targets: np.ndarray, remaining: np.ndarray, similar: np.ndarray) -> dict:
    out = {"remaining": utility(scorer, data, residual, remaining), "forget": utility(scorer, data, residual, targets),
           "similar": utility(scorer, data, residual, similar)}
    every = torch.as_tensor(similar)
    moved = (scorer.score_users(every) - original.score_users(every)).abs().amax(dim=1)
    out["propagation"] = {"top20_jaccard_vs_original": float(jaccard_at_k(scorer, original, similar, residual).mean()),
                          "identical_lists": int((jaccard_at_k(scorer, original, similar, residual) == 1).sum()),
                          "max_abs_score_change": float(moved.max()), "users": len(similar)}
    if retrain is not None:
        out["propagation"]["top20_jaccard_vs_retrain"] = float(jaccard_at_k(scorer, retrain, similar, residual).mean())
    own = forget.select(np.isin(forget.users, targets))
    recall = evaluate(scorer, own, residual, (20,), ("Recall",), users=targets)
    out["completeness"] = {"forgotten_pairs": len(own), "mean_score": float(pair_scores(scorer, own).mean()),
                           "mean_percentile_rank": float(percentile_ranks(scorer, own, residual).mean()),
                           "forgotten_Recall@20": round(recall["Recall@20"], 5)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--backbone", default="lightgcn")
    parser.add_argument("--rho", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-forget-users", type=int, default=None, help="evaluate CRAGRU (and every method's "
                        "forget-user metrics) on a random subsample of the forgotten users")
    parser.add_argument("--generate-users", type=int, default=0, help="forgotten users scored in generate mode")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--modes", default="likelihood,generate")
    parser.add_argument("--methods", default="retrain,unlearnrec,finetune")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (2 oversubscribe a busy 2-core machine)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-new-tokens", type=int, default=768)
    parser.add_argument("--out", default="benchmarks/results/cragru.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset(args.dataset)
    run = RunConfig.model_validate({"data": {"name": args.dataset}, "model": {"name": args.backbone}, "train": TRAIN})
    original, _, _ = train_cached(run, data, progress=False)
    forget = users_but_one(data, args.rho, args.seed)
    residual_data = data.with_train(data.train.subtract(forget))
    residual = residual_data.train
    all_targets = np.unique(forget.users)
    targets = all_targets
    if args.max_forget_users and len(all_targets) > args.max_forget_users:
        targets = np.sort(np.random.default_rng(args.seed + 1).choice(all_targets, args.max_forget_users, replace=False))
    remaining = np.setdiff1d(np.arange(data.n_users), all_targets)
    similar = most_similar(data.train, all_targets, 50)
    common = {"dataset": args.dataset, "backbone": args.backbone, "request": f"users-but-one:{args.rho}",
              "seed": args.seed, "forget_users": len(all_targets), "forget_edges": len(forget),
              "evaluated_forget_users": len(targets), "machine": machine_line(), "versions": versions(),
              "threads": args.threads}
    records = []

    def emit(method: str, scorer, seconds: dict, retrain=None, users=None, **extra) -> None:
        load = load_average()
        users = targets if users is None else users
        record = {**common, "method": method, "seconds": seconds, "load_average": load, **extra,
                  "evaluated_forget_users": len(users),
                  **measure(scorer, original, retrain, data, residual, forget, users, remaining, similar)}
        records.append(record)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(method, json.dumps({k: record[k] for k in ("forget", "propagation", "completeness")}), flush=True)

    # --- references ---------------------------------------------------------------------------------
    methods = args.methods.split(",") if args.methods else []
    retrain_model = None
    if "retrain" in methods:
        result = Retrain(run=run, progress=False).prepare(original, data).unlearn(forget)
        retrain_model = result.model
        emit("retrain", retrain_model, result.seconds, None, **{k: result.report.get(k) for k in ("cached", "seed")})
    if "finetune" in methods:
        result = FineTune(run=run, progress=False).prepare(original.clone(), data).unlearn(forget)
        emit("finetune", result.scorer, result.seconds, retrain_model)

    # --- CRAGRU and the base model's own order on the same candidates ---------------------------------
    method = CRAGRU({"model": args.model, "threads": args.threads, "max_new_tokens": args.max_new_tokens},
                    progress=True)
    start = time.perf_counter()
    method.prepare(original, data)
    prepare_seconds = time.perf_counter() - start
    ready = method.state
    subset = forget.select(np.isin(forget.users, targets))
    ori = RerankScorer(original, {int(u): method.candidates(int(u)) for u in targets})
    if "likelihood" in args.modes.split(","):
        emit("ori", ori, {"total": 0.0}, retrain_model)
    for mode, users in (("likelihood", targets), ("generate", targets[:args.generate_users])):
        if len(users) == 0 or mode not in args.modes.split(","):
            continue
        if len(users) < len(targets):       # the base order on the same subsample, for comparison
            emit(f"ori-{mode}-users", ori, {"total": 0.0}, retrain_model, users)
        edges = subset.select(np.isin(subset.users, users))
        for strategy in args.strategies.split(","):
            method.state = ready
            method.config = method.config.model_copy(update={"mode": mode, "strategy": strategy})
            result = method.unlearn(edges)
            report = {k: v for k, v in result.report.items() if k != "not_erased"}
            emit(f"cragru-{mode}-{strategy}", result.scorer, {**result.seconds, "prepare": prepare_seconds},
                 retrain_model, users, cragru=report)
    if "unlearnrec" in methods:     # last: its encoder's pre-training is the longest step when not cached
        ready = prepared("unlearnrec", {}, run, original, data, progress=False)
        result = ready.unlearner.unlearn(forget)
        emit("unlearnrec", result.scorer, {**result.seconds, "prepare": ready.seconds,
                                           "prepare_reused": ready.reused}, retrain_model)


def report(path: str) -> str:
    """Markdown tables of a results file, one section per (dataset, backbone)."""
    latest = {}
    for line in open(path):          # a method measured again in a later run: the latest row counts
        row = json.loads(line)
        latest.pop((row["dataset"], row["backbone"], row["method"]), None)
        latest[(row["dataset"], row["backbone"], row["method"])] = row
    rows = list(latest.values())
    out = []
    for key in dict.fromkeys((r["dataset"], r["backbone"]) for r in rows):
        group = [r for r in rows if (r["dataset"], r["backbone"]) == key]
        first = group[0]
        base = next((r for r in group if r["method"] == "ori"), None)
        retrain = next((r for r in group if r["method"] == "retrain"), None)
        out.append(f"### {key[0]}, {key[1]}: {first['forget_users']} users forgotten ({first['forget_edges']} edges)\n")
        out.append("| method | forget users | HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 | NDCG@20 | remaining NDCG@10 "
                   "| remaining NDCG@20 |")
        out.append("|---" * 10 + "|")
        for r in group:
            f, m = r["forget"], r["remaining"]
            out.append(f"| {r['method']} | {f['users']} | " + " | ".join(f"{f[k]:.4f}" for k in
                       ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"))
                       + f" | {m['NDCG@10']:.4f} | {m['NDCG@20']:.4f} |")
        out.append("\nPropagation bias on the 50 non-target users most similar to the targets, and completeness on "
                   "the forgotten pairs of the evaluated forget users:\n")
        out.append("| method | identical top-20 lists (of 50) | top-20 Jaccard vs original | max abs score change "
                   "| NDCG@10 (similar) | vs original | vs Retrain | top-20 Jaccard vs Retrain | forgotten items' "
                   "percentile rank | forgotten Recall@20 |")
        out.append("|---" * 10 + "|")
        for r in group:
            p, c, s = r["propagation"], r["completeness"], r["similar"]["NDCG@10"]
            vs_base = f"{s - base['similar']['NDCG@10']:+.4f}" if base else "-"
            vs_retrain = f"{s - retrain['similar']['NDCG@10']:+.4f}" if retrain else "-"
            jr = f"{p['top20_jaccard_vs_retrain']:.3f}" if "top20_jaccard_vs_retrain" in p else "-"
            out.append(f"| {r['method']} | {p['identical_lists']} | {p['top20_jaccard_vs_original']:.3f} | "
                       f"{p['max_abs_score_change']:.3g} | {s:.4f} | {vs_base} | {vs_retrain} | {jr} | "
                       f"{c['mean_percentile_rank']:.3f} | {c['forgotten_Recall@20']:.4f} |")
        out.append("\nCost (seconds; load average of the 2-core machine when the row was written):\n")
        out.append("| method | request seconds | per forgotten user | prepare | LLM calls | failures (rate) | "
                   "cache hits | load |")
        out.append("|---" * 8 + "|")
        for r in group:
            llm, sec = r.get("cragru"), r["seconds"]
            per_user = f"{llm['seconds_per_user']:.2f}" if llm else "-"
            fails = f"{llm['failures']} ({llm['failure_rate']:.2f})" if llm else "-"
            prepare = sec.get("prepare")
            out.append(f"| {r['method']} | {sec.get('total', 0):.1f} | {per_user} | "
                       f"{'-' if prepare is None else f'{prepare:.1f}'} | {llm['llm_calls'] if llm else '-'} | {fails} | "
                       f"{llm['cache_hits'] if llm else '-'} | {r['load_average']} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        print(report(sys.argv[2]))
    else:
        main()
