"""Typed configuration: pydantic models that reject unknown keys, YAML files and `key=value` overrides."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

C = TypeVar("C", bound="StrictConfig")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says which key and why."""


class StrictConfig(BaseModel):
    """Base of every config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (["a", "b"], 3); the value is parsed as YAML so numbers and lists keep their type."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (for example train.lr=0.001)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = dict(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[path[-1]] = value
    return data


def load_config(cls: type[C], file: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> C:
    """Build `cls` from defaults, then `base`, then a YAML file, then `--set` overrides (last wins)."""
    data: dict = dict(base or {})
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
        data = _deep_merge(data, loaded)
    data = apply_overrides(data, overrides or [])
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {_explain(e)}" for e in err.errors())
        raise ConfigError(f"invalid {cls.__name__}: {problems}") from None


def _explain(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (check the spelling; `recunlearn train --help` lists the config)"
    return error["msg"]


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
