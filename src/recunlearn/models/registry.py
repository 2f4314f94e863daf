"""Backbones by name, and building one from a config mapping."""
from __future__ import annotations

from .base import ModelConfig, Recommender
from .lightgcn import LightGCN
from .mf import MF
from .sgl import SGL
from .simgcl import SimGCL

MODELS: dict[str, type[Recommender]] = {"mf": MF, "lightgcn": LightGCN, "sgl": SGL, "simgcl": SimGCL}


def model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}") from None


def model_config(name: str, values: dict | None = None) -> ModelConfig:
    """Validated config of backbone `name` (unknown keys are errors)."""
    from ..config import ConfigError, describe_errors
    from pydantic import ValidationError
    cls = model_class(name).config_class
    data = {**(values or {}), "name": name}
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid {name} config: {describe_errors(err, data, cls)}") from None


def build_model(config: ModelConfig, n_users: int, n_items: int) -> Recommender:
    return model_class(config.name)(config, n_users, n_items)
