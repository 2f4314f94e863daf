"""How far UnlearnRec's zero-shot forgetting can be moved by the strength of its withdraw term, per request size
and shape, on tuning requests that no report evaluates (seeds 991 and 993 by default).

    .venv/bin/python benchmarks/probe_withdraw_scale.py --dataset ml-100k --layers 3 1 --out results.jsonl
    .venv/bin/python benchmarks/probe_withdraw_scale.py --requests adversarial:1.0 --layers 3 --out results.jsonl

For each seed: the original (trained with that seed, the tuning suite's settings; for an adversarial request, on
the graph poisoned by the clean model of that seed, as the harness does), one prepared encoder per original and
IE depth (`layers`), and for each request an independent retrain (seed + 1). Each request is then forgotten zero-shot
with the encoder's withdraw rates W_η multiplied by each `--scales` factor (1 is the calibrated encoder as
prepared), and measured against the retrain: Recall@20 × Retrain (test), the audit's MIA AUC gap, forget rank
and over-forgetting. Two statistics that need no retrain are printed beside them, to see whether either could
choose the factor at request time: the AUC of the request edges against the validation edges (what
preparation calibrates to 0.5), and the AUC of the request users' validation edges against random non-edges of
the same users (a model that never saw a user ranks that user's held-out items at chance). The retrain's row
(`scale` null) gives their values for a model that never saw the request. A third, `knn_forget_rank_pct`, is where
item-based collaborative filtering on the residual graph ranks the request edges (the same in every row of a
request): a retrain-free guess at the retrain's forget rank.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from recunlearn.bench.setting import Setting, build_setting, fingerprint
from recunlearn.bench.suite import load_suite
from recunlearn.data.interactions import Interactions
from recunlearn.eval.forgetting import audit, percentile_ranks, same_user_non_edges
from recunlearn.eval.ranking import evaluate
from recunlearn.train.cache import train_cached
from recunlearn.train.version import code_version
from recunlearn.unlearn.unlearnrec import UnlearnRec
from recunlearn.unlearn.unlearnrec.selection import auc

REQUESTS = ["random:0.002", "random:0.01", "random:0.05", "user:0.01"]


def pair_scores(scorer, pairs: Interactions) -> torch.Tensor:
    return scorer.score_pairs(torch.from_numpy(pairs.users), torch.from_numpy(pairs.items))


class ItemKnn:
    """Item-based collaborative filtering on a training graph, as a scorer: a user's score for item i is the sum
    of cosine(i, j) over the user's items j. Built on the residual graph it has never seen a request edge, so the
    percentile it gives a request edge is a retrain-free guess at where a retrained model would put it. Dense
    item-by-item similarities: for ml-100k-sized probes only."""

    def __init__(self, train: Interactions):
        self.interactions = train.to_csr().astype(np.float32)
        norms = np.sqrt(np.asarray(self.interactions.multiply(self.interactions).sum(axis=0)).ravel())
        normalised = self.interactions @ sp.diags(1 / np.maximum(norms, 1e-12))
        self.similarity = (normalised.T @ normalised).toarray()
        np.fill_diagonal(self.similarity, 0)
        self.n_items = self.similarity.shape[0]

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.interactions[users.numpy()] @ self.similarity))


def statistics(scorer, setting: Setting, retrain, rng_seed: int) -> dict:
    """Utility and forgetting against `retrain` (the harness's audit: for an adversarial request the
    non-members are the selector's next least-likely pairs), and the two retrain-free statistics."""
    data, request, residual = setting.data, setting.request.edges, setting.residual
    mask = residual.train.union(data.valid)
    recall = evaluate(scorer, data.test, mask, ks=[20])["Recall@20"]
    result = audit(scorer, request, residual.train, setting.audit_test, retrain=retrain, valid=setting.audit_valid,
                   max_users=2000)
    touched = np.isin(data.valid.users, np.unique(request.users))
    held_out = data.valid.select(touched)
    non_edges = same_user_non_edges(held_out.users, [data.train, data.valid, data.test], data.n_items,
                                    np.random.default_rng(rng_seed))
    return {"Recall@20": recall, "mia_auc": result["mia_auc"], "mia_auc_gap": result["mia_auc_gap"],
            "forget_rank_pct": result["forget_rank_pct"], "over_forgetting": result["over_forgetting"],
            "auc_request_vs_valid": auc(pair_scores(scorer, request), pair_scores(scorer, data.valid)),
            "auc_users_valid_vs_nonedge": auc(pair_scores(scorer, held_out), pair_scores(scorer, non_edges))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[991, 993], help="tuning seeds")
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 1], help="IE depths (IEConfig.layers)")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0])
    parser.add_argument("--requests", nargs="+", default=REQUESTS)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per (seed, layers, request, scale)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    suite = load_suite(Path(__file__).parent / "suites" / "tuning-idm-norm.yaml")
    for seed in args.seeds:
        run = suite.run_config("ml-100k", "lightgcn", seed)
        run = run.model_copy(update={"data": run.data.model_copy(update={"name": args.dataset})})
        retrain_run = run.model_copy(update={"train": run.train.model_copy(update={"seed": seed + 1})})
        # Random and user requests share the original; an adversarial one has its own (trained on the poisoned
        # graph), and its retrain is a clean retrain of the next seed, as in the harness.
        by_original: dict[str, list] = {}
        for spec in args.requests:
            setting = build_setting(run, spec, seed, progress=False)
            retrain, _, _ = train_cached(retrain_run, setting.residual, progress=False)
            by_original.setdefault(fingerprint(setting.original.model), []).append((spec, setting, retrain))
        for settings in by_original.values():
            for layers in args.layers:
                original = settings[0][1].original.model
                unlearner = UnlearnRec({"layers": layers}, progress=False).prepare(original, settings[0][1].data)
                prepared_state, withdraw = unlearner.state, unlearner.encoder.withdraw.detach().clone()
                prepared_inputs = unlearner.inputs
                for spec, setting, retrain in settings:
                    knn = percentile_ranks(ItemKnn(setting.residual.train), setting.request.edges,
                                           setting.residual.train)
                    rows = [(None, retrain)]
                    for scale in args.scales:
                        with torch.no_grad():
                            unlearner.encoder.withdraw.copy_(withdraw * scale)
                        unlearner.state, unlearner.inputs = prepared_state, prepared_inputs
                        rows.append((scale, unlearner.unlearn(setting.request).scorer))
                    for scale, scorer in rows:
                        row = {"code": code_version(), "dataset": args.dataset, "seed": seed, "layers": layers,
                               "request": spec, "scale": scale, "calibrated_withdraw": unlearner.calibration["withdraw_init"],
                               "knn_forget_rank_pct": float(knn.mean()),
                               **statistics(scorer, setting, retrain, seed)}
                        with args.out.open("a") as out:
                            out.write(json.dumps(row) + "\n")
                        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                              flush=True)
                with torch.no_grad():
                    unlearner.encoder.withdraw.copy_(withdraw)

if __name__ == "__main__":
    main()
