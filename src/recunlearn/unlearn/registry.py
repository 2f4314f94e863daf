"""Unlearning methods by name. A new method is one module plus one line here; the CLI (`--method NAME`),
the conformance suite and the benchmark harness pick it up from this table.

Entries are import paths, so that a method with heavy dependencies is imported only when it is used.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..config import ConfigError, load_config
from ..train.config import RunConfig
from .base import Unlearner

UNLEARNERS: dict[str, str] = {
    "retrain": "recunlearn.unlearn.retrain:Retrain",
    "finetune": "recunlearn.unlearn.finetune:FineTune",
    "gradient-ascent": "recunlearn.unlearn.gradient_ascent:GradientAscent",
    "sisa": "recunlearn.unlearn.sisa:Sisa",
    "receraser": "recunlearn.unlearn.receraser:RecEraser",
    "suppress": "recunlearn.unlearn.suppress:Suppress",
    "unlearnrec": "recunlearn.unlearn.unlearnrec:UnlearnRec",
    "influence": "recunlearn.unlearn.influence:Influence",
    "scif": "recunlearn.unlearn.influence:SCIF",
    "reverse-bpr": "recunlearn.unlearn.reverse_bpr:ReverseBPR",
    "cragru": "recunlearn.unlearn.cragru:CRAGRU",
}


def unlearner_class(name: str) -> type[Unlearner]:
    try:
        module, attr = UNLEARNERS[name].split(":")
    except KeyError:
        raise ConfigError(f"unknown unlearning method {name!r}; choose one of {', '.join(sorted(UNLEARNERS))}") from None
    return getattr(importlib.import_module(module), attr)


def build_unlearner(name: str, overrides: list[str] | dict | None = None, *, run: RunConfig | None = None,
                    progress: bool = True, cache_dir: str | Path | None = None, config_file=None,
                    device: str | None = None) -> Unlearner:
    """A method with its config from defaults < `config_file` < overrides (`key=value` strings or a mapping).
    `device`: where the method's own training runs, in place of the run's `train.device` (None: the run's)."""
    cls = unlearner_class(name)
    if run is not None:
        run = run.on_device(device)
    if isinstance(overrides, dict):
        config = load_config(cls.config_class, config_file, [], base=overrides)
    else:
        config = load_config(cls.config_class, config_file, overrides or [])
    return cls(config, run=run, progress=progress, cache_dir=cache_dir)
