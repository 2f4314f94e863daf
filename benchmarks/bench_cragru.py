"""CRAGRU against the base model's own order ("ori"), Retrain, UnlearnRec and Fine-tune, on the paper's protocol:
10% of users forgotten, all their training interactions but one (kept at random, seeded).

Per method: HR/NDCG@5/10/20 of the remaining users and of the forgotten users (test set, residual training
items masked); propagation bias on the 50 non-target users most similar to the targets (Jaccard of training
histories): how far their top-20 lists and scores moved from the original model's, and their utility against
the original's and Retrain's; completeness on the forgotten pairs (mean score, percentile rank, Recall@20 with
the forgotten items as truth) against Retrain's; CRAGRU's latency per forgotten user and generate's failure rate.

As in the harness, seed s trains the original model and draws the request, and Retrain trains with seed s + 1.
The language model's answers are cached per run (a fresh folder), so the first strategy's latency is measured
and the strategies that send the same prompts reuse its answers.

    python benchmarks/bench_cragru.py --dataset ml-100k --backbone lightgcn --seed 0 --out benchmarks/results/cragru.jsonl
    python benchmarks/bench_cragru.py --report benchmarks/results/cragru.jsonl
"""
from __future__ import annotations

import argparse
import json
import tempfile
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
from recunlearn.train.version import code_version
from recunlearn.unlearn.cragru import CRAGRU, RerankScorer
from recunlearn.unlearn.cragru.retrieval import STRATEGIES
from recunlearn.unlearn.finetune import FineTune
from recunlearn.unlearn.retrain import Retrain

KS = (5, 10, 20)
TRAIN = {"batch_size": 8192, "lr": 0.01, "patience": 5, "epochs": 200}   # the project's quick/standard suites


def forgotten_interactions(data: Dataset, rho: float, seed: int, share: float | None = None) -> Interactions:
    """A fraction `rho` of the users with at least two training interactions forget all of them but one (drawn at
    random; the paper's protocol), or, with `share`, that share of them (at least one forgotten, one kept)."""
    rng = np.random.default_rng(seed)
    csr = data.train.to_csr()
    eligible = np.flatnonzero(np.diff(csr.indptr) >= 2)
    users = np.sort(rng.choice(eligible, int(round(rho * data.n_users)), replace=False))
    pairs = []
    for user in users:
        items = csr[user].indices
        if share is None:
            keep = rng.integers(len(items))
            pairs += [(user, item) for n, item in enumerate(items) if n != keep]
        else:
            n_forget = int(np.clip(round(share * len(items)), 1, len(items) - 1))
            pairs += [(user, item) for item in rng.choice(items, n_forget, replace=False)]
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
    parser.add_argument("--seed", type=int, default=0, help="trains the original and draws the request; "
                        "Retrain trains with seed + 1")
    parser.add_argument("--max-forget-users", type=int, default=None, help="evaluate CRAGRU (and every method's "
                        "forget-user metrics) on a random subsample of the forgotten users")
    parser.add_argument("--forget-share", type=float, default=None, help="each forgotten user forgets this share "
                        "of their interactions instead of all but one (the paper's protocol), so that more history "
                        "is left for the retrieval strategies to filter")
    parser.add_argument("--history-limit", type=int, default=None, help="CRAGRU's history_limit (default: "
                        "the library's)")
    parser.add_argument("--generate-users", type=int, default=0, help="forgotten users scored in generate mode")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--modes", default="likelihood,generate")
    parser.add_argument("--methods", default="retrain,unlearnrec,finetune")
    parser.add_argument("--patience", type=int, default=TRAIN["patience"], help="validations without improvement "
                        "before training stops (originals and Retrain alike); ml-100k at batch 8192 has 10 steps "
                        "per epoch, where 5 can stop in a passing plateau")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (2 oversubscribe a busy 2-core machine)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-new-tokens", type=int, default=768)
    parser.add_argument("--out", default="benchmarks/results/cragru.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset(args.dataset)
    run = RunConfig.model_validate({"data": {"name": args.dataset}, "model": {"name": args.backbone},
                                    "train": {**TRAIN, "seed": args.seed, "patience": args.patience}})
    original, _, _ = train_cached(run, data, progress=False)
    forget = forgotten_interactions(data, args.rho, args.seed, args.forget_share)
    residual_data = data.with_train(data.train.subtract(forget))
    residual = residual_data.train
    all_targets = np.unique(forget.users)
    targets = all_targets
    if args.max_forget_users and len(all_targets) > args.max_forget_users:
        targets = np.sort(np.random.default_rng(args.seed + 1).choice(all_targets, args.max_forget_users, replace=False))
    remaining = np.setdiff1d(np.arange(data.n_users), all_targets)
    similar = most_similar(data.train, all_targets, 50)
    request = f"users-but-one:{args.rho}" if args.forget_share is None else f"users-share:{args.rho}:{args.forget_share}"
    common = {"dataset": args.dataset, "backbone": args.backbone, "request": request, "history_limit": args.history_limit,
              "patience": args.patience,
              "seed": args.seed, "forget_users": len(all_targets), "forget_edges": len(forget),
              "evaluated_forget_users": len(targets), "machine": machine_line(), "versions": versions(),
              "code_version": code_version(), "threads": args.threads}
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
        emit("retrain", retrain_model, result.seconds, None, cached=result.report.get("cached"),
             retrain_seed=result.report.get("seed"))
    if "finetune" in methods:
        result = FineTune(run=run, progress=False).prepare(original.clone(), data).unlearn(forget)
        emit("finetune", result.scorer, result.seconds, retrain_model)

    # --- CRAGRU and the base model's own order on the same candidates ---------------------------------
    answers = tempfile.TemporaryDirectory(prefix="cragru-answers-")     # removed when the run ends
    settings = {"model": args.model, "threads": args.threads, "max_new_tokens": args.max_new_tokens}
    if args.history_limit is not None:
        settings["history_limit"] = args.history_limit
    method = CRAGRU(settings, progress=True, cache_dir=answers.name)
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


def request_seed(row: dict) -> int:
    """The seed that trained the original and drew the request (early Retrain rows stored their own seed)."""
    return row["seed"] - 1 if row["method"] == "retrain" and "retrain_seed" not in row else row["seed"]


def mean_std(values: list[float], digits: int = 4, sign: str = "") -> str:
    """`mean ± std` over seeds (sample std), or the value alone when there is one."""
    if len(values) == 1:
        return f"{values[0]:{sign}.{digits}f}"
    return f"{np.mean(values):{sign}.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def report(*paths: str) -> str:
    """Markdown tables of results files, one section per (dataset, backbone); mean ± std over the seeds."""
    latest = {}
    for path in paths:
        for line in open(path):      # a method measured again in a later run: the latest row counts
            row = json.loads(line)
            key = (row["dataset"], row["backbone"], row["request"], row.get("history_limit"),
                   row.get("patience", TRAIN["patience"]), row["method"], request_seed(row))
            latest.pop(key, None)
            latest[key] = row
    out = []
    for setting in dict.fromkeys(key[:5] for key in latest):
        dataset, backbone, request, limit, patience = setting
        rows = {key[5:]: row for key, row in latest.items() if key[:5] == setting}
        methods = list(dict.fromkeys(method for method, _ in rows))
        seeds = sorted({seed for _, seed in rows})
        by_method = {m: [rows[m, seed] for seed in seeds if (m, seed) in rows] for m in methods}

        def diff_to(reference: str, method: str, value) -> str:
            """Mean over the seeds both have of value(row) - value(reference's row of the same seed)."""
            pairs = [(rows[method, s], rows[reference, s]) for s in seeds if (method, s) in rows and (reference, s) in rows]
            return mean_std([value(a) - value(b) for a, b in pairs], sign="+") if pairs else "-"

        first = {seed: row for (_, seed), row in reversed(rows.items())}     # any row of each seed
        sizes = ", ".join(f"seed {s}: {first[s]['forget_users']} users, {first[s]['forget_edges']} edges" for s in seeds)
        limit = "" if limit is None else f", history_limit {limit}"
        out.append(f"### {dataset}, {backbone}, {request}{limit}, training patience {patience} ({sizes})\n")
        out.append("Forget users (their test items) and remaining users, mean ± std over the seeds:\n")
        out.append("| method | seeds | forget users | HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 | NDCG@20 "
                   "| remaining NDCG@10 | remaining NDCG@20 |")
        out.append("|---" * 11 + "|")
        for m, group in by_method.items():
            f = [r["forget"] for r in group]
            users = sorted({x["users"] for x in f})
            out.append(f"| {m} | {len(group)} | {'/'.join(map(str, users))} | "
                       + " | ".join(mean_std([x[k] for x in f]) for k in
                                    ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"))
                       + " | " + " | ".join(mean_std([r["remaining"][k] for r in group]) for k in ("NDCG@10", "NDCG@20"))
                       + " |")
        out.append("\nPropagation bias on the 50 non-target users most similar to the targets (differences are "
                   "taken seed by seed), and completeness on the forgotten pairs of the evaluated forget users:\n")
        out.append("| method | identical top-20 lists (of 50) | top-20 Jaccard vs original | max abs score change "
                   "| NDCG@10 (similar) | vs original | vs Retrain | top-20 Jaccard vs Retrain | forgotten items' "
                   "percentile rank | forgotten Recall@20 |")
        out.append("|---" * 10 + "|")
        similar = lambda r: r["similar"]["NDCG@10"]     # noqa: E731
        for m, group in by_method.items():
            p = [r["propagation"] for r in group]
            jr = [x["top20_jaccard_vs_retrain"] for x in p if "top20_jaccard_vs_retrain" in x]
            out.append(f"| {m} | {mean_std([x['identical_lists'] for x in p], 0)} | "
                       f"{mean_std([x['top20_jaccard_vs_original'] for x in p], 3)} | "
                       f"{max(x['max_abs_score_change'] for x in p):.3g} | {mean_std([similar(r) for r in group])} | "
                       f"{diff_to('ori', m, similar)} | {diff_to('retrain', m, similar)} | "
                       f"{mean_std(jr, 3) if jr else '-'} | "
                       f"{mean_std([r['completeness']['mean_percentile_rank'] for r in group], 3)} | "
                       f"{mean_std([r['completeness']['forgotten_Recall@20'] for r in group])} |")
        out.append("\nCost (seconds, mean ± std over the seeds; load average of the 2-core machine when the rows "
                   "were written):\n")
        out.append("| method | request seconds | per forgotten user | prepare | LLM calls | failures (rate) | "
                   "cache hits | load |")
        out.append("|---" * 8 + "|")
        for m, group in by_method.items():
            llm = [r["cragru"] for r in group if r.get("cragru")]
            prepare = [r["seconds"]["prepare"] for r in group if r["seconds"].get("prepare") is not None]
            loads = [r["load_average"] for r in group]
            out.append(f"| {m} | {mean_std([r['seconds'].get('total', 0) for r in group], 1)} | "
                       f"{mean_std([x['seconds_per_user'] for x in llm], 2) if llm else '-'} | "
                       f"{mean_std(prepare, 1) if prepare else '-'} | "
                       f"{sum(x['llm_calls'] for x in llm) if llm else '-'} | "
                       + (f"{sum(x['failures'] for x in llm)} ({np.mean([x['failure_rate'] for x in llm]):.2f})"
                          if llm else "-")
                       + f" | {sum(x['cache_hits'] for x in llm) if llm else '-'} | {min(loads)}–{max(loads)} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import sys
    if len(sys.argv) >= 3 and sys.argv[1] == "--report":
        print(report(*sys.argv[2:]))
    else:
        main()
