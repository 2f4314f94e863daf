"""A bounded load test of the erasure service on 127.0.0.1: `recunlearn service serve` as a real process, N erasures
(one training interaction each) posted by C concurrent clients, then the ledger read back.

    python benchmarks/bench_service_load.py --checkpoint runs/model [--erasures 2000] [--clients 16]
        [--database sqlite|postgresql] [--workers N] [--out benchmarks/results/service-load.jsonl]

Without --checkpoint it trains and prepares a small ml-100k LightGCN first (the demo's settings).

Reported: acknowledgement latency p50/p99 (client-side, POST to 202; each client first makes one untimed
authenticated request, since the server verifies a token's scrypt hash once, at its first use), acknowledgement to published model
(completed_at - received_at in the ledger: an erasure completes in the transaction that publishes the first
version without it) p50/p95, applied erasures per second, and the checks: every acknowledged erasure is in the
ledger once and completed once, and the newest published version's training data holds none of the erased
pairs.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import httpx2 as httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECUNLEARN = str(Path(sys.executable).with_name("recunlearn"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q)) if values else float("nan")


def small_model(folder: Path) -> Path:
    out = folder / "model"
    common = ["--quiet"]
    subprocess.run([RECUNLEARN, "train", "--dataset", "ml-100k", "--model", "lightgcn", "--out", str(out), *common,
                    "--set", "train.batch_size=4096", "--set", "train.lr=0.01", "--set", "train.patience=5"], check=True)
    subprocess.run([RECUNLEARN, "prepare", "--method", "unlearnrec", "--checkpoint", str(out), *common], check=True)
    return out


def erasure_pairs(checkpoint: Path, n: int, seed: int) -> list[list[str]]:
    """n distinct training pairs (original ids), so that every erasure removes one edge: one per user while the
    data has at least n users with training edges, else n drawn at random."""
    from recunlearn.train.checkpoint import load_checkpoint_data
    _, data, _ = load_checkpoint_data(checkpoint)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.train))
    first = np.unique(data.train.users[order], return_index=True)[1]
    chosen = order[first] if len(first) >= n else order[:n]
    chosen = rng.permutation(chosen)[:n]
    u, i = data.user_ids.label(data.train.users[chosen]), data.item_ids.label(data.train.items[chosen])
    return [[str(a), str(b)] for a, b in zip(u.tolist(), i.tolist())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained and prepared checkpoint (default: a small ml-100k one)")
    parser.add_argument("--erasures", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--batch-size", type=int, default=64, help="policy.batch_size of the worker")
    parser.add_argument("--batch-window", type=float, default=1.0, help="policy.batch_window_s of the worker")
    parser.add_argument("--workers", type=int, default=0, help="worker processes beside `serve --no-worker`; 0: "
                        "the worker runs in a thread of the server process (the default deployment)")
    parser.add_argument("--finetune-every", type=int, help="policy.finetune_every (default: the policy's); a large "
                        "value leaves scheduled fine-tuning out of the measurement")
    parser.add_argument("--log", type=Path, help="keep the server's and workers' log here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for every erasure to complete")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service-load.jsonl")
    args = parser.parse_args()

    from recunlearn.bench.environment import machine_line
    from recunlearn.train.version import code_version
    from recunlearn.service.auth import create_token
    from recunlearn.service.ledger import Erasure, model_version_erasures, open_ledger
    from recunlearn.train.checkpoint import load_checkpoint_data
    from sqlalchemy import func, select

    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="service-load-")))
        checkpoint = args.checkpoint or small_model(folder)
        url = None
        if args.database == "postgresql":
            sys.path.insert(0, str(ROOT / "tests"))
            from postgres_server import throwaway_server
            url = stack.enter_context(throwaway_server())
        settings = {"state_dir": str(folder / "state"), "checkpoint": str(Path(checkpoint).resolve()),
                    "database_url": url, "policy": {"batch_size": args.batch_size,
                                                    "batch_window_s": args.batch_window,
                                                    **({"finetune_every": args.finetune_every}
                                                       if args.finetune_every else {})}}
        config = folder / "service.yaml"
        config.write_text(yaml.safe_dump(settings))
        ledger_url = url or f"sqlite:///{(folder / 'state' / 'ledger.sqlite3').resolve()}"
        (folder / "state").mkdir()
        ledger = open_ledger(ledger_url)
        with ledger.writing() as session:
            token = create_token(session, "load test", ["erasure:write", "erasure:read"])
        pairs = erasure_pairs(Path(checkpoint), args.erasures, args.seed)

        port = free_port()
        log = open(folder / "serve.log", "w")
        server = subprocess.Popen([RECUNLEARN, "service", "serve", "--config", str(config), "--port", str(port),
                                   *(["--no-worker"] if args.workers else [])], stdout=log, stderr=subprocess.STDOUT)
        stack.callback(server.wait, 60)
        stack.callback(server.terminate)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start; its log: {(folder / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.2)

        workers = [subprocess.Popen([RECUNLEARN, "service", "worker", "--config", str(config)], stdout=log,
                                    stderr=subprocess.STDOUT) for _ in range(args.workers)]
        for worker in workers:
            stack.callback(worker.wait, 60)
            stack.callback(worker.terminate)
        headers = {"Authorization": f"Bearer {token}"}

        def post(chunk: list[list[str]]) -> list[tuple[float, str, int]]:
            done = []
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                # Warm-up, untimed: the server verifies a token's scrypt hash once, at its first use.
                client.get(f"/v1/erasures/{uuid.uuid4()}")
                for pair in chunk:
                    start = time.perf_counter()
                    answer = client.post("/v1/erasures", json={"pairs": [pair]})
                    done.append((time.perf_counter() - start, answer.json().get("id", ""), answer.status_code))
            return done

        chunks = [pairs[k::args.clients] for k in range(args.clients)]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            answers = [a for chunk in pool.map(post, chunks) for a in chunk]
        post_seconds = time.perf_counter() - started
        acked = [erasure_id for _, erasure_id, status in answers if status == 202]
        ack_ms = [seconds * 1000 for seconds, _, status in answers if status == 202]

        deadline = time.monotonic() + args.timeout
        while True:
            with ledger.reading() as session:
                waiting = session.scalar(select(func.count()).select_from(Erasure)
                                         .where(Erasure.status.in_(("pending", "in_progress"))))
            if not waiting or time.monotonic() > deadline or server.poll() is not None:
                break
            time.sleep(1)
        with ledger.reading() as session:
            rows = session.scalars(select(Erasure)).all()
            listed = session.execute(select(model_version_erasures.c.erasure_id, func.min(model_version_erasures.c.version))
                                     .group_by(model_version_erasures.c.erasure_id)).all()
            from recunlearn.service.versions import current_version
            head = current_version(session)
            head_version, head_path = head.version, head.path
        by_id = {str(r.id): r for r in rows}
        completed = [r for r in rows if r.status == "completed"]
        first_version = {str(e): v for e, v in listed}
        to_published = [(r.completed_at - r.received_at).total_seconds() for r in completed]
        span = (max(r.completed_at for r in completed) - min(r.received_at for r in rows)).total_seconds() \
            if completed else float("nan")
        _, head_data, _ = load_checkpoint_data(head_path)
        u = head_data.user_ids.index([p[0] for p in pairs])
        i = head_data.item_ids.index([p[1] for p in pairs])
        still_there = int(head_data.train.contains(u, i).sum())
        record = {
            "benchmark": "service-load", "date": date.today().isoformat(), "machine": machine_line(),
            "load_average": round(os.getloadavg()[0], 1),
            "dataset": head_data.name, "database": args.database, "erasures": args.erasures, "clients": args.clients,
            "worker_processes": args.workers, "code_version": code_version(),
            "policy": settings["policy"], "post_seconds": round(post_seconds, 2),
            "acknowledged": len(acked), "refused": len(answers) - len(acked),
            "ack_ms_p50": round(quantile(ack_ms, 0.5), 2), "ack_ms_p99": round(quantile(ack_ms, 0.99), 2),
            "ack_to_published_s_p50": round(quantile(to_published, 0.5), 2),
            "ack_to_published_s_p95": round(quantile(to_published, 0.95), 2),
            "applied_per_second": round(len(completed) / span, 2) if completed else 0.0,
            "completed": len(completed), "failed": sum(r.status == "failed" for r in rows),
            "lost": sum(erasure_id not in by_id for erasure_id in acked),
            "duplicated": len(acked) - len(set(acked)) + len(rows) - len(by_id),
            "completed_without_version": sum(str(r.id) not in first_version for r in completed),
            "first_version_mismatch": sum(first_version.get(str(r.id)) != r.model_version for r in completed),
            "versions_published": head_version, "erased_pairs_in_newest_version": still_there,
        }
        ledger.dispose()
        if args.log:
            log.flush()
            args.log.write_text((folder / "serve.log").read_text())
    print(json.dumps(record, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
