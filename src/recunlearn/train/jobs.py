"""Independent training runs spread over processes: the sub-models of SISA and RecEraser, one per shard.

A job is a run config (with its own seed), a dataset and whether to validate; its result depends on the job
alone, so where it runs changes nothing:

- `workers=1`: one after the other in this process;
- `workers=N`: on N spawned local processes, each taking the next job when it is free;
- inside an initialised torch.distributed group (torchrun): job i on rank i mod world size, and every rank
  gathers every result (all ranks continue from the same state).

Results equal the one-process run bit for bit when each process runs as many torch threads as that run did
(a float reduction may be split differently over another number of threads): a run's `train.threads` holds
everywhere; without it each worker runs this process's thread count divided by the number of workers.
Weights cross processes as `torch.save` bytes, read back with `weights_only=True`. Each call starts its
workers afresh (seconds of start-up, inside the time it takes).
"""
from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tqdm.auto import tqdm

from ..data.interactions import Dataset
from .config import RunConfig
from .distributed import Ranks
from .trainer import Trainer


@dataclass(frozen=True)
class FitJob:
    run: RunConfig
    dataset: Dataset
    validate: bool = True      # early stopping on dataset.valid; False: exactly run.train.epochs epochs


@dataclass
class FitOutcome:
    weights: dict[str, torch.Tensor]
    train_seconds: float       # the epochs alone
    seconds: float             # the whole fit, validation passes included


def fit_job(job: FitJob) -> FitOutcome:
    """Train `job` in this process."""
    model, result = Trainer(job.run, progress=False, validate=job.validate).fit(job.dataset)
    return FitOutcome(model.state_dict(), result.train_seconds, result.seconds)


def fit_jobs(jobs: list[FitJob], workers: int = 1, progress: bool = True, desc: str = "fits",
             threads: int | None = None) -> list[FitOutcome]:
    """Every job's outcome, in the jobs' order (see the module's notes for where each runs). `threads`: torch
    threads per worker process (default: this process's count shared out, at least one)."""
    if workers < 1:
        raise ValueError(f"workers={workers}: the number of worker processes must be at least 1")
    ranks = Ranks.active()
    if ranks is not None:
        return _fit_on_ranks(jobs, ranks, progress, desc)
    if workers == 1 or len(jobs) <= 1:
        return [fit_job(job) for job in tqdm(jobs, desc=desc, disable=not progress)]
    workers = min(workers, len(jobs))
    threads = threads or max(1, torch.get_num_threads() // workers)
    outcomes: list[FitOutcome | None] = [None] * len(jobs)
    # spawned, never forked: a forked child inherits torch's thread pools mid-flight
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=torch.set_num_threads,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(_portable_fit, job): index for index, job in enumerate(jobs)}
        try:
            for future in tqdm(as_completed(futures), total=len(jobs), desc=desc, disable=not progress):
                outcomes[futures[future]] = _unpack(future.result())
        except BrokenProcessPool:
            raise RuntimeError(f"a worker process died while training ({len(jobs)} jobs on {workers} workers; a "
                               "process killed by the memory limit looks like this): use fewer workers") from None
    return outcomes


def _portable_fit(job: FitJob) -> tuple[bytes, float, float]:
    outcome = fit_job(job)
    buffer = io.BytesIO()
    torch.save(outcome.weights, buffer)
    return buffer.getvalue(), outcome.train_seconds, outcome.seconds


def _unpack(packed: tuple[bytes, float, float]) -> FitOutcome:
    weights, train_seconds, seconds = packed
    return FitOutcome(torch.load(io.BytesIO(weights), weights_only=True), train_seconds, seconds)


def _fit_on_ranks(jobs: list[FitJob], ranks: Ranks, progress: bool, desc: str) -> list[FitOutcome]:
    """Job i on rank i mod world size; every rank returns every outcome."""
    mine = range(ranks.rank, len(jobs), ranks.world_size)
    done = [(index, _portable_fit(jobs[index]))
            for index in tqdm(mine, desc=f"{desc} (rank 0's share)", disable=not (progress and ranks.is_main))]
    gathered: list = [None] * ranks.world_size
    dist.all_gather_object(gathered, done)
    outcomes: list[FitOutcome | None] = [None] * len(jobs)
    for index, packed in (pair for share in gathered for pair in share):
        outcomes[index] = _unpack(packed)
    return outcomes
