"""The `recunlearn` command: datasets, train, evaluate, recommend (and the unlearning subcommands)."""
from __future__ import annotations

import json
import sys
import warnings
from contextlib import contextmanager
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
    from .erasure import ErasureError
    from .storage import StorageError
    from .train.checkpoint import CheckpointError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataError, CheckpointError, ErasureError, StorageError, FileNotFoundError,
                ValueError) as err:
            fail(str(err))
        except EOFError:   # typer would print a bare "Aborted."
            fail("a file ended too early (empty or truncated); the command's input files are damaged: write "
                 "them again")
        except PermissionError as err:
            fail(f"{err.filename}: permission denied; check the folder's permissions or choose another path")
        except OSError as err:
            fail(f"{err.filename or 'a file'}: {err.strerror or err}")
    return wrapper


@contextmanager
def one_line_warnings():
    """Warnings as one line on stderr, like the notes: the library's source line means nothing to a user. The
    previous display comes back when the command ends."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_: err_console.print(f"warning: {message}", soft_wrap=True,
                                                                    markup=False)
        yield


@app.callback()
def main_options(ctx: typer.Context, threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="torch threads for every command (default: torch's choice, which on a "
        "shared CPU can be much slower than 1 or 2)")):
    """Recommendation unlearning: train, unlearn, audit and benchmark recommenders."""
    ctx.with_resource(one_line_warnings())
    if threads is not None:
        import torch
        torch.set_num_threads(threads)


def emit_json(record: dict) -> None:
    """One JSON object on stdout (the --json form of a command's result)."""
    print(json.dumps(record, default=str))


def note(message: str) -> None:
    err_console.print(f"note: {message}", soft_wrap=True, markup=False)


def writing(out: Path, action: str, overwrite: bool = False, replace_ok: bool = False):
    """The lock on `out`, recovery of interrupted writes (with a note) and the refusal of an existing `out`."""
    from .erasure import writing as locked_output
    return locked_output(out, action, overwrite, replace_ok, notes=note)


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


def check_json_out(path: Optional[Path]) -> None:
    """--json-out is checked before the work, so that a mistyped path does not cost the run and its result."""
    if path is None:
        return
    if path.is_dir():
        fail(f"--json-out {path} is a folder: name a file (the result is appended to it as one JSON line)")
    if not path.parent.is_dir():
        fail(f"--json-out {path}: the folder {path.parent} does not exist; create it or name a file in an "
             "existing folder")


def append_json_line(path: Path, record: dict) -> None:
    try:
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    except OSError as err:
        fail(f"--json-out {path}: cannot append the result ({err.strerror or err}); the result is printed above")


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
                                                   "train and test (and optionally valid) files, instead of --dataset"),
          model: Optional[str] = typer.Option(None, help="backbone: mf, lightgcn, sgl, simgcl, or the "
                                              "multi-modal freedom, vbpr (they need item features) "
                                              "[default: lightgcn, or the config file's]"),
          config: Optional[Path] = typer.Option(None, help="YAML run config"),
          set_: List[str] = typer.Option([], "--set", help="override, e.g. --set train.lr=0.005"),
          out: Path = typer.Option(..., help="checkpoint folder to write"),
          resume: bool = typer.Option(False, help="continue the run saved in --out"),
          overwrite: bool = typer.Option(False, help="replace --out if it is a checkpoint already"),
          inject: Optional[Path] = typer.Option(None, help="adversarial request file: train on the poisoned graph"),
          ledger: Optional[str] = typer.Option(None, help="the erasure service's ledger (SQLAlchemy URL, e.g. "
                                               "sqlite:///service-state/ledger.sqlite3): filter the data through "
                                               "its suppression list, in every split, now and at every later load"),
          nproc: Optional[int] = typer.Option(None, "--nproc", help="data-parallel processes on this machine "
                                              "(torch.distributed ranks, gloo on CPU, NCCL on GPUs), each computing "
                                              "a slice of every batch; under torchrun its ranks decide [default: 1, "
                                              "the plain loop, or the config file's train.nproc]"),
          device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or cuda:N: where the epochs and "
                                               "validation run (with --nproc N on cuda, one GPU per rank); the "
                                               "checkpoint loads on any machine [default: cpu, or the config "
                                               "file's train.device]"),
          quiet: bool = typer.Option(False, help="no progress bars")):
    """Train a backbone with early stopping on validation Recall@20 and write a checkpoint.

    Data-parallel on several machines: `torchrun --nnodes ... --nproc-per-node ... --no-python recunlearn
    train ...` (every rank loads the same data; rank 0 writes the checkpoint)."""
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
    if nproc is not None and nproc < 1:
        fail(f"--nproc {nproc}: the number of processes must be at least 1")
    explicit += [f"train.nproc={nproc}"] if nproc is not None else []
    explicit += [f"train.device={json.dumps(device)}"] if device is not None else []
    run = load_config(RunConfig, config, [*explicit, *set_])
    from .train.launch import torchrun_ranks
    run, ranks = torchrun_ranks(run)   # ranks: torchrun started this process as one of several
    helper = ranks is not None and not ranks.is_main
    console.quiet = console.quiet or helper   # rank 0 alone prints and writes
    if ledger is not None:
        from .train.inputs import with_ledger
        run, listed = with_ledger(run, ledger)
        counts = listed.counts()
        console.print(f"suppression list of {run.data.suppression.ledger} through row {listed.through_row}: "
                      f"{counts['users']} users, {counts['items']} items, {counts['pairs']} pairs filtered out "
                      "of every split")
    console.print_json(json.dumps(run.model_dump(mode="json")))
    data = load_data(run.data)
    if inject is not None:
        from .data.requests import injected_edges, poisoned_dataset
        data = poisoned_dataset(data, injected_edges(inject, data))
    if helper:
        train_and_save(run, data, out, progress=False, resume=resume, ranks=ranks)
        return
    with writing(out, "train", overwrite, replace_ok=resume):
        metrics = train_and_save(run, data, out, progress=not quiet, resume=resume, ranks=ranks)
    print_metrics({k: v for k, v in metrics.items() if isinstance(v, dict)}, title=f"{run.model.name} on {run.data.name}")
    console.print(f"checkpoint written to {out}")


@app.command()
@guarded
def evaluate(checkpoint: Path = typer.Option(..., help="checkpoint folder"),
             ks: List[int] = typer.Option([10, 20], "--k", help="cut-offs"),
             json_out: Optional[Path] = typer.Option(None, help="append the result as a JSON line"),
             as_json: bool = typer.Option(False, "--json", help="print the result as JSON instead of a table")):
    """Full-ranking test metrics of a checkpoint (training and validation items masked)."""
    from .erasure import checkpoint_scorer
    from .train.checkpoint import load_checkpoint
    from .train.runs import test_metrics

    check_json_out(json_out)
    model, run, data, meta = load_checkpoint(checkpoint)
    metrics = test_metrics(checkpoint_scorer(checkpoint, model), data, ks)
    record = {"checkpoint": str(checkpoint), "dataset": data.name, "data_hash": data.hash,
              "model": run.model.name, "metrics": metrics}
    if as_json:
        emit_json(record)
    else:
        print_metrics({"test": metrics}, title=f"{checkpoint} on {data.name}")
    if json_out:
        append_json_line(json_out, record)


@app.command()
@guarded
def recommend(checkpoint: Path = typer.Option(..., help="checkpoint folder"),
              user: List[str] = typer.Option(..., help="user id as in the data files (repeatable)"),
              k: int = typer.Option(10, "-k", help="list length (capped at the user's unseen items)"),
              as_json: bool = typer.Option(False, "--json", help="print the lists as JSON instead of a table")):
    """Top-k items for users, with their already-seen items and the items taken out of the catalogue (by a
    take-down this checkpoint descends from) excluded."""
    import numpy as np

    from .data.interactions import Interactions
    from .eval.ranking import topk_items
    from .train.checkpoint import catalogue_removed, load_checkpoint
    from .unlearn.base import without_removed

    if k < 1:
        fail(f"-k {k}: the list length must be at least 1")
    model, run, data, _ = load_checkpoint(checkpoint)
    users = data.user_ids.index(user, kind="user")
    removed = catalogue_removed(checkpoint)
    # items out of the catalogue are masked like seen ones: never listed, even when k exceeds what is left
    out_of_catalogue = Interactions.from_arrays(np.repeat(users, len(removed)), np.tile(removed, len(users)),
                                                data.n_users, data.n_items, on_duplicate="drop")
    seen = data.train.union(data.valid).union(out_of_catalogue)
    unseen = data.n_items - seen.user_degree()[users]
    top = topk_items(without_removed(model, removed), users, min(k, data.n_items), seen).numpy()
    rows, notes = [], []
    for label, u, items, available in zip(user, users, top, unseen):
        if available < k:
            notes.append(f"user {label} has {available} unseen items: the list stops there")
        for rank, item in enumerate(items[:available], 1):
            row = {"user": label, "rank": rank, "item": str(data.item_ids.label([item])[0])}
            if data.item_info is not None and "title" in data.item_info:
                row["title"] = str(data.item_info["title"].iloc[item])
            rows.append(row)
    if as_json:
        emit_json({"checkpoint": str(checkpoint), "k": k, "recommendations": rows, "notes": notes})
        return
    print_table(rows, title=f"top-{k}")
    for note in notes:
        console.print(f"note: {note}")


request_app = typer.Typer(help="Deletion requests: name a user, an item or pairs to erase, or draw one from a seed.",
                          no_args_is_help=True)
app.add_typer(request_app, name="request")


@request_app.command("make")
@guarded
def request_make(spec: Optional[str] = typer.Option(None, help="draw a request: random:RHO | user:RHO[:random|core|"
                                                    "edge] | item:RHO[:random|popular] | adversarial:RHO[:RHO_ITEMS] | "
                                                    "modality:NAME:RHO"),
                 user: List[str] = typer.Option([], "--user", help="erase this user entirely: every interaction, "
                                                "in every split (original id; repeatable)"),
                 item: List[str] = typer.Option([], "--item", help="erase this item entirely (original id; "
                                                "repeatable)"),
                 pairs: Optional[Path] = typer.Option(None, "--pairs", help="erase these (user, item) pairs: CSV "
                                                      "`user,item` or a JSON list of [user, item], original ids"),
                 out: Path = typer.Option(..., help="request file (JSON) to write"),
                 dataset: str = typer.Option("ml-100k", help="dataset (ignored when --checkpoint is given)"),
                 data_path: Optional[Path] = typer.Option(None, "--data", help="your own interaction file or "
                                                          "folder, instead of --dataset"),
                 checkpoint: Optional[Path] = typer.Option(None, help="model whose data the request is for; "
                                                           "required for adversarial (the clean model)"),
                 seed: int = typer.Option(0, min=0, help="seed that draws the request"),
                 overwrite: bool = typer.Option(False, help="replace --out if it exists")):
    """Name what to erase (--user, --item, --pairs) or draw a request (--spec) and save it. A user or item
    erasure takes the subject's interactions out of every split: training edges are unlearned, validation and
    test ones leave the data. Adversarial requests inject each user's / item's least-likely edge (as scored
    by the clean model); train the poisoned model with `recunlearn train --inject FILE`."""
    from .data.requests import (GENERATORS, Request, adversarial_edges, adversarial_request, parse_spec,
                                poisoned_dataset, subject_request)
    from .train.checkpoint import load_checkpoint
    from .train.config import DataConfig
    from .train.inputs import load_data

    if out.exists() and not (overwrite and out.is_file()):
        fail(f"{out} exists; pass --overwrite to replace it, or choose another --out" if out.is_file() else
             f"{out} is a folder; --out names the request file to write")
    chosen = [name for name, given in (("--spec", spec), ("--user/--item", user or item), ("--pairs", pairs))
              if given]
    if len(chosen) != 1:
        fail("say what to erase with exactly one of --user/--item, --pairs or --spec"
             + (f" (got {' and '.join(chosen)})" if chosen else ""))
    model = None
    if checkpoint is not None:
        model, _, data, _ = load_checkpoint(checkpoint)
    else:
        data = load_data(DataConfig(name=dataset) if data_path is None else own_data(data_path))
    if spec is None:
        request = subject_request(data, user, item) if pairs is None else Request.load(pairs, data)
        request.save(out)
        counts = request.held_out_counts(data)
        console.print(f"{request.kind} erasure: {len(request)} training edges to unlearn, {counts['valid']} "
                      f"validation and {counts['test']} test interactions to remove; written to {out}")
        return
    kind, params = parse_spec(spec)
    if kind == "adversarial":
        if model is None:
            fail("an adversarial request needs the clean model: pass --checkpoint DIR")
        injected = adversarial_edges(data, model, params["rho_users"], params["rho_items"], seed)
        request = adversarial_request(poisoned_dataset(data, injected), injected, seed, params)
    else:
        request = GENERATORS[kind](data, seed=seed, **params)
    request.save(out)
    if request.withdrawn:
        console.print(f"modality constraint: the {params['modality']} features of "
                      f"{len(request.withdrawn[params['modality']])} items withdrawn; written to {out}")
        return
    console.print(f"{kind} request with {len(request)} edges ({len(request.users())} users, "
                  f"{len(request.items())} items) written to {out}")


METHOD_HELP = "unlearning method (see `recunlearn methods`)"
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


DEVICE_HELP = ("where the method's own training runs (Retrain, Fine-tune, shard sub-models): cpu, cuda or "
               "cuda:N [default: where the checkpoint was trained]; `--device cpu` unlearns a model trained on a "
               "GPU on a machine without one")


@app.command()
@guarded
def prepare(checkpoint: Path = typer.Option(..., help="trained model checkpoint"),
            method: str = typer.Option("unlearnrec", help=METHOD_HELP),
            set_: List[str] = typer.Option([], "--set", help="method setting, e.g. --set epochs=20"),
            device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
            quiet: bool = typer.Option(False)):
    """One-off preparation before any request (UnlearnRec pre-trains its influence encoder), timed and saved
    in the checkpoint's private working store (CHECKPOINT/unlearners/METHOD/), bound to that model and data."""
    from .erasure import method_state_dir
    from .storage import atomic_folder, exclusive, recover
    from .train.checkpoint import load_checkpoint, read_meta
    from .unlearn.registry import build_unlearner

    if "lineage" in read_meta(checkpoint):
        fail(f"{checkpoint} was derived by unlearning; prepare the model it descends from "
             f"({read_meta(checkpoint)['lineage']['root']}): requests continue from there through each "
             "unlearned checkpoint")
    with exclusive(checkpoint, "prepare"):
        model, run, data, _ = load_checkpoint(checkpoint)
        unlearner = build_unlearner(method, set_, run=run, progress=not quiet, device=device)
        console.print_json(json.dumps({"method": method, "config": unlearner.config.model_dump(mode="json")}))
        unlearner.prepare(model, data)
        state = method_state_dir(checkpoint, method, data.hash)
        for message in recover(state):
            note(message)
        with atomic_folder(state, fault_prefix="prepare") as tmp:
            unlearner.save(tmp)
    console.print(f"{method} prepared in {unlearner.prepare_seconds:.1f}s; saved to {state}")


@app.command()
@guarded
def unlearn(checkpoint: Path = typer.Option(..., help="model checkpoint: a trained one (prepared with `recunlearn "
                                            "prepare` for methods that need it) or an unlearned one, to continue"),
            request: Path = typer.Option(..., help="request file (from `request make`, or CSV/JSON pairs)"),
            out: Path = typer.Option(..., help="new checkpoint folder for the unlearned model"),
            method: str = typer.Option("unlearnrec", help=METHOD_HELP),
            set_: List[str] = typer.Option([], "--set", help="request-time setting, e.g. --set finetune_epochs=1"),
            overwrite: bool = typer.Option(False, help="replace --out if it is a checkpoint already"),
            as_json: bool = typer.Option(False, "--json", help="print the result as JSON instead of a table"),
            device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
            quiet: bool = typer.Option(False)):
    """Forget a request with any registered method and write the unlearned model as a new checkpoint.

    The new checkpoint holds no erased interaction and nothing from which the model before the deletion can
    be restored: what was erased (and, for a modality constraint, which items' features were withdrawn; for a
    take-down, which items left the catalogue) is recorded, as lineage hashes, and in the private working store
    of the trained model it descends from. Requests compose: forget the next one with `--checkpoint OUT`."""
    import hashlib

    from .data.requests import Request
    from .erasure import apply_request

    if not request.is_file():   # before any lock or load
        fail(f"{request} does not exist: check the path" if not request.exists() else f"{request} is not a file")
    from .unlearn.registry import unlearner_class
    if not unlearner_class(method).has_model:
        unlearn_serving_state(checkpoint, request, out, method, set_, overwrite, as_json, quiet, device)
        return
    digest = hashlib.sha256(request.read_bytes()).hexdigest()
    outcome = apply_request(checkpoint, lambda data: Request.load(request, data), digest, out, method=method,
                            settings=set_, overwrite=overwrite, progress=not quiet, notes=note, device=device)
    before, after, held_out = outcome.before, outcome.after, outcome.held_out
    record = {"checkpoint": str(out), "from": str(checkpoint), "method": method, "edges": outcome.edges,
              "held_out": held_out, "seconds": outcome.seconds, "request_sha256": digest,
              "reinitialised": outcome.reinitialised, "withdrawn": outcome.withdrawn, "removed": outcome.removed,
              "before": before, "after": after}
    if as_json:
        emit_json(record)
        return
    forgot = f"forgot {outcome.edges} edges" if outcome.edges else \
        "withdrew " + ", ".join(f"the {name} features of {n} items" for name, n in outcome.withdrawn.items())
    rows = [{"": "request-edge mean score", "before": before["request_score_mean"],
             "after": after["request_score_mean"]}] if outcome.edges else []
    print_table(rows + [{"": "test Recall@20", "before": before["Recall@20"], "after": after["Recall@20"]},
                        {"": "test NDCG@20", "before": before["NDCG@20"], "after": after["NDCG@20"]},
                        {"": "training edges", "before": before["train_edges"], "after": after["train_edges"]}],
                title=f"{method} {forgot} in {outcome.seconds['total']:.2f}s "
                      f"({', '.join(f'{k} {v:.2f}s' for k, v in outcome.seconds.items() if k != 'total')})")
    if after["evidence_forget_rank"] is not None:
        console.print(f"after: the forgotten items rank at percentile {after['evidence_forget_rank']:.3f} of their "
                      f"users' rankings (1 = top), and same-user non-edges score "
                      f"{after['evidence_nonedge_score']:.4f} on average ({after['evidence_audit_edges']} forgotten "
                      "edges sampled)" + (f"; membership-inference AUC {after['evidence_mia_auc']:.3f}"
                                          if after["evidence_mia_auc"] is not None else ""))
    if outcome.removed:
        console.print(f"took {outcome.removed} item{'s' * (outcome.removed != 1)} out of the catalogue: "
                      f"`recommend`, `evaluate` and `audit` of {out} never rank them")
    if held_out["valid"] or held_out["test"]:
        console.print(f"removed {held_out['valid']} validation and {held_out['test']} test interactions of the "
                      "erased subjects")
    console.print(f"unlearned checkpoint written to {out}")


def unlearn_serving_state(checkpoint: Path, request: Path, out: Path, method: str, settings: list[str],
                          overwrite: bool, as_json: bool, quiet: bool, device: str | None = None) -> None:
    """`unlearn` for a method that answers through a scorer only (CRAGRU, SISA, suppress): forget the request
    over the checkpoint's model and write the method's serving state (config, forgotten pairs, its own files)
    to `out`. No checkpoint is written: the checkpoint's parameters are unchanged and still hold the data."""
    from .data.requests import Request
    from .train.checkpoint import load_checkpoint
    from .train.runs import test_metrics
    from .unlearn.registry import build_unlearner

    with writing(out, "unlearn", overwrite):
        model, run, data, _ = load_checkpoint(checkpoint)
        req = Request.load(request, data)
        if req.withdrawn:
            fail(f"{method} answers through a scorer and cannot withdraw item features from a model: apply this "
                 "modality constraint with --method reverse-bpr")
        unlearner = build_unlearner(method, settings, run=run, progress=not quiet, device=device).prepare(model, data)
        before = test_metrics(unlearner.state.scorer, data, ks=[20])
        result = unlearner.unlearn(req)
        after = test_metrics(result.scorer, req.apply(result.dataset), ks=[20])
        unlearner.save(out)
    record = {"state": str(out), "from": str(checkpoint), "method": method, "edges": len(req.edges),
              "seconds": result.seconds, "report": result.report, "before": before, "after": after}
    if as_json:
        emit_json(record)
        return
    print_table([{"": f"test {k}", "before": before[k], "after": after[k]} for k in ("Recall@20", "NDCG@20")],
                title=f"{method} forgot {len(req.edges)} edges in {result.seconds['total']:.2f}s")
    for key, value in result.report.items():
        console.print(f"{key}: {value}")
    console.print(f"{method} answers through a scorer: no new checkpoint; its serving state was written to {out}. "
                  f"It lists the forgotten pairs (it must, to serve around them): keep it private, like "
                  f"{checkpoint}, whose parameters are unchanged and still hold the erased data until a "
                  "parameter-level method or a retrain removes it")


@app.command()
@guarded
def export(checkpoint: Path = typer.Argument(..., help="checkpoint folder (trained or unlearned)"),
           out: Path = typer.Option(..., help="folder for the shippable model"),
           overwrite: bool = typer.Option(False, help="replace --out if it is a checkpoint already")):
    """Write the shippable form of a checkpoint: weights, config and lineage hashes. No data, no working
    store (method states, erasure records), no paths."""
    from .train.checkpoint import export_checkpoint, read_meta

    read_meta(checkpoint)
    if out.resolve() == checkpoint.resolve():   # --overwrite would replace it with its own stripped copy
        fail(f"--out {out} is the checkpoint itself: export to a new folder (the export leaves out the "
             "working store, so it cannot replace the checkpoint it comes from)")
    with writing(out, "export", overwrite):
        export_checkpoint(checkpoint, out)
    console.print(f"exported {checkpoint} to {out} (weights, config and hashes)")


@app.command()
@guarded
def audit(checkpoint: Path = typer.Option(..., help="unlearned model checkpoint"),
          original: Path = typer.Option(..., help="the model before unlearning"),
          request: Path = typer.Option(..., help="the request that was forgotten"),
          retrain: Optional[Path] = typer.Option(None, help="retrained reference checkpoint; default: train "
                                                 "(or reuse from cache) one on the residual data, with a seed "
                                                 "other than the original's"),
          json_out: Optional[Path] = typer.Option(None, help="append the report as a JSON line"),
          as_json: bool = typer.Option(False, "--json", help="print the report and verdict as JSON"),
          device: Optional[str] = typer.Option(None, help="where the reference retrain trains, when it is not "
                                               "given (--retrain): cpu, cuda or cuda:N [default: where the "
                                               "original was trained]"),
          quiet: bool = typer.Option(False)):
    """Forgetting report of an unlearned model against a model retrained without the request, each key
    measure beside Retrain's with pass / warn / fail against evaluation.md's thresholds, and a verdict."""
    from .data.requests import Request
    from .erasure import checkpoint_scorer
    from .eval.forgetting import audit as run_audit, neighbourhood_utility
    from .eval.verdict import judge
    from .train.checkpoint import load_checkpoint, read_meta
    from .train.runs import test_metrics
    from .unlearn.retrain import Retrain

    check_json_out(json_out)
    orig_model, run, orig_data, _ = load_checkpoint(original)
    req = Request.load(request, orig_data)
    if not len(req.edges):
        fail(f"{request} is a modality constraint: it forgets no interaction, so there is nothing to audit; "
             f"compare the test metrics of `recunlearn evaluate --checkpoint {checkpoint}` with {original}'s")
    model, _, data, _ = load_checkpoint(checkpoint)
    if data.hash != req.apply(req.withdraw(orig_data.with_train(orig_data.train.subtract(req.edges)))).hash:
        fail(f"{checkpoint} is not {original} with exactly this request forgotten (training sets differ)")
    # scored as served: the items a take-down removed from the catalogue are never ranked
    unlearned, before = checkpoint_scorer(checkpoint, model), checkpoint_scorer(original, orig_model)
    if retrain is not None:
        reference_meta = read_meta(retrain)
        if reference_meta.get("train_hash") != data.train.hash:   # checked here to say which models disagree
            fail(f"--retrain {retrain} was trained on other data than {checkpoint}'s residual (training sets "
                 f"{reference_meta.get('train_hash')} and {data.train.hash}): pass a model retrained without exactly "
                 "this request, or leave --retrain out to train one")
        reference, _, _, _ = load_checkpoint(retrain, data)
    else:
        # an independent retrain (another seed than the original's), trained or taken from the cache
        if read_meta(checkpoint).get("unlearned", {}).get("method") == "retrain":
            # the checkpoint does not record Retrain's settings, so a non-default seed cannot be told apart here
            note(f"{checkpoint} was made by Retrain: with its default seed (the original's + 1, this reference's "
                 "rule) the two are the same model; pass --retrain with a retrain of another seed to measure it "
                 "against an independent one")
        reference = Retrain(run=run.on_device(device), progress=not quiet).prepare(orig_model, orig_data) \
            .unlearn(req.edges).model
    report = run_audit(unlearned, req.edges, data.train, data.test, original=before, retrain=reference,
                       valid=data.valid)
    report.update({f"test_{k}": v for k, v in test_metrics(unlearned, data, ks=[20]).items() if k != "users"})
    report.update({f"retrain_test_{k}": v for k, v in test_metrics(reference, data, ks=[20]).items() if k != "users"})
    report.update(neighbourhood_utility(unlearned, req.edges, data.train, data.test, data.valid, ks=(20,)))
    report.update({f"retrain_{k}": v for k, v in neighbourhood_utility(reference, req.edges, data.train, data.test,
                                                                       data.valid, ks=(20,)).items()})
    verdict = judge(report)
    record = {"checkpoint": str(checkpoint), "request": str(request), **report, "verdict": verdict.to_dict()}
    if as_json:
        emit_json(record)
    else:
        print_audit(checkpoint, report, verdict)
    if json_out:   # after the report is shown, so that a failed append loses nothing
        append_json_line(json_out, record)


def print_audit(checkpoint: Path, report: dict, verdict) -> None:
    print_table([{"measure": c.measure, "unlearned": c.value, "retrain": "-" if c.retrain is None else c.retrain,
                  "threshold": c.threshold, "status": c.status, "direction": c.direction or "-"}
                 for c in verdict.checks], title=f"audit of {checkpoint}: key measures")
    judged = {c.key for c in verdict.checks}
    print_table([{"measure": k, "value": v} for k, v in report.items() if k not in judged],
                title="all measures")
    console.print(verdict.line, soft_wrap=True, markup=False)


from .bench.cli import bench_app  # noqa: E402  (the harness's subcommands: bench run, bench report)

app.add_typer(bench_app, name="bench")

from .service.cli import service_app  # noqa: E402  (recunlearn service token create/list/revoke)

app.add_typer(service_app, name="service")

from .service.receipt_cli import receipt_app  # noqa: E402  (recunlearn receipt verify / public-key)

app.add_typer(receipt_app, name="receipt")


def main() -> None:  # pragma: no cover
    sys.exit(app())
