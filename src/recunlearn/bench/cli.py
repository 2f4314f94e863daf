"""`recunlearn bench ...`: the benchmark harness's subcommands."""
from __future__ import annotations

import typer

bench_app = typer.Typer(help="Benchmark suites of unlearning methods: run them, report them.", no_args_is_help=True)
