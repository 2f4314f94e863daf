"""The `recunlearn` command: datasets, train, evaluate, recommend (and the unlearning subcommands)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Recommendation unlearning: train, unlearn, audit and benchmark recommenders.")
console = Console()
if not console.is_terminal:   # logs and pipes: wide enough that benchmark tables are not cut
    console.width = 200
err_console = Console(stderr=True)


def fail(message: str) -> None:
    # soft_wrap: one line however narrow the terminal (scripts read it); escape: the message is not markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def guarded(fn):
    """Turn the project's own input errors into a one-line message and exit code 2 (no traceback)."""
    import functools

    from .data.interactions import DataError
    from .train.checkpoint import CheckpointError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataError, CheckpointError, FileNotFoundError, ValueError) as err:
            fail(str(err))
    return wrapper


def print_table(rows: list[dict], title: str | None = None) -> None:
    table = Table(title=title)
    if not rows:
        console.print("(nothing)")
        return
    for key in rows[0]:
        table.add_column(str(key), justify="right" if isinstance(rows[0][key], (int, float)) else "left")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)


def print_metrics(columns: dict[str, dict], title: str | None = None) -> None:
    """One row per metric and one column per split: metric names stay readable in 80 columns."""
    names = list(dict.fromkeys(name for values in columns.values() for name in values))
    print_table([{"metric": name, **{split: values.get(name, "-") for split, values in columns.items()}}
                 for name in names], title=title)


def own_data(path: Path):
    """The data config of your own file or folder: its absolute path, named after the file (or folder)."""
    from .train.config import DataConfig
    return DataConfig(name=path.name.split(".")[0], path=str(path.resolve()))


@app.command()
@guarded
def datasets(root: Optional[Path] = typer.Option(None, help="data folder (default: $RECUNLEARN_DATA)")):
    """List the known datasets with their statistics (those whose files are present)."""
    from .data.registry import dataset_status
    print_table(dataset_status(root), title="datasets")


@app.command()
@guarded
def train(dataset: Optional[str] = typer.Option(None, help="dataset name (see `recunlearn datasets`) "
                                                "[default: ml-100k, or the config file's]"),
          data_path: Optional[Path] = typer.Option(None, "--data", help="your own interaction file (CSV, Parquet, "
                                                   "JSON, .inter, u.data, LightGCN text, ...) or a folder with "
                                                   "train/test[/valid] files, instead of --dataset"),
          model: Optional[str] = typer.Option(None, help="backbone: mf, lightgcn, sgl, simgcl "
                                              "[default: lightgcn, or the config file's]"),
          config: Optional[Path] = typer.Option(None, help="YAML run config"),
          set_: List[str] = typer.Option([], "--set", help="override, e.g. --set train.lr=0.005"),
          out: Path = typer.Option(..., help="checkpoint folder to write"),
          resume: bool = typer.Option(False, help="continue the run saved in --out"),
          inject: Optional[Path] = typer.Option(None, help="adversarial request file: train on the poisoned graph"),
          quiet: bool = typer.Option(False, help="no progress bars")):
    """Train a backbone with early stopping on validation Recall@20 and write a checkpoint."""
    from .train.config import RunConfig
    from .config import load_config
    from .train.inputs import load_data
    from .train.runs import train_and_save

    # Precedence: defaults < config file < --dataset / --data / --model < --set.
    explicit = [f"data.name={json.dumps(dataset)}"] if dataset else []
    if data_path is not None:
        own = own_data(data_path)
        explicit += [f"data.path={json.dumps(own.path)}"] + ([] if dataset else [f"data.name={json.dumps(own.name)}"])
    explicit += [f"model.name={json.dumps(model)}"] if model else []
    run = load_config(RunConfig, config, [*explicit, *set_])
    console.print_json(json.dumps(run.model_dump(mode="json")))
    data = load_data(run.data)
    if inject is not None:
        from .data.requests import injected_edges, poisoned_dataset
        data = poisoned_dataset(data, injected_edges(inject, data))
    metrics = train_and_save(run, data, out, progress=not quiet, resume=resume)
    print_metrics({k: v for k, v in metrics.items() if isinstance(v, dict)}, title=f"{run.model.name} on {run.data.name}")
    console.print(f"checkpoint written to {out}")


@app.command()
@guarded
def evaluate(checkpoint: Path = typer.Option(..., help="checkpoint folder"),
             ks: List[int] = typer.Option([10, 20], "--k", help="cut-offs"),
             json_out: Optional[Path] = typer.Option(None, help="append the result as a JSON line")):
    """Full-ranking test metrics of a checkpoint (training and validation items masked)."""
    from .train.checkpoint import load_checkpoint
    from .train.runs import test_metrics

    model, run, data, meta = load_checkpoint(checkpoint)
    metrics = test_metrics(model, data, ks)
    print_metrics({"test": metrics}, title=f"{checkpoint} on {data.name}")
    if json_out:
        with open(json_out, "a") as fh:
            fh.write(json.dumps({"checkpoint": str(checkpoint), "dataset": data.name, "data_hash": data.hash,
                                 "model": run.model.name, "metrics": metrics}) + "\n")


@app.command()
@guarded
def recommend(checkpoint: Path = typer.Option(..., help="checkpoint folder"),
              user: List[str] = typer.Option(..., help="user id as in the data files (repeatable)"),
              k: int = typer.Option(10, "-k", help="list length")):
    """Top-k items for users, with their already-seen items excluded."""
    from .eval.ranking import topk_items
    from .train.checkpoint import load_checkpoint

    model, run, data, _ = load_checkpoint(checkpoint)
    users = data.user_ids.index(user, kind="user")
    top = topk_items(model, users, k, data.train.union(data.valid)).numpy()
    rows = []
    for label, u, items in zip(user, users, top):
        for rank, item in enumerate(items, 1):
            row = {"user": label, "rank": rank, "item": str(data.item_ids.label([item])[0])}
            if data.item_info is not None and "title" in data.item_info:
                row["title"] = str(data.item_info["title"].iloc[item])
            rows.append(row)
    print_table(rows, title=f"top-{k}")


request_app = typer.Typer(help="Deletion requests: make them reproducibly from a seed.", no_args_is_help=True)
app.add_typer(request_app, name="request")


@request_app.command("make")
@guarded
def request_make(spec: str = typer.Option(..., help="random:RHO | user:RHO[:random|core|edge] | "
                                                      "item:RHO[:random|popular] | adversarial:RHO[:RHO_ITEMS]"),
                 out: Path = typer.Option(..., help="request file (JSON) to write"),
                 dataset: str = typer.Option("ml-100k", help="dataset (ignored when --checkpoint is given)"),
                 data_path: Optional[Path] = typer.Option(None, "--data", help="your own interaction file or "
                                                          "folder, instead of --dataset"),
                 checkpoint: Optional[Path] = typer.Option(None, help="model whose data the request is for; "
                                                           "required for adversarial (the clean model)"),
                 seed: int = typer.Option(0)):
    """Draw a request and save it. Adversarial requests inject each user's / item's least-likely edge
    (as scored by the clean model); train the poisoned model with `recunlearn train --inject FILE`."""
    from .data.requests import GENERATORS, adversarial_edges, adversarial_request, parse_spec, poisoned_dataset
    from .train.checkpoint import load_checkpoint
    from .train.config import DataConfig
    from .train.inputs import load_data

    kind, params = parse_spec(spec)
    model = None
    if checkpoint is not None:
        model, _, data, _ = load_checkpoint(checkpoint)
    else:
        data = load_data(DataConfig(name=dataset) if data_path is None else own_data(data_path))
    if kind == "adversarial":
        if model is None:
            fail("an adversarial request needs the clean model: pass --checkpoint DIR")
        injected = adversarial_edges(data, model, params["rho_users"], params["rho_items"], seed)
        request = adversarial_request(poisoned_dataset(data, injected), injected, seed, params)
    else:
        request = GENERATORS[kind](data, seed=seed, **params)
    request.save(out)
    console.print(f"{kind} request with {len(request)} edges ({len(request.users())} users, "
                  f"{len(request.items())} items) written to {out}")


METHOD_HELP = "unlearning method (see `recunlearn methods`)"


def method_state_dir(checkpoint: Path, method: str) -> Path:
    """Where a method's working state lives: privately, next to the model it was prepared for."""
    return checkpoint / UNLEARNERS_DIR / method


UNLEARNERS_DIR = "unlearners"


@app.command()
def methods():
    """The registered unlearning methods, their kind and their settings."""
    from .unlearn.registry import UNLEARNERS, unlearner_class
    rows = []
    for name in sorted(UNLEARNERS):
        cls = unlearner_class(name)
        settings = ", ".join(f"{key}={value}" for key, value in cls.config_class().model_dump().items())
        rows.append({"method": name, "kind": cls.kind, "settings (--set key=value)": settings or "-"})
    print_table(rows, title="unlearning methods")


@app.command()
@guarded
def prepare(checkpoint: Path = typer.Option(..., help="trained model checkpoint"),
            method: str = typer.Option("unlearnrec", help=METHOD_HELP),
            set_: List[str] = typer.Option([], "--set", help="method setting, e.g. --set epochs=20"),
            quiet: bool = typer.Option(False)):
    """One-off preparation before any request (UnlearnRec pre-trains its influence encoder), timed and saved
    in CHECKPOINT/unlearners/METHOD, bound to that model and its data."""
    from .train.checkpoint import load_checkpoint
    from .unlearn.registry import build_unlearner

    model, run, data, _ = load_checkpoint(checkpoint)
    unlearner = build_unlearner(method, set_, run=run, progress=not quiet)
    console.print_json(json.dumps({"method": method, "config": unlearner.config.model_dump(mode="json")}))
    unlearner.prepare(model, data)
    unlearner.save(method_state_dir(checkpoint, method))
    console.print(f"{method} prepared in {unlearner.prepare_seconds:.1f}s; saved to "
                  f"{method_state_dir(checkpoint, method)}")


@app.command()
@guarded
def unlearn(checkpoint: Path = typer.Option(..., help="model checkpoint (prepared with `recunlearn prepare` for "
                                            "methods that need it)"),
            request: Path = typer.Option(..., help="request file (from `request make`, or CSV/JSON pairs)"),
            out: Path = typer.Option(..., help="checkpoint folder for the unlearned model"),
            method: str = typer.Option("unlearnrec", help=METHOD_HELP),
            set_: List[str] = typer.Option([], "--set", help="request-time setting, e.g. --set finetune_epochs=1"),
            quiet: bool = typer.Option(False)):
    """Forget a request with any registered method and write the unlearned model as a new checkpoint.

    Requests compose: the method's state next to CHECKPOINT remembers what was forgotten, so a second
    `unlearn --checkpoint CHECKPOINT` continues from the first."""
    import torch

    from .config import load_config
    from .data.requests import Request
    from .train.checkpoint import load_checkpoint, save_checkpoint
    from .train.runs import test_metrics
    from .unlearn.registry import build_unlearner, unlearner_class

    model, run, data, _ = load_checkpoint(checkpoint)
    req = Request.load(request, data)
    cls = unlearner_class(method)
    state = method_state_dir(checkpoint, method)
    if (state / "unlearner.json").is_file():
        unlearner = cls.load(state, model, data, run=run, progress=not quiet)
        if set_:
            unlearner.config = load_config(cls.config_class, None, set_, base=unlearner.config.model_dump())
    elif cls.has_preparation():
        fail(f"{method} has not been prepared for {checkpoint}: run `recunlearn prepare --method {method} "
             f"--checkpoint {checkpoint}` first")
    else:
        unlearner = build_unlearner(method, set_, run=run, progress=not quiet).prepare(model, data)
    edges = req.edges
    pairs = (torch.from_numpy(edges.users), torch.from_numpy(edges.items))
    current = unlearner.state
    before_score = current.scorer.score_pairs(*pairs).mean().item()
    before = test_metrics(current.scorer, current.dataset, ks=[20])
    result = unlearner.unlearn(edges)
    if result.model is None:
        fail(f"{method} answers through a scorer with no model state to write as a checkpoint; compare it in the "
             "benchmark harness (`recunlearn bench run`)")
    after = test_metrics(result.scorer, result.dataset, ks=[20])
    after_score = result.scorer.score_pairs(*pairs).mean().item()
    save_checkpoint(out, result.model, run, result.dataset, metrics={"test": after},
                    extra={"unlearned_from": str(checkpoint), "method": method, "request": str(request),
                           "seconds": result.seconds})
    unlearner.save(state)
    print_table([{"": "request-edge mean score", "before": before_score, "after": after_score},
                 {"": "test Recall@20", "before": before["Recall@20"], "after": after["Recall@20"]},
                 {"": "test NDCG@20", "before": before["NDCG@20"], "after": after["NDCG@20"]},
                 {"": "training edges", "before": len(current.dataset.train), "after": len(result.dataset.train)}],
                title=f"{method} forgot {len(edges)} edges in {result.seconds['total']:.2f}s "
                      f"({', '.join(f'{k} {v:.2f}s' for k, v in result.seconds.items() if k != 'total')})")
    console.print(f"unlearned checkpoint written to {out}")


@app.command()
@guarded
def audit(checkpoint: Path = typer.Option(..., help="unlearned model checkpoint"),
          original: Path = typer.Option(..., help="the model before unlearning"),
          request: Path = typer.Option(..., help="the request that was forgotten"),
          retrain: Optional[Path] = typer.Option(None, help="retrained reference checkpoint; default: train "
                                                 "(or reuse from cache) one on the residual data, with a seed "
                                                 "other than the original's"),
          json_out: Optional[Path] = typer.Option(None, help="append the report as a JSON line"),
          quiet: bool = typer.Option(False)):
    """Forgetting report of an unlearned model against a model retrained without the request."""
    from .data.requests import Request
    from .eval.forgetting import audit as run_audit, neighbourhood_utility
    from .train.checkpoint import load_checkpoint
    from .train.runs import test_metrics
    from .unlearn.retrain import Retrain

    orig_model, run, orig_data, _ = load_checkpoint(original)
    req = Request.load(request, orig_data)
    model, _, data, _ = load_checkpoint(checkpoint)
    if data.train.hash != orig_data.train.subtract(req.edges).hash:
        fail(f"{checkpoint} is not {original} with exactly this request forgotten (training sets differ)")
    if retrain is not None:
        reference, _, _, _ = load_checkpoint(retrain, data)
    else:
        # an independent retrain (another seed than the original's), trained or taken from the cache
        reference = Retrain(run=run, progress=not quiet).prepare(orig_model, orig_data).unlearn(req.edges).model
    report = run_audit(model, req.edges, data.train, data.test, original=orig_model, retrain=reference,
                       valid=data.valid)
    report.update({f"test_{k}": v for k, v in test_metrics(model, data, ks=[20]).items() if k != "users"})
    report.update({f"retrain_test_{k}": v for k, v in test_metrics(reference, data, ks=[20]).items() if k != "users"})
    report.update(neighbourhood_utility(model, req.edges, data.train, data.test, data.valid, ks=(20,)))
    print_table([{"measure": k, "value": v} for k, v in report.items()], title=f"audit of {checkpoint}")
    if json_out:
        with open(json_out, "a") as fh:
            fh.write(json.dumps({"checkpoint": str(checkpoint), "request": str(request), **report}) + "\n")


from .bench.cli import bench_app  # noqa: E402  (the harness's subcommands: bench run, bench report)

app.add_typer(bench_app, name="bench")


def main() -> None:  # pragma: no cover
    sys.exit(app())
