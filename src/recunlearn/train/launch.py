"""Starting ranks: N local processes joined in a gloo group (`run_on_ranks`, what `recunlearn train --nproc N`
uses), or the ranks torchrun started (`torchrun_ranks`), and a Trainer's fit spread over them.

Local ranks are spawned (never forked: a forked child inherits torch's thread pools mid-flight), rendezvous
through a file in a private temporary folder and hand rank 0's result back through a file there (pickled, as
spawn pickles the arguments that go the other way: this process's own children, in its own folder). An
error in any rank ends every rank and is raised again in the caller with its own type and message.

    torchrun --standalone --nproc-per-node=2 --no-python recunlearn --threads 1 train --dataset ml-1m --out DIR
"""
from __future__ import annotations

import atexit
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .distributed import Ranks, backend_for

RESULT_FILE, ERROR_FILE = "rank0-result.pickle", "rank{}-error.pickle"


def run_on_ranks(fn: Callable, nproc: int, *args, threads: int | None = None, device: str = "cpu") -> Any:
    """`fn(*args)` on `nproc` local processes that form a process group (ranks 0..nproc-1); returns rank 0's
    return value. `fn`, `args` and the value must pickle (`fn` a module-level function). Each process runs
    `threads` torch threads (default: this process's count shared out, at least one). `device="cuda"`: rank r
    works on GPU r and the group reduces with NCCL; else with gloo."""
    if nproc < 1:
        raise ValueError(f"{nproc} processes: the number of processes must be at least 1")
    if torch.device(device).type == "cuda":
        require_gpus(nproc)
    threads = threads or max(1, torch.get_num_threads() // nproc)
    with tempfile.TemporaryDirectory(prefix="recunlearn-ranks-") as tmp:
        try:
            mp.spawn(_rank_main, args=(nproc, tmp, threads, fn, args, device), nprocs=nproc, join=True)
        except mp.ProcessRaisedException as err:
            raise _rank_error(Path(tmp), err.error_index) from None
        except mp.ProcessExitedException as err:
            how = f"was killed by {err.signal_name} (the memory limit kills this way)" if err.signal_name else \
                f"ended with exit code {err.exit_code}"
            raise RuntimeError(f"rank {err.error_index} of {nproc} {how}; the other ranks were stopped") from None
        return pickle.loads((Path(tmp) / RESULT_FILE).read_bytes())


def require_gpus(nproc: int) -> None:
    """NCCL ranks take one GPU each: refuse more ranks than this machine has GPUs."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if nproc > available:
        raise ValueError(f"{nproc} ranks on CUDA need one GPU each, but torch sees {available} here: lower "
                         f"train.nproc to {max(available, 1)}, or train on the CPU (train.device=cpu) with gloo ranks")


def _rank_main(rank: int, nproc: int, tmp: str, threads: int, fn: Callable, args: tuple, device: str) -> None:
    torch.set_num_threads(threads)
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(rank)   # NCCL finds a rank's GPU through the current device
    dist.init_process_group(backend_for(device), init_method=f"file://{tmp}/rendezvous", rank=rank,
                            world_size=nproc)
    try:
        result = fn(*args)
        if rank == 0:
            (Path(tmp) / RESULT_FILE).write_bytes(pickle.dumps(result))
    except Exception as err:
        try:
            report = pickle.dumps(err)
            pickle.loads(report)        # an exception whose constructor takes other arguments does not come back
        except Exception:   # noqa: BLE001 - then its type and message, as text
            report = pickle.dumps(RuntimeError(f"rank {rank}: {type(err).__name__}: {err}"))
        (Path(tmp) / ERROR_FILE.format(rank)).write_bytes(report)
        raise
    finally:
        dist.destroy_process_group()


def _rank_error(tmp: Path, rank: int) -> BaseException:
    """The exception that rank `rank` raised."""
    file = tmp / ERROR_FILE.format(rank)
    if not file.is_file():
        return RuntimeError(f"rank {rank} failed before it could report why (see its output above)")
    return pickle.loads(file.read_bytes())


# --- a Trainer's fit on ranks ------------------------------------------------------------------------------

def fit_on_ranks(trainer, dataset, model=None, resume: bool = False):
    """`trainer.fit(dataset, model, resume)` data-parallel on `trainer.cfg.nproc` local ranks; returns (the
    model with rank 0's final weights, rank 0's TrainResult), as the one-process fit returns them."""
    from ..data.graph import build_graph
    from ..models.registry import attach_content, build_model

    given = None if model is None else model.state_dict()
    model_config = trainer.run.model if model is None else model.config
    weights, result = run_on_ranks(_fit_rank, trainer.cfg.nproc, trainer.run, model_config, trainer.progress,
                                   None if trainer.checkpoint_dir is None else str(trainer.checkpoint_dir),
                                   trainer.validates, dataset, given, resume, threads=trainer.cfg.threads,
                                   device=trainer.cfg.device)
    model = attach_content(model, dataset) if model is not None else \
        build_model(trainer.run.model, dataset.n_users, dataset.n_items, content=dataset)
    model.load_state_dict(weights)
    model.attach(build_graph(dataset.train))
    model.invalidate()
    model.eval()
    return model, result


def _fit_rank(run, model_config, progress: bool, checkpoint_dir: str | None, validate: bool, dataset,
              given: dict | None, resume: bool):
    """One rank's share of `fit_on_ranks`: rank 0 shows progress and writes the checkpoints."""
    from ..models.registry import build_model
    from .trainer import Trainer

    ranks = Ranks.current()
    # every rank resumes from the checkpoint folder; only rank 0 writes to it
    trainer = Trainer(run, progress=progress and ranks.is_main, checkpoint_dir=checkpoint_dir, validate=validate,
                      ranks=ranks)
    model = None
    if given is not None:
        model = build_model(model_config, dataset.n_users, dataset.n_items, content=dataset)
        model.load_state_dict(given)
    model, result = trainer.fit(dataset, model, resume=resume)
    if not ranks.is_main:
        return None
    return model.state_dict(), result


# --- ranks started by torchrun -----------------------------------------------------------------------------

def torchrun_ranks(run):
    """(run, Ranks) when torchrun (or another launcher setting RANK and WORLD_SIZE) started this process as
    one of several ranks: the process group is joined and `train.nproc` is the world size; else (run, None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or "RANK" not in os.environ:
        return run, None
    if run.train.nproc not in (1, world):
        raise ValueError(f"train.nproc={run.train.nproc}, but the launcher started {world} ranks: leave --nproc "
                         "out under torchrun (its --nproc-per-node and --nnodes decide)")
    run = run.model_copy(update={"train": run.train.model_copy(update={"nproc": world})})
    type(run).model_validate(run.model_dump())   # the checks of the data-parallel settings, now with the world
    if not dist.is_initialized():
        if torch.device(run.train.device).type == "cuda":
            require_gpus(world)
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend_for(run.train.device), init_method="env://")
        atexit.register(dist.destroy_process_group)
    return run, Ranks.current()
