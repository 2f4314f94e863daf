"""The UnlearnRec benchmark: one request, every method side by side in one run.

Original, Retrain (exact reference), Fine-tune, UnlearnRec zero-shot and UnlearnRec + fine-tuning, each
with utility (Recall@20, NDCG@20 on the test set, residual training and validation items masked),
forgetting (request-edge mean score, membership-inference AUC and its distance to Retrain) and time
(unlearning seconds, speed-up over Retrain measured in the same run, pre-training seconds).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..data.interactions import Dataset, Interactions
from ..data.registry import load_dataset
from ..data.requests import GENERATORS, adversarial_edges, parse_spec, poisoned_dataset
from ..eval.forgetting import audit
from ..models.base import Recommender
from ..train.cache import train_cached
from ..train.config import RunConfig
from ..train.runs import test_metrics
from ..unlearn.finetune import FineTune
from ..unlearn.influence_encoder import IEConfig, UnlearnRec
from ..unlearn.retrain import Retrain

# Training settings of the benchmarks: large batches with a matching learning rate make CPU epochs cheap;
# early stopping on validation Recall@20 as everywhere.
BENCH_TRAIN = {"batch_size": 8192, "lr": 0.01, "epochs": 200, "patience": 5}


@dataclass
class Setting:
    """The model and request a benchmark runs on."""

    dataset: Dataset              # the training data of the original model (poisoned for adversarial)
    original: Recommender
    original_seconds: float
    edges: Interactions           # the request
    request: str
    run: RunConfig
    clean: Dataset                # the data before any injection
    info: dict = field(default_factory=dict)


def make_run(dataset: str, backbone: str, overrides: list[str] | None = None) -> RunConfig:
    """The benchmark run config; `overrides` are `key=value` strings (type-checked like `--set`)."""
    from ..config import load_config
    base = {"data": {"name": dataset}, "model": {"name": backbone}, "train": dict(BENCH_TRAIN)}
    return load_config(RunConfig, None, overrides or [], base=base)


def build_setting(dataset: str, backbone: str, request: str, seed: int = 0, run: RunConfig | None = None,
                  progress: bool = True, cache_dir=None) -> Setting:
    """Train (or load from cache) the original model and draw the request. For `adversarial`, the clean
    model picks each user's / item's least-likely partner, and the original is trained on the poisoned graph."""
    run = run or make_run(dataset, backbone)
    clean = load_dataset(dataset, seed=run.data.seed, valid_ratio=run.data.valid_ratio)
    kind, params = parse_spec(request)
    info: dict = {}
    if kind == "adversarial":
        clean_model, _, _ = train_cached(run, clean, cache_dir, progress)
        injected = adversarial_edges(clean, clean_model, params.get("rho_users", 1.0), params.get("rho_items", 1.0), seed)
        data = poisoned_dataset(clean, injected)
        edges = injected
        info["injected"] = len(injected)
    else:
        data = clean
        edges = GENERATORS[kind](clean, seed=seed, **params).edges
    original, meta, _ = train_cached(run, data, cache_dir, progress)
    return Setting(data, original, meta["metrics"]["seconds"], edges, request, run, clean, info)


def prepared_encoder(setting: Setting, ie_config: IEConfig, progress: bool, cache_dir=None) -> UnlearnRec:
    """The influence encoder pre-trained for the original model, cached by the model's weights, its data and
    the encoder's pre-training fields: benchmarks of several requests, or of several fine-tuning settings, on
    one model pre-train once (the time is recorded)."""
    import hashlib
    import json

    from ..train.cache import cache_root
    from ..unlearn.influence_encoder import fingerprint
    key = hashlib.sha256(json.dumps([fingerprint(setting.original.embedding.weight), setting.dataset.train.hash,
                                     ie_config.pretraining_fields()], sort_keys=True).encode()).hexdigest()[:20]
    path = cache_root(cache_dir) / "encoders" / key
    if (path / "encoder.pt").is_file():
        ie = UnlearnRec.load(path, setting.original.clone(), setting.dataset, progress=progress)
        ie.cfg = ie_config           # the request-time fields of this run
        return ie
    ie = UnlearnRec(ie_config, progress=progress).prepare(setting.original.clone(), setting.dataset)
    ie.save(path)
    return ie


def _row(method: str, model: Recommender, residual: Dataset, setting: Setting, retrain: Recommender | None,
         seconds: float | None, kind: str, seed: int, utility_data: Dataset | None = None) -> dict:
    """Utility on `utility_data` (default: the residual data, whose training set is the mask); the audit
    always on the residual data, where the request edges are no longer training edges."""
    utility = test_metrics(model, utility_data or residual, ks=[20])
    forget = audit(model, setting.edges, residual.train, residual.test, original=setting.original,
                   retrain=retrain, valid=residual.valid, seed=seed)
    return {"method": method, "kind": kind, "Recall@20": utility["Recall@20"], "NDCG@20": utility["NDCG@20"],
            "forget_score": forget["forget_score_mean"], "nonedge_score": forget["nonedge_score_mean"],
            "mia_auc": forget["mia_auc"], "unlearn_s": seconds, "audit": forget}


def run_benchmark(setting: Setting, ie_config: IEConfig, finetune_epochs: float = 1.0, baseline_epochs: int = 1,
                  seed: int = 0, progress: bool = True, cache_dir=None) -> list[dict]:
    data, edges = setting.dataset, setting.edges
    ie = prepared_encoder(setting, ie_config, progress, cache_dir)   # first: other requests on this model reuse it
    retrain = Retrain(setting.run, cache_dir, progress).prepare(setting.original, data).unlearn(edges)
    residual = retrain.dataset
    retrain_s = retrain.seconds["total"]
    rows = [_row("Original", setting.original, residual, setting, retrain.model, None, "-", seed, utility_data=data)]

    finetune = FineTune(setting.run, epochs=baseline_epochs, progress=progress).prepare(setting.original, data).unlearn(edges)

    ie_ft = ie.fork()
    zero = ie.unlearn(edges, finetune_epochs=0)
    tuned = ie_ft.unlearn(edges, finetune_epochs=finetune_epochs)

    rows.append(_row("Retrain", retrain.model, residual, setting, retrain.model, retrain_s, "exact", seed))
    rows.append(_row(f"Fine-tune ({baseline_epochs} ep)", finetune.model, residual, setting, retrain.model,
                     finetune.seconds["total"], "approximate", seed))
    rows.append(_row("UnlearnRec zero-shot", zero.model, residual, setting, retrain.model,
                     zero.seconds["total"], "approximate", seed))
    rows.append(_row(f"UnlearnRec + FT ({finetune_epochs:g} ep)", tuned.model, residual, setting, retrain.model,
                     tuned.seconds["total"], "approximate", seed))
    retrain_mia = next(row["mia_auc"] for row in rows if row["method"] == "Retrain")
    for row in rows:
        row["mia_gap_vs_retrain"] = abs(row["mia_auc"] - retrain_mia)
        row["speedup"] = retrain_s / row["unlearn_s"] if row["unlearn_s"] else None
        row["prepare_s"] = ie.prepare_seconds if row["method"].startswith("UnlearnRec") else None
    return rows


TABLE_COLUMNS = ["method", "Recall@20", "NDCG@20", "forget_score", "nonedge_score", "mia_auc",
                 "mia_gap_vs_retrain", "unlearn_s", "speedup", "prepare_s"]


def table_rows(rows: list[dict]) -> list[dict]:
    return [{c: ("-" if row.get(c) is None else row[c]) for c in TABLE_COLUMNS} for row in rows]


def run_stream(setting: Setting, ie_config: IEConfig, parts: int, finetune_epochs: float = 0.0,
               finetune_every: int = 1, seed: int = 0, progress: bool = True, cache_dir=None) -> list[dict]:
    """A sequential stream: the request split into `parts` seeded sub-requests applied one after another
    by UnlearnRec; at ¼, ½, ¾ and the end, utility and forgetting against Retrain on the same cumulative set.

    Each request is zero-shot; with `finetune_epochs` > 0, every `finetune_every`-th request is also
    fine-tuned (which also resets a cumulative encoder's input state to the fine-tuned model)."""
    if finetune_every < 1:
        raise ValueError(f"finetune_every must be at least 1 (got {finetune_every})")
    from ..data.requests import Request

    data = setting.dataset
    request = Request.create(data, "edges", {}, seed, setting.edges)
    pieces = [p.edges for p in request.split(parts, seed=seed)]
    marks = sorted({max(1, round(parts * f)) for f in (0.25, 0.5, 0.75, 1.0)})
    ie = prepared_encoder(setting, ie_config, progress, cache_dir)
    method = "UnlearnRec stream"
    if finetune_epochs > 0:
        method += f" + FT ({finetune_epochs:g} ep every {finetune_every})"
    rows, forgotten, spent = [], Interactions.empty(data.n_users, data.n_items), 0.0
    for step, piece in enumerate(pieces, 1):
        state = ie.unlearn(piece, finetune_epochs=finetune_epochs if step % finetune_every == 0 else 0.0)
        spent += state.seconds["total"]
        forgotten = forgotten.union(piece)
        if step not in marks:
            continue
        retrain = Retrain(setting.run, cache_dir, progress).prepare(setting.original, data).unlearn(forgotten)
        cumulative = Setting(data, setting.original, setting.original_seconds, forgotten, setting.request,
                             setting.run, setting.clean)
        for name, model, seconds in (("Retrain", retrain.model, retrain.seconds["total"]),
                                     (method, state.model, spent)):
            row = _row(name, model, retrain.dataset, cumulative, retrain.model, seconds,
                       "exact" if name == "Retrain" else "approximate", seed)
            row.update(step=step, of=parts, forgotten=len(forgotten))
            rows.append(row)
    return rows


STREAM_COLUMNS = ["step", "of", "forgotten", "method", "Recall@20", "NDCG@20", "forget_score", "nonedge_score",
                  "mia_auc", "unlearn_s"]
