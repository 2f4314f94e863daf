"""Shared fixtures of the harness tests: one run of the tiny suite, shared by the test modules."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from recunlearn.bench.results import read_rows
from recunlearn.bench.runner import Runner, Summary
from recunlearn.bench.suite import Suite
from bench.tiny import tiny_loader, tiny_suite


@dataclass
class TinyRun:
    suite: Suite
    path: Path          # the results file
    summary: Summary
    rows: list[dict]
    lines: list[str]    # what the runner printed
    cache: Path         # models, prepared states and timing records of the run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """The tiny suite run once into a fresh results file, with a fresh cache (never the user's)."""
    folder = tmp_path_factory.mktemp("tiny-run")
    suite, path, lines = tiny_suite(), folder / "tiny.jsonl", []
    summary = Runner(suite, path, load=tiny_loader, cache_dir=folder / "cache", progress=False,
                     echo=lines.append).run()
    return TinyRun(suite, path, summary, read_rows(path), lines, folder / "cache")
