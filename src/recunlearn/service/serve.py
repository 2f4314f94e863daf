"""`recunlearn service serve`: the API and the worker in one process. The ledger is migrated, the worker recovers
and registers the initial model, the API resolves subjects against the current version's data, and the worker
applies erasures in a background thread while uvicorn serves; on shutdown (SIGTERM, SIGINT) the worker finishes
its batch and stops."""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer

from .ledger import open_ledger, upgrade
from .subjects import dataset_resolver
from .versions import current_version
from .worker import Worker, WorkerSettings

log = logging.getLogger(__name__)


def current_dataset(ledger):
    """The data of the newest published version (its id maps decide which subjects are known)."""
    from ..train.checkpoint import load_checkpoint
    with ledger.reading() as session:
        path = current_version(session).path
    return load_checkpoint(path)[2]


def run(settings: WorkerSettings, host: str = "127.0.0.1", port: int = 8000, worker_thread: bool = True) -> None:
    """Serve the API on host:port with a worker running beside it in a thread (unless `worker_thread` is
    False: workers then run as their own processes), until uvicorn is told to stop."""
    import uvicorn

    from .api import create_app
    upgrade(settings.ledger_url())
    ledger = open_ledger(settings.ledger_url())
    worker, stop = Worker(settings, ledger), threading.Event()
    try:
        with worker.started():   # recovers and registers the initial version before the API answers
            settings.subject_resolver = dataset_resolver(current_dataset(ledger))
            thread = threading.Thread(target=worker.run_forever, args=(stop,), name="worker", daemon=True) \
                if worker_thread else None
            if thread is not None:
                thread.start()
            if threading.current_thread() is threading.main_thread():
                # uvicorn re-raises the signal that stopped it, after restoring these handlers: the process
                # then stops the worker below and exits normally instead of dying mid-batch.
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda *_: stop.set())
            try:
                uvicorn.run(create_app(settings, ledger), host=host, port=port, log_level="info")
            finally:
                stop.set()
                if thread is not None:
                    log.info("stopping the worker (it finishes its current batch)")
                    thread.join()
    finally:
        ledger.dispose()


def serve_command(config: Path = typer.Option(..., help="service settings file (YAML) with `checkpoint`"),
                  host: str = typer.Option("127.0.0.1", help="address to listen on"),
                  port: int = typer.Option(8000, help="port to listen on"),
                  worker: bool = typer.Option(True, "--worker/--no-worker", help="run a worker in this process")
                  ) -> None:
    """Serve the erasure API and run the worker that applies erasures, in one process."""
    from .worker import settings_or_exit
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run(settings_or_exit(config), host, port, worker)


if __name__ == "__main__":
    typer.run(serve_command)
