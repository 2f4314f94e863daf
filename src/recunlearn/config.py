"""Typed configuration: pydantic models that reject unknown keys, YAML files and `key=value` overrides."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar, get_args

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
    path = key.split(".")
    if not all(path):
        raise ConfigError(f"override {text!r}: the key {key!r} has an empty part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({_yaml_problem(err)})") from None
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = float(value)   # YAML 1.1 reads 1e-3 as text; on a command line it means a number
    return path, value


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line: what the YAML parser found wrong, and where."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


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
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML ({_yaml_problem(err)})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
        data = _deep_merge(data, loaded)
    data = apply_overrides(data, overrides or [])
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid {cls.__name__}: {describe_errors(err, data, cls)}") from None


def describe_errors(err: ValidationError, data: Any, cls: type[BaseModel]) -> str:
    """Every problem on one line: `key: what is wrong (got value)`; a check across keys names its keys itself."""
    problems = []
    for error in err.errors():
        key = _key_path(error["loc"], data)
        problems.append(f"{key}: {_explain(error, cls)}" if key else _explain(error, cls))
    return "; ".join(problems)


def _key_path(loc: tuple, data: Any) -> str:
    """The dotted key as the user wrote it: pydantic puts the tag of a discriminated union in `loc`
    (`model.sgl.dimm`), but the input has no such key (`model.dimm`)."""
    parts, node = [], data
    for n, part in enumerate(loc):
        if isinstance(node, dict) and part not in node and n < len(loc) - 1:
            continue   # a union tag, not a key of the input
        parts.append(str(part))
        node = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
    return ".".join(parts)


def _explain(error: dict, cls: type[BaseModel]) -> str:
    if error["type"] == "extra_forbidden":
        known = _known_keys(cls, error["loc"])
        return "unknown key (check the spelling" + (f"; known keys here: {', '.join(known)})" if known else ")")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing" or not error["loc"] or isinstance(error.get("input"), (dict, list)):
        return message
    shown = repr(error.get("input"))
    return f"{message} (got {shown if len(shown) <= 40 else shown[:37] + '...'})"


def _known_keys(cls: type[BaseModel], loc: tuple) -> list[str]:
    """The keys a config accepts where `loc` points; [] where that cannot be told."""
    node: Any = cls
    for part in loc[:-1]:
        if isinstance(node, list):   # the members of a union tagged by `name`; `part` is the tag
            node = next((m for m in node if getattr(m.model_fields.get("name"), "default", None) == part), None)
        elif _is_config(node) and part in node.model_fields:
            annotation = node.model_fields[part].annotation
            members = [a for a in get_args(annotation) if _is_config(a)]
            node = annotation if not members else members[0] if len(members) == 1 else members
        else:
            return []
    return list(node.model_fields) if _is_config(node) else []


def _is_config(node: Any) -> bool:
    try:
        return isinstance(node, type) and issubclass(node, BaseModel)
    except TypeError:   # typing aliases such as list[int]
        return False


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
