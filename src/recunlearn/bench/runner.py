"""Runs a suite: every unit of `suite.units`, one result line each, resuming where a previous run stopped.

For each setting (dataset, backbone, request, seed) the original model is trained with the seed (cached),
the request drawn with it (`setting`), and the Retrain reference trained on the residual data with another
seed (`suite.reference_seed`) through the Retrain unlearner, like any method. Every method is built through
the registry with the original's run config, prepared once per original model (`prepared`), timed from the
`unlearn` call to the first answered query (`measure`), and measured against the reference. The reference of
a setting is shared by its units and kept in memory while the runner works on that dataset and backbone.

A unit whose key (code version and every setting that shapes it) is already in the results file is skipped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Collection

import torch

from ..data.interactions import DataError, Interactions
from ..data.requests import Request
from ..train.config import RunConfig, TrainConfig
from ..train.version import TRAINING_PACKAGES, code_version
from ..unlearn.base import UnlearnResult
from . import provenance
from .environment import load_average, machine_line, versions
from .measure import measure, relative, timed_unlearn, warm_up
from .prepared import Prepared, prepared
from .results import SCHEMA, append_row, finished_units
from .setting import Loader, Setting, build_setting, fingerprint, registry_loader, training_key
from .suite import REFERENCE, STREAM_MARKS, Suite, Unit, check_method_configs, dump_suite, reference_seed, \
    unit_key, units


# A result line depends on the code of these subpackages: a change to any of them reruns its units on resume.
RESULT_PACKAGES = ("data", "models", "train", "unlearn", "eval", "bench")


@dataclass
class Reference:
    """The Retrain reference of one setting (or of one checkpoint of a stream)."""

    result: UnlearnResult
    timings: dict
    reused_from: dict | None
    metrics: dict
    seed: int


@dataclass
class Summary:
    total: int
    ran: int
    skipped: int
    seconds: float


class Runner:
    def __init__(self, suite: Suite, out: str | Path, *, load: Loader = registry_loader, cache_dir=None,
                 progress: bool = True, echo: Callable[[str], None] = print, seeds: Collection[int] = (),
                 noise_floor: bool = True):
        self.suite, self.out, self.load, self.cache_dir = suite, Path(out), load, cache_dir
        self.seeds = tuple(seeds)   # empty: every seed of the suite
        self.noise_floor = noise_floor
        self.progress, self.echo = progress, echo
        self.code = code_version(RESULT_PACKAGES)
        self._settings: dict[tuple, Setting] = {}
        self._references: dict[tuple, Reference] = {}
        self._stream_references: dict[tuple, list[tuple[int, Interactions, Reference]]] = {}

    # --- the loop ----------------------------------------------------------------------------------
    def run(self) -> Summary:
        check_method_configs(self.suite)
        todo = units(self.suite, self.seeds, self.noise_floor)
        done = finished_units(self.out)
        keys = [unit_key(unit, self.suite, self.code) for unit in todo]
        pending = sum(key not in done for key in keys)
        self.echo(f"suite {self.suite.name}: {len(todo)} units, {len(todo) - pending} already in {self.out}\n"
                  f"machine: {machine_line()}\ncode version: {self.code}\n{dump_suite(self.suite)}")
        if pending:
            warm_up()
        start, ran = time.perf_counter(), 0
        for number, (unit, key) in enumerate(zip(todo, keys), 1):
            if key in done:
                continue
            self._forget_other_settings(unit)
            unit_start = time.perf_counter()
            append_row(self.out, self.run_unit(unit, key))
            ran += 1
            elapsed = time.perf_counter() - start
            eta = elapsed / ran * (pending - ran)
            self.echo(f"run {number} of {len(todo)}: {describe(unit)}: {time.perf_counter() - unit_start:.1f} s "
                      f"(elapsed {clock(elapsed)}, ETA {clock(eta)})")
        return Summary(len(todo), ran, len(todo) - pending, time.perf_counter() - start)

    def run_unit(self, unit: Unit, key: str) -> dict:
        before = load_average()
        setting = self.setting(unit)
        row = {"original": self._original, "reference": self._reference_row, "method": self._method,
               "noise_floor": self._noise_floor, "stream": self._stream}[unit.role](unit, setting)
        return self._complete(row, unit, key, setting, before)

    # --- settings and references --------------------------------------------------------------------
    def setting(self, unit: Unit) -> Setting:
        key = unit.setting()
        if key not in self._settings:
            run = self.suite.run_config(unit.dataset, unit.backbone, unit.seed)
            try:
                self._settings[key] = build_setting(run, unit.request, unit.seed, self.load, self.cache_dir,
                                                    self.progress)
            except DataError as err:   # the data package's message names the file, not the suite's entry
                raise DataError(f"suite {self.suite.name!r}, dataset {unit.dataset!r}: {err}") from err
        return self._settings[key]

    def reference(self, setting: Setting) -> Reference:
        key = (setting.dataset, setting.backbone, setting.spec, setting.seed)
        if key not in self._references:
            self._references[key] = self._retrain(setting, reference_seed(setting.seed), setting.request)
        return self._references[key]

    def _retrain(self, setting: Setting, seed: int, forget: Interactions | Request,
                 reference: Reference | None = None) -> Reference:
        """A Retrain of the original's backbone with `seed` on the data without `forget` (edges, or the whole
        request: a modality constraint withdraws features too), timed like any method and measured against
        `reference` (itself when None)."""
        method = self._prepare(REFERENCE, {"seed": seed}, setting)
        before = load_average()
        result, timings = timed_unlearn(method.unlearner, forget)
        if isinstance(forget, Request):
            forget, residual = forget.edges, setting.residual
        else:
            residual = setting.data.with_train(setting.data.train.subtract(forget))
        key = training_key(with_seed(setting.run, seed), residual)
        reused_from = self._timing_provenance(key, timings, result, before)
        against = result.scorer if reference is None else reference.result.scorer
        metrics = self._measure(result.scorer, setting, forget, against, residual)
        return Reference(result, timings, reused_from, metrics, seed)

    def _forget_other_settings(self, unit: Unit) -> None:
        """Keep the models of the current dataset and backbone only (memory), dropping the rest."""
        for store in (self._settings, self._references, self._stream_references):
            for key in [k for k in store if k[:2] != (unit.dataset, unit.backbone)]:
                del store[key]

    def _prepare(self, name: str, overrides: dict, setting: Setting) -> Prepared:
        return prepared(name, overrides, setting.run, setting.original.model, setting.data,
                        cache_dir=self.cache_dir, progress=self.progress)

    def _measure(self, scorer, setting: Setting, forget: Interactions, reference, residual=None) -> dict:
        if residual is None:
            residual = setting.data.with_train(setting.data.train.subtract(forget))
        takedown = setting.request.items() if setting.request.kind == "item" else None
        return measure(scorer, residual, forget, reference=reference, original=setting.original.model,
                       audit_test=setting.audit_test, audit_valid=setting.audit_valid, ks=self.suite.audit.ks,
                       max_users=self.suite.audit.max_users, seed=setting.seed, takedown=takedown)

    def _timing_provenance(self, key: str | None, timings: dict, result: UnlearnResult, before: float) -> dict | None:
        """Record where a fresh timing of a cached artefact was measured; look it up when one was reused."""
        if not result.report.get("timing_reused"):
            if key is not None:   # a retrain: its model went to the training cache
                record = provenance.here(before, TRAINING_PACKAGES)
                provenance.remember(self.cache_dir, key, {**record, "seconds": timings["unlearn"]})
            return None
        record = provenance.recall(self.cache_dir, key) if key is not None else None
        ok, why = provenance.comparable(record, provenance.here(before))
        return {**(record or {}), "comparable": ok, "why": why}

    # --- one row per role ---------------------------------------------------------------------------
    def _original(self, unit: Unit, setting: Setting) -> dict:
        reference = self.reference(setting)
        metrics = self._measure(setting.original.model, setting, setting.request.edges, reference.result.scorer,
                                setting.residual)
        metrics.update(relative(metrics, reference.metrics))
        original = setting.original
        timings = {"original_train": original.seconds, "original_train_epochs": original.train_seconds,
                   "original_seconds_to_best": original.seconds_to_best, "original_best_epoch": original.best_epoch}
        return {"kind": "none", "method_config": None, "metrics": metrics, "timings": timings,
                "reused": {"original_train": original.reused},
                "reused_from": {"original_train": self._trained_provenance(original)} if original.reused else {}}

    def _reference_row(self, unit: Unit, setting: Setting) -> dict:
        reference = self.reference(setting)
        return self._retrain_row(setting, reference, reference)

    def _noise_floor(self, unit: Unit, setting: Setting) -> dict:
        reference = self.reference(setting)
        retrain = reference if unit.retrain_seed == reference.seed else \
            self._retrain(setting, unit.retrain_seed, setting.request, reference)
        return self._retrain_row(setting, retrain, reference)

    def _retrain_row(self, setting: Setting, retrain: Reference, reference: Reference) -> dict:
        rel = relative(retrain.metrics, reference.metrics, retrain.timings, reference.timings["unlearn"], 0.0)
        row = {"kind": retrain.result.kind, "method_config": {"seed": retrain.seed},
               "metrics": {**retrain.metrics, **rel}, "timings": {**retrain.timings, "prepare": 0.0},
               "reused": {"unlearn": retrain.reused_from is not None, "prepare": False},
               "reused_from": {"unlearn": retrain.reused_from} if retrain.reused_from else {}}
        row["models"] = {"retrain": fingerprint(retrain.result.model)}
        return row

    def _method(self, unit: Unit, setting: Setting) -> dict:
        reference = self.reference(setting)
        method = self._prepare(unit.method.name, unit.method.set, setting)
        before = load_average()
        result, timings = timed_unlearn(method.unlearner, setting.request)
        self._check_residual(unit, result, setting.residual)
        reused_from = self._timing_provenance(None, timings, result, before)
        metrics = self._measure(result.scorer, setting, setting.request.edges, reference.result.scorer,
                                setting.residual)
        rel = relative(metrics, reference.metrics, timings, reference.timings["unlearn"], method.seconds)
        row = self._method_row(method, metrics, rel, {**timings, "prepare": method.seconds}, reused_from)
        # what the method says about its own run (epochs, early stopping), plain values only
        row["method_report"] = {k: v for k, v in result.report.items()
                                if isinstance(v, (int, float, str, bool, type(None)))}
        row["prepare_report"] = method.unlearner.preparation_report()   # what preparation chose (e.g. an epoch)
        if result.model is not None:
            row["models"] = {"unlearned": fingerprint(result.model)}
        return row

    def _method_row(self, method: Prepared, metrics: dict, rel: dict, timings: dict, reused_from) -> dict:
        prepare_from = {"prepare": {**method.provenance, **dict(zip(("comparable", "why"), provenance.comparable(
            method.provenance, provenance.here())))}} if method.reused else {}
        return {"kind": method.unlearner.kind, "method_config": method.unlearner.config.model_dump(mode="json"),
                # the defaults of the code that ran, so that the report can name every setting changed
                "method_defaults": type(method.unlearner.config)().model_dump(mode="json"),
                "metrics": {**metrics, **rel}, "timings": timings,
                "reused": {"prepare": method.reused, "unlearn": reused_from is not None},
                "reused_from": {**prepare_from, **({"unlearn": reused_from} if reused_from else {})}}

    # --- streams ------------------------------------------------------------------------------------
    def stream_references(self, unit: Unit, setting: Setting) -> list[tuple[int, Interactions, Reference]]:
        """(step, cumulative forgotten, Retrain of it) at ¼, ½, ¾ and the end of the stream."""
        key = (*unit.setting(), unit.parts)
        if key not in self._stream_references:
            parts = [part.edges for part in setting.request.split(unit.parts, seed=unit.seed)]
            checkpoints, forgotten = [], Interactions.empty(setting.data.n_users, setting.data.n_items)
            for step, part in enumerate(parts, 1):
                forgotten = forgotten.union(part)
                if step in stream_marks(unit.parts):
                    checkpoints.append((step, forgotten,
                                        self._retrain(setting, reference_seed(setting.seed), forgotten)))
            self._stream_references[key] = checkpoints
        return self._stream_references[key]

    def _stream(self, unit: Unit, setting: Setting) -> dict:
        checkpoints = self.stream_references(unit, setting)
        if unit.method.name == REFERENCE:
            return self._stream_retrain(unit, checkpoints)
        method = self._prepare(unit.method.name, unit.method.set, setting)
        parts = [part.edges for part in setting.request.split(unit.parts, seed=unit.seed)]
        by_step = {step: (forgotten, ref) for step, forgotten, ref in checkpoints}
        marks, spent, per_request, reused_any = [], 0.0, [], False
        for step, part in enumerate(parts, 1):
            result, timings = timed_unlearn(method.unlearner, part)
            spent += timings["unlearn"]
            per_request.append(timings["unlearn"])
            reused_any |= bool(result.report.get("timing_reused"))
            if step not in by_step:
                continue
            # measured outside the timed region, against a Retrain of the requests so far
            forgotten, ref = by_step[step]
            residual = setting.data.with_train(setting.data.train.subtract(forgotten))
            self._check_residual(unit, result, residual)
            metrics = self._measure(result.scorer, setting, forgotten, ref.result.scorer, residual)
            rel = relative(metrics, ref.metrics, {**timings, "unlearn": spent}, ref.timings["unlearn"], method.seconds)
            marks.append({"step": step, "forgotten": len(forgotten), "metrics": {**metrics, **rel}, "seconds": spent})
        timings = {"unlearn": spent, "per_request": per_request, "prepare": method.seconds}
        row = self._method_row(method, marks[-1]["metrics"], {}, timings, None)
        row["reused"]["unlearn"] = reused_any
        row["stream"] = {"parts": unit.parts, "checkpoints": marks}
        return row

    def _stream_retrain(self, unit: Unit, checkpoints: list[tuple[int, Interactions, Reference]]) -> dict:
        """The stream's Retrain row: one retrain of the cumulative set at each checkpoint."""
        marks = [{"step": step, "forgotten": len(forgotten), "metrics": ref.metrics, "seconds": ref.timings["unlearn"],
                  "reused": ref.reused_from is not None} for step, forgotten, ref in checkpoints]
        last = checkpoints[-1][2]
        # one provenance for the row: the first reused timing that is not comparable, else the last reused one
        origins = [ref.reused_from for _, _, ref in checkpoints if ref.reused_from is not None]
        origin = next((o for o in origins if not o.get("comparable")), origins[-1] if origins else None)
        return {"kind": last.result.kind, "method_config": {"seed": reference_seed(unit.seed)},
                "metrics": last.metrics,
                "timings": {"unlearn": last.timings["unlearn"], "per_checkpoint": [m["seconds"] for m in marks]},
                "reused": {"unlearn": origin is not None, "prepare": False},
                "reused_from": {"unlearn": origin} if origin else {},
                "stream": {"parts": unit.parts, "checkpoints": marks}}

    # --- checks and the common fields ---------------------------------------------------------------
    def _check_residual(self, unit: Unit, result: UnlearnResult, residual) -> None:
        if result.dataset.train.hash != residual.train.hash:
            raise RuntimeError(f"{unit.label} returned a residual training set that is not the data without the "
                               "request: its scores would be measured on the wrong data")

    def _trained_provenance(self, trained) -> dict:
        ok, why = provenance.comparable(trained.provenance, provenance.here())
        return {**(trained.provenance or {}), "comparable": ok, "why": why}

    def _complete(self, row: dict, unit: Unit, key: str, setting: Setting, before: float) -> dict:
        reference = self.reference(setting)
        models = {"original": fingerprint(setting.original.model), "original_seed": setting.seed,
                  "reference": fingerprint(reference.result.model), "reference_seed": reference.seed,
                  **row.pop("models", {})}
        if setting.selector is not None:
            models.update(selector=fingerprint(setting.selector.model), selector_seed=setting.seed)
        return {"schema": SCHEMA, "suite": self.suite.name, "unit": key, "role": unit.role,
                "dataset": unit.dataset, "split_hash": setting.residual.origin_hash, "data_hash": setting.data.hash,
                "backbone": unit.backbone, "run": setting.run.model_dump(mode="json"),
                "train_defaults": TrainConfig().model_dump(mode="json"), "request": unit.request,
                "request_kind": setting.request.kind, "request_size": len(setting.request),
                "seed": unit.seed, "method": unit.label,
                "method_name": "original" if unit.method is None else unit.method.name,
                "retrain_seed": unit.retrain_seed, "reference_seed": reference.seed,
                "stream": row.pop("stream", None), **row, "models": models, "setting": setting.extra,
                "code_version": self.code, "machine": machine_line(),
                "load": {"before": before, "after": load_average()},
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions()}


def with_seed(run: RunConfig, seed: int) -> RunConfig:
    """`run` trained with another seed: how Retrain trains its reference (and keys its cache)."""
    return run.model_copy(update={"train": run.train.model_copy(update={"seed": seed})})


def stream_marks(parts: int) -> list[int]:
    """The steps at ¼, ½, ¾ and the end of a stream of `parts` requests."""
    return sorted({max(1, round(parts * fraction)) for fraction in STREAM_MARKS})


def describe(unit: Unit) -> str:
    what = f"{unit.dataset} {unit.backbone} {unit.request} seed {unit.seed} {unit.label}"
    if unit.role == "noise_floor":
        what += f" (noise floor, retrain seed {unit.retrain_seed})"
    elif unit.role == "stream":
        what += f" (stream of {unit.parts})"
    return what


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def run_suite(suite: Suite, out: str | Path, *, threads: int | None = None, **options) -> Summary:
    """Run `suite` into the results file `out` (see `Runner`); `threads` sets torch's thread count."""
    if threads:
        torch.set_num_threads(threads)
    return Runner(suite, out, **options).run()
