"""The suite file: which datasets, backbones, requests, seeds and methods a benchmark runs, as a typed schema.

A suite is YAML validated by pydantic; unknown keys are errors. `units(suite)` enumerates what the runner
does, one unit per (setting, method): datasets × their backbones × requests × seeds × (Retrain
reference, original, methods), then the noise-floor retrains of each (dataset, backbone, request), then
the streams.

Two methods are not the user's to choose (evaluation.md): Retrain is the reference of every setting, run by
the harness itself (listing it is an error), and Suppress, the control that shows which forgetting measures
a method can pass without forgetting, is added to every suite and stream that does not list it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from ..config import ConfigError, StrictConfig, load_config
from ..data.requests import parse_spec
from ..train.config import DataConfig, RunConfig
from ..unlearn.registry import UNLEARNERS

REFERENCE = "retrain"
CONTROL = "suppress"
# The role of a unit: the model before unlearning, the Retrain reference, a method, an extra retrain for the
# noise floor, or one method's pass over a sequential stream.
Role = Literal["original", "reference", "method", "noise_floor", "stream"]
STREAM_MARKS = (0.25, 0.5, 0.75, 1.0)


class MethodSpec(StrictConfig):
    """One method entry: a registered unlearner with config overrides; `label` tells two entries apart."""

    name: str = Field(description="a name registered in recunlearn.unlearn.registry")
    set: dict[str, Any] = Field(default_factory=dict, description="the method's config overrides")
    label: str | None = Field(None, description="row name in results and tables (default: name and overrides)")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data   # `- finetune` is `- {name: finetune}`

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name == REFERENCE:
            raise ValueError("retrain is the reference of every setting and is run by the harness itself: "
                             "remove it from the methods")
        if name not in UNLEARNERS:
            raise ValueError(f"unknown method {name!r}; registered: {', '.join(sorted(UNLEARNERS))}")
        return name

    @property
    def title(self) -> str:
        if self.label:
            return self.label
        overrides = ", ".join(f"{key}={value}" for key, value in sorted(self.set.items()))
        return f"{self.name} ({overrides})" if overrides else self.name


class DatasetEntry(StrictConfig):
    """A dataset, optionally with its own backbones (default: the suite's)."""

    name: str
    backbones: list[str] | None = Field(None, min_length=1)
    path: str | None = Field(None, description="your own interaction file, or a folder with train/test[/valid] "
                                               "files, in any supported format; `name` then labels it")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data   # `- ml-1m` is `- {name: ml-1m}`


class NoiseFloorSpec(StrictConfig):
    retrains: int = Field(3, ge=3, description="independent Retrain seeds on the first seed's residual "
                                               "(evaluation.md rule 2: at least 3)")


class AuditSpec(StrictConfig):
    max_users: int | None = Field(2000, ge=1, description="audit at most this many of the request's users")
    ks: list[int] = Field([10, 20], min_length=1, description="utility cut-offs (Recall/NDCG@K)")

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        # checked at load: the evaluation would refuse them only after the first models were trained
        if min(ks) < 1:
            raise ValueError(f"every K must be at least 1, got {ks}: list cut-offs such as [10, 20]")
        return ks


class StreamSpec(StrictConfig):
    """A sequential stream: `request` split into `parts` requests applied one after another; measured at
    ¼, ½, ¾ and the end against a Retrain of the same cumulative set."""

    request: str
    parts: int = Field(ge=2)
    methods: list[MethodSpec]
    seeds: list[int] | None = Field(None, description="default: the suite's seeds")

    @field_validator("request")
    @classmethod
    def _spec(cls, text: str) -> str:
        parse_spec(text)
        return text

    @field_validator("methods")
    @classmethod
    def _with_control(cls, methods: list[MethodSpec]) -> list[MethodSpec]:
        return with_control(methods)


class Suite(StrictConfig):
    name: str
    datasets: list[DatasetEntry] = Field(min_length=1, description="names, or {name, backbones}")
    backbones: list[str] = Field(min_length=1, description="the backbones of every dataset without its own")
    requests: list[str] = Field(min_length=1, description="request specs: random:0.01, user:0.01, adversarial:1.0")
    seeds: list[int] = Field(min_length=1, description="each seed trains the original and draws the request")
    methods: list[MethodSpec] = Field(default_factory=list, validate_default=True)   # Suppress added
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides of every backbone")
    model: dict[str, Any] = Field(default_factory=dict, description="model config overrides of every backbone")
    data: DataConfig = Field(default_factory=DataConfig, description="split settings (the name is ignored)")
    noise_floor: NoiseFloorSpec = Field(default_factory=NoiseFloorSpec)
    streams: list[StreamSpec] = Field(default_factory=list)
    audit: AuditSpec = Field(default_factory=AuditSpec)

    @field_validator("requests")
    @classmethod
    def _specs(cls, specs: list[str]) -> list[str]:
        for text in specs:
            parse_spec(text)
        return specs

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {seeds}")
        return seeds

    @field_validator("train")
    @classmethod
    def _no_seed(cls, train: dict) -> dict:
        if "seed" in train:
            raise ValueError("the training seed comes from `seeds` (and the reference's from the harness)")
        if train.get("device", "cpu") != "cpu":
            raise ValueError(f"train.device={train['device']}: the harness times every method on the CPU, where "
                             "the unlearners run; retrains on a GPU would not compare with them (evaluation.md, "
                             "equal timing). Remove train.device from the suite")
        return train

    @field_validator("methods")
    @classmethod
    def _with_control(cls, methods: list[MethodSpec]) -> list[MethodSpec]:
        return with_control(methods)

    @model_validator(mode="after")
    def _checks(self) -> "Suite":
        titles = [method.title for method in self.methods]
        if len(set(titles)) != len(titles):
            raise ValueError(f"two method entries share a label ({titles}): give one a `label`")
        for dataset, backbone in self.pairs():
            self.run_config(dataset, backbone, self.seeds[0])   # unknown model/train keys fail now
        return self

    def pairs(self) -> list[tuple[str, str]]:
        """(dataset, backbone) in the order they run."""
        return [(entry.name, backbone) for entry in self.datasets for backbone in entry.backbones or self.backbones]

    def run_config(self, dataset: str, backbone: str, seed: int) -> RunConfig:
        """The original model's run config: the suite's overrides and the seed of the setting."""
        entry = next(entry for entry in self.datasets if entry.name == dataset)
        data = {**self.data.model_dump(), "name": dataset, "path": entry.path}
        return RunConfig.model_validate({"data": data, "model": {**self.model, "name": backbone},
                                         "train": {**self.train, "seed": seed}})

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]


def with_control(methods: list[MethodSpec]) -> list[MethodSpec]:
    """The methods with Suppress added when no entry runs it."""
    if any(method.name == CONTROL for method in methods):
        return methods
    return [*methods, MethodSpec(name=CONTROL)]


def narrowed(suite: Suite, datasets=(), backbones=(), requests=(), streams: bool = True, methods=()) -> Suite:
    """A part of `suite` (same name and settings, so its results resume and report as the suite's own):
    only the given datasets / backbones / requests (each empty: all), with or without the streams; `methods`
    (labels or registered names; empty: all) keeps those method entries, in the settings and the streams,
    while every setting still runs its reference and original."""
    labels = [m.title for m in method_entries(suite)]
    unknown_methods = sorted(set(methods) - set(labels) - {m.name for m in method_entries(suite)})
    if unknown_methods:
        raise ConfigError(f"method {', '.join(unknown_methods)} is not in suite {suite.name!r}: give a label or a "
                          f"name of its methods ({', '.join(dict.fromkeys(labels))})")
    chosen = (lambda m: not methods or m.title in methods or m.name in methods)
    for given, known, what in ((datasets, [entry.name for entry in suite.datasets], "dataset"),
                               (backbones, [b for _, b in suite.pairs()], "backbone"),
                               (requests, suite.requests, "request")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(f"{what} {', '.join(unknown)} is not in suite {suite.name!r} ({', '.join(known)})")
    entries = []
    for entry in suite.datasets:
        kept = [b for b in entry.backbones or suite.backbones if not backbones or b in backbones]
        if (not datasets or entry.name in datasets) and kept:
            entries.append(entry.model_copy(update={"backbones": kept}))
    if not entries:
        raise ConfigError(f"no dataset of suite {suite.name!r} has the backbones {', '.join(backbones)}")
    kept_streams = [stream.model_copy(update={"methods": [m for m in stream.methods if chosen(m)]})
                    for stream in (suite.streams if streams else [])]
    # model_copy does not validate again, so Suppress is not added back to a narrowed list of methods
    return suite.model_copy(update={"datasets": entries, "requests": [r for r in suite.requests
                                                                       if not requests or r in requests],
                                    "methods": [m for m in suite.methods if chosen(m)],
                                    "streams": [stream for stream in kept_streams if stream.methods]})


def load_suite(path: str | Path) -> Suite:
    """A suite from YAML; every problem is a ConfigError that names the key."""
    return load_config(Suite, path)


def dump_suite(suite: Suite) -> str:
    """The resolved suite as YAML (printed at the start of a run)."""
    return yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------------------------------- units

@dataclass(frozen=True)
class Unit:
    """One row of results: a method (or the original, or a retrain) in one setting."""

    role: Role
    dataset: str
    backbone: str
    request: str
    seed: int                          # the original's training seed and the request's draw
    method: MethodSpec | None = None   # None: the original model; Retrain rows carry name "retrain"
    retrain_seed: int | None = None    # Retrain rows: the seed of this retrain
    parts: int | None = None           # stream units

    @property
    def label(self) -> str:
        if self.role == "original":
            return "original"
        return self.method.title

    def setting(self) -> tuple[str, str, str, int]:
        return self.dataset, self.backbone, self.request, self.seed


def reference_seed(seed: int) -> int:
    """The Retrain reference's training seed: never the original's (evaluation.md rule 2); the Retrain
    unlearner's own default, made explicit so that it is recorded and checked."""
    return seed + 1


def noise_floor_seeds(suite: Suite) -> list[int]:
    """Independent retrain seeds on the first seed's residual; the first is that setting's reference."""
    first = reference_seed(suite.seeds[0])
    return list(range(first, first + suite.noise_floor.retrains))


def retrain_spec(seed: int) -> MethodSpec:
    # Built without validation: "retrain" is refused in a suite's methods, but the harness runs it.
    return MethodSpec.model_construct(name=REFERENCE, set={"seed": seed}, label=REFERENCE)


def units(suite: Suite, seeds: Collection[int] = (), noise_floor: bool = True) -> list[Unit]:
    """Everything a suite runs, in order: the settings (reference, original, methods), the noise-floor
    retrains of each (dataset, backbone, request), then the streams. `seeds` (empty: all) keeps the units of
    those seeds only; the noise floor belongs to the suite's first seed, whose residual it retrains.
    `noise_floor=False` leaves its retrains out (a later run adds them: the other units' keys are the same)."""
    unknown = sorted(set(seeds) - set(suite.seeds))
    if unknown:
        raise ConfigError(f"seed {', '.join(map(str, unknown))} is not in suite {suite.name!r} "
                          f"(seeds {', '.join(map(str, suite.seeds))})")
    out: list[Unit] = []
    for dataset, backbone in suite.pairs():
        for request in suite.requests:
            for seed in suite.seeds:
                # The reference first: the rows after it are measured against it.
                out.append(Unit("reference", dataset, backbone, request, seed,
                                retrain_spec(reference_seed(seed)), reference_seed(seed)))
                out.append(Unit("original", dataset, backbone, request, seed))
                out += [Unit("method", dataset, backbone, request, seed, method) for method in suite.methods]
            out += [Unit("noise_floor", dataset, backbone, request, suite.seeds[0], retrain_spec(s), s)
                    for s in (noise_floor_seeds(suite) if noise_floor else [])]
        for stream in suite.streams:
            for seed in stream.seeds or suite.seeds:
                methods = [retrain_spec(reference_seed(seed)), *stream.methods]
                out += [Unit("stream", dataset, backbone, stream.request, seed, method,
                             reference_seed(seed) if method.name == REFERENCE else None, stream.parts)
                        for method in methods]
    return [unit for unit in out if not seeds or unit.seed in seeds]


def unit_key(unit: Unit, suite: Suite, code: str) -> str:
    """What makes a finished unit reusable on resume: the code version and every setting that shapes it."""
    run = suite.run_config(unit.dataset, unit.backbone, unit.seed).model_dump(mode="json")
    run["train"].pop("threads", None)   # threads change speed, not the result
    payload = {"suite": suite.name, "code": code, "role": unit.role, "request": unit.request, "seed": unit.seed,
               "run": run,
               "method": None if unit.method is None else [unit.method.name, unit.method.set],
               "label": unit.label, "retrain_seed": unit.retrain_seed, "parts": unit.parts,
               "audit": suite.audit.model_dump(mode="json"), "noise_floor": suite.noise_floor.retrains}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def method_entries(suite: Suite) -> list[MethodSpec]:
    """Every method entry of the suite: its settings', then its streams'."""
    return [*suite.methods, *(m for stream in suite.streams for m in stream.methods)]


def check_datasets(suite: Suite) -> None:
    """Check that every dataset can be found, before hours of training: a `path` must exist, a name without
    one must be a registered dataset. For the registry's loader (`bench run`'s); reading the files is left
    to the run, since a large dataset takes a while."""
    from ..data.registry import existing_root, list_datasets
    known = list_datasets()
    for entry in suite.datasets:
        if entry.path is not None:
            if not Path(entry.path).exists():
                raise ConfigError(f"dataset {entry.name!r}: path {entry.path} does not exist: give your "
                                  "interaction file, or a folder with train and test files")
        elif entry.name not in known:
            raise ConfigError(f"unknown dataset {entry.name!r}; known datasets: {', '.join(known)} (or "
                              f"give your own files: {{name: {entry.name}, path: FILE}})")
    if any(entry.path is None for entry in suite.datasets):
        existing_root()   # a $RECUNLEARN_DATA that names no folder fails now


def check_method_configs(suite: Suite) -> None:
    """Build each method's config now, so that a misspelt override fails before hours of training."""
    from ..unlearn.registry import unlearner_class
    for method in method_entries(suite):
        cls = unlearner_class(method.name)
        try:
            load_config(cls.config_class, None, [], base=method.set)
        except ConfigError as err:
            raise ConfigError(f"method {method.title!r}: {err}") from None
