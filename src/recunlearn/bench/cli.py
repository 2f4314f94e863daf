"""`recunlearn bench ...`: the benchmark harness's subcommands (run a suite, report its results)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

bench_app = typer.Typer(help="Benchmark suites of unlearning methods: run them, report them.", no_args_is_help=True)


def _input_error(err: Exception | str) -> None:
    """A problem with the user's input: one line on stderr, exit code 2, no traceback."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


@bench_app.command("run")
def run(suite: Path = typer.Argument(..., help="suite file (YAML; see benchmarks/suites/)"),
        out: Optional[Path] = typer.Option(None, help="results file (JSON lines) to append to; default "
                                                      "<suite name>.jsonl. Units already in it are skipped."),
        threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default: torch's choice)"),
        cache_dir: Optional[Path] = typer.Option(None, help="model cache (default: $RECUNLEARN_CACHE)"),
        dataset: List[str] = typer.Option([], help="run only this dataset of the suite (repeatable)"),
        backbone: List[str] = typer.Option([], help="run only this backbone (repeatable)"),
        request: List[str] = typer.Option([], help="run only this request spec (repeatable)"),
        seed: List[int] = typer.Option([], help="run only this seed's units (repeatable); the noise floor "
                                                 "belongs to the suite's first seed"),
        method: List[str] = typer.Option([], help="run only this method entry, by label or registered name "
                                                   "(repeatable); each setting still runs its reference and "
                                                   "original"),
        streams: bool = typer.Option(True, help="also run the suite's streams"),
        noise_floor: bool = typer.Option(True, help="also run the noise floor's independent retrains (a later "
                                                    "run adds them)"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars nor resolved config; one "
                                                                "line per unit")) -> None:
    """Run a benchmark suite: every dataset x backbone x request x seed x method, one result line each.
    --dataset/--backbone/--request/--seed/--method/--no-streams/--no-noise-floor run a part of it; its lines
    resume and report as the suite's, so two processes may run different seeds of one suite into one results
    file each."""
    from ..config import ConfigError
    from ..data.interactions import DataError
    from .results import ResultsError
    from .runner import run_suite
    from .suite import check_datasets, check_method_configs, load_suite, narrowed, units
    try:
        spec = narrowed(load_suite(suite), dataset, backbone, request, streams, method)
        check_method_configs(spec)
        check_datasets(spec)
        units(spec, seed)   # an unknown seed fails now
    except (ConfigError, DataError, FileNotFoundError, ImportError, ValueError) as err:
        _input_error(err)
    out = out or Path(f"{spec.name}.jsonl")
    if out.is_dir():   # now: appending to it would fail only after the first unit trained
        _input_error(f"--out {out} is a folder: name the results file to append to, such as "
                     f"{out / f'{spec.name}.jsonl'}")
    echo = _quiet_echo if quiet else typer.echo
    # A damaged results file fails before any work (the runner reads it first), a dataset file that cannot be
    # read before its setting trains; any other error in a run is a bug, and keeps its traceback.
    try:
        summary = run_suite(spec, out, threads=threads, cache_dir=cache_dir, progress=not quiet, echo=echo,
                            seeds=seed, noise_floor=noise_floor)
    except (DataError, ResultsError) as err:
        _input_error(err)
    typer.echo(f"{summary.ran} units run, {summary.skipped} already done, in {summary.seconds:.0f} s: {out}")


def _quiet_echo(text: str) -> None:
    if text.startswith("run "):   # the per-unit lines only
        typer.echo(text)


@bench_app.command("report")
def report(results: List[Path] = typer.Argument(..., help="results file(s) written by `bench run`"),
           out: Path = typer.Option(..., help="folder for report.md and the PNG plots"),
           plots: bool = typer.Option(True, help="also draw the PNG plots")) -> None:
    """Markdown tables (mean ± std over seeds, noise floor, timings) and PNG plots from results files."""
    from .report import write_report
    missing = [str(path) for path in results if not path.is_file()]
    if missing:
        _input_error(FileNotFoundError(f"no results file {', '.join(missing)}"))
    try:
        path = write_report(results, out, plots=plots)
    except ValueError as err:
        _input_error(err)
    typer.echo(f"wrote {path}")
