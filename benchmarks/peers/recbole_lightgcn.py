"""RecBole 1.2.1 LightGCN as a timed side-by-side peer, trained and tested on *our* split.

Run with the peer environment (see setup_recbole.sh and README.md in this folder):

    .peer-recbole/bin/python benchmarks/peers/recbole_lightgcn.py --dataset gowalla --epochs 2

What it does:

1. Converts the LightGCN text split (`<data-root>/<dataset>/{train,test}.txt.gz`, one line per user:
   `user item item ...`) into RecBole atomic files under `runs/peers/recbole/data/` and points RecBole
   at them through `benchmark_filename: [train, valid, test]`, so RecBole neither re-splits nor
   filters (with `benchmark_filename` set, RecBole skips `_data_filtering` entirely; the filter
   options are also set to keep-everything values for clarity).
2. Builds RecBole's own dataloaders, `LightGCN` model and `Trainer`, runs `Trainer.fit` for exactly
   `--epochs` epochs with no validation, no early stopping and no checkpointing (fit is given
   `valid_data=None`), and times every `Trainer._train_epoch` call (negative sampling, forward,
   backward and optimizer steps of one epoch).
3. Runs RecBole's full-sort test evaluation once (Recall@20, NDCG@20) and writes a JSON record.

The valid file: RecBole requires one. By default (`--valid-mode copy`) it is a seeded random 10% of
each user's training items *copied* from train, so the training graph is exactly the train file
(same graph and same number of BPR samples per epoch as the project's trainer). The valid split is
never evaluated. At test time RecBole masks each user's train+valid history, which equals the train
items, i.e. the usual "mask training positives" protocol. `--valid-mode carve` instead *removes*
those 10% from training (a smaller graph); test masking is still train+valid = the whole train file.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

# RecBole 1.2.1 calls torch.load on its own checkpoints without weights_only; harmless here (we
# never reload), but keep the environment consistent with the documented setup.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

REPO_ROOT = Path(__file__).resolve().parents[2]
CONVERSION_VERSION = 1  # bump when the conversion output changes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True, choices=["gowalla", "ml-1m"])
    p.add_argument("--data-root", default=os.environ.get("RECUNLEARN_DATA", str(REPO_ROOT.parent / "shared" / "data")),
                   help="folder holding <dataset>/train.txt.gz and test.txt.gz "
                        "(default: $RECUNLEARN_DATA or ../shared/data)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--reg", type=float, default=1e-4, help="RecBole reg_weight")
    p.add_argument("--require-pow", dest="require_pow", action=argparse.BooleanOptionalAction, default=True,
                   help="RecBole EmbLoss require_pow: True gives sum ||e||^2 / (2 B), the LightGCN-paper L2 "
                        "term the project uses; --no-require-pow is RecBole's default (sum ||e|| / B)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--valid-mode", choices=["copy", "carve"], default="copy",
                   help="copy: valid = seeded 10%% per user copied from train (train graph unchanged); "
                        "carve: those items are removed from train")
    p.add_argument("--valid-frac", type=float, default=0.1)
    p.add_argument("--eval-batch-size", type=int, default=1 << 23,
                   help="RecBole eval_batch_size, counted in user-item scores: full-sort evaluation scores "
                        "max(eval_batch_size // n_items, 1) users per batch (RecBole's default 4096 gives one "
                        "user per batch on gowalla, which makes the test pass very slow)")
    p.add_argument("--work-dir", default=str(REPO_ROOT / "runs" / "peers" / "recbole"),
                   help="converted data, RecBole logs and tensorboard files go here")
    p.add_argument("--json-out", default=None, help="write the result record to this file")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------
# Conversion: LightGCN text split -> RecBole benchmark atomic files
# --------------------------------------------------------------------------------------------
def read_lightgcn(path: Path) -> dict[int, list[int]]:
    """`user item item ...` per line (gzip or plain) -> {user: [items]} (users with no item kept out)."""
    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[int, list[int]] = {}
    with opener(path, "rt") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            u = int(parts[0])
            out.setdefault(u, []).extend(int(x) for x in parts[1:])
    return out


def _find(root: Path, name: str) -> Path:
    for cand in (root / f"{name}.gz", root / name):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"neither {root / name}.gz nor {root / name} exists")


def _write_inter(path: Path, pairs) -> int:
    n = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write("user_id:token\titem_id:token\n")
        for u, i in pairs:
            f.write(f"{u}\t{i}\n")
            n += 1
    tmp.replace(path)
    return n


def convert(args: argparse.Namespace) -> tuple[Path, dict]:
    """Write <work>/data/<key>/<dataset>/<dataset>.{train,valid,test}.inter; reuse when up to date.

    Returns (data_path for RecBole, stats dict).
    """
    import numpy as np

    src_dir = Path(args.data_root).expanduser().resolve() / args.dataset
    train_src, test_src = _find(src_dir, "train.txt"), _find(src_dir, "test.txt")
    fingerprint = {
        "conversion_version": CONVERSION_VERSION,
        "train": [str(train_src), train_src.stat().st_size, int(train_src.stat().st_mtime)],
        "test": [str(test_src), test_src.stat().st_size, int(test_src.stat().st_mtime)],
        "valid_mode": args.valid_mode, "valid_frac": args.valid_frac, "seed": args.seed,
    }
    key = hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:10]
    data_path = Path(args.work_dir).resolve() / "data" / f"{args.dataset}-{args.valid_mode}-s{args.seed}-{key}"
    ds_dir = data_path / args.dataset
    stamp = ds_dir / "conversion.json"
    if stamp.exists():
        stats = json.loads(stamp.read_text())
        if stats.get("fingerprint") == fingerprint:
            print(f"[recbole-peer] reusing converted data in {ds_dir}", flush=True)
            return data_path, stats

    t0 = time.perf_counter()
    ds_dir.mkdir(parents=True, exist_ok=True)
    train = read_lightgcn(train_src)
    test = read_lightgcn(test_src)
    rng = np.random.default_rng(args.seed)

    train_pairs, valid_pairs = [], []
    for u in sorted(train):
        items = train[u]
        n = len(items)
        if args.valid_mode == "copy":
            k = max(1, int(round(args.valid_frac * n)))
        else:  # carve: never take a user's last training item
            k = min(int(round(args.valid_frac * n)), n - 1)
        pick = set(rng.choice(n, size=k, replace=False).tolist()) if k > 0 else set()
        for j, i in enumerate(items):
            if j in pick:
                valid_pairs.append((u, i))
                if args.valid_mode == "copy":
                    train_pairs.append((u, i))
            else:
                train_pairs.append((u, i))
    test_pairs = [(u, i) for u in sorted(test) for i in test[u]]

    n_train = _write_inter(ds_dir / f"{args.dataset}.train.inter", train_pairs)
    n_valid = _write_inter(ds_dir / f"{args.dataset}.valid.inter", valid_pairs)
    n_test = _write_inter(ds_dir / f"{args.dataset}.test.inter", test_pairs)
    train_items = {i for its in train.values() for i in its}
    test_items = {i for its in test.values() for i in its}
    stats = {
        "fingerprint": fingerprint,
        "source_train_interactions": sum(len(v) for v in train.values()),
        "source_test_interactions": sum(len(v) for v in test.values()),
        "train_interactions": n_train, "valid_interactions": n_valid, "test_interactions": n_test,
        "users_train": len(train), "users_test": len(test),
        "users_test_not_in_train": len(set(test) - set(train)),
        "items_train": len(train_items), "items_test_only": len(test_items - train_items),
        "max_item_id": max(train_items | test_items), "max_user_id": max(set(train) | set(test)),
    }
    stamp.write_text(json.dumps(stats, indent=2))
    print(f"[recbole-peer] converted {args.dataset} in {time.perf_counter() - t0:.1f}s -> {ds_dir}", flush=True)
    return data_path, stats


# --------------------------------------------------------------------------------------------
# RecBole run
# --------------------------------------------------------------------------------------------
def recbole_config_dict(args: argparse.Namespace, data_path: Path, work_dir: Path) -> dict:
    return {
        # data: our split, nothing dropped or re-split
        "data_path": str(data_path),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"]},
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "val_interval": None,
        "rm_dup_inter": None,
        "filter_inter_by_user_or_item": False,
        "save_dataset": False,
        "save_dataloaders": False,
        # model
        "embedding_size": args.dim,
        "n_layers": args.layers,
        "reg_weight": args.reg,
        "require_pow": args.require_pow,
        # training
        "epochs": args.epochs,
        "train_batch_size": args.batch_size,
        "learner": "adam",
        "learning_rate": args.lr,
        "weight_decay": 0.0,
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                                  "dynamic": False, "candidate_num": 0},
        "shuffle": True,
        "eval_step": args.epochs + 1,   # no mid-training evaluation (fit also gets valid_data=None)
        "stopping_step": 10 ** 9,       # no early stopping
        # evaluation: full ranking over all items, history (train+valid) masked
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [20],
        "valid_metric": "NDCG@20",
        "eval_batch_size": args.eval_batch_size,
        # environment
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": False,
        "gpu_id": "",
        "device": "cpu",
        "worker": 0,
        "show_progress": False,
        "state": "INFO",
        "checkpoint_dir": str(work_dir / "saved"),
        "log_wandb": False,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import LightGCN
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    work_dir = Path(args.work_dir).resolve()
    json_out = Path(args.json_out).resolve() if args.json_out else None  # before the chdir below
    data_path, conv_stats = convert(args)
    run_dir = work_dir / "logs" / args.dataset
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(run_dir)  # RecBole writes ./log/ and ./log_tensorboard/ relative to the cwd

    t_setup = time.perf_counter()
    # RecBole's Config also parses `--key=value` items of sys.argv as config overrides (with a higher
    # priority than config_dict); hide ours so that only the dict below configures RecBole.
    sys.argv = sys.argv[:1]
    config = Config(model="LightGCN", dataset=args.dataset,
                    config_dict=recbole_config_dict(args, data_path, work_dir))
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = logging.getLogger()
    torch.set_num_threads(args.threads)

    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = LightGCN(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    setup_sec = time.perf_counter() - t_setup

    n_users_rb, n_items_rb = dataset.user_num - 1, dataset.item_num - 1  # minus RecBole's [PAD]
    train_nnz = int(model.interaction_matrix.nnz)

    epoch_secs: list[float] = []
    epoch_losses: list[float] = []
    inner = trainer._train_epoch

    def timed_train_epoch(train_data, epoch_idx, *a, **kw):
        t0 = time.perf_counter()
        loss = inner(train_data, epoch_idx, *a, **kw)
        dt = time.perf_counter() - t0
        epoch_secs.append(dt)
        epoch_losses.append(float(sum(loss) if isinstance(loss, tuple) else loss))
        print(f"[recbole-peer] epoch {epoch_idx}: {dt:.2f}s  loss {epoch_losses[-1]:.4f}", flush=True)
        return loss

    trainer._train_epoch = timed_train_epoch
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    trainer.fit(train_data, valid_data=None, saved=False, show_progress=False, verbose=True)
    fit_sec = time.perf_counter() - t0
    assert len(epoch_secs) == args.epochs, (len(epoch_secs), args.epochs)

    t0 = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    eval_sec = time.perf_counter() - t0
    load_after = os.getloadavg()
    result = {k.lower(): float(v) for k, v in result.items()}

    record = {
        "peer": "recbole-lightgcn",
        "dataset": args.dataset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "dim": args.dim,
        "layers": args.layers,
        "lr": args.lr,
        "reg": args.reg,
        "require_pow": args.require_pow,
        "seed": args.seed,
        "sec_per_epoch": epoch_secs,
        "sec_per_epoch_mean": statistics.fmean(epoch_secs) if epoch_secs else None,
        "recall@20": result["recall@20"],
        "ndcg@20": result["ndcg@20"],
        "train_loss_per_epoch": epoch_losses,
        "eval_sec": eval_sec,
        "fit_sec": fit_sec,
        "setup_sec": setup_sec,
        "torch_version": torch.__version__,
        "recbole_version": recbole.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # 1/5/15-minute load averages when training started and after the test evaluation; a load
        # well above `threads` means the machine was shared and the timings are inflated.
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "valid_mode": args.valid_mode,
        "valid_frac": args.valid_frac,
        "recbole_users": n_users_rb,
        "recbole_items": n_items_rb,
        "train_graph_edges": train_nnz,
        "batches_per_epoch": len(train_data),
        "test_users_evaluated": int(len(test_data.uid_list)),
        "conversion": {k: v for k, v in conv_stats.items() if k != "fingerprint"},
        "data_dir": str(data_path / args.dataset),
    }
    print(json.dumps(record, indent=2), flush=True)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"[recbole-peer] wrote {json_out}", flush=True)
    return record


if __name__ == "__main__":
    main()
