"""Backbones by name, and building one from a config mapping."""
from __future__ import annotations

import numpy as np

from .base import ModelConfig, Recommender
from .freedom import Freedom
from .lightgcn import LightGCN
from .mf import MF
from .modal import ContentRecommender
from .sgl import SGL
from .simgcl import SimGCL
from .vbpr import VBPR

MODELS: dict[str, type[Recommender]] = {"mf": MF, "lightgcn": LightGCN, "sgl": SGL, "simgcl": SimGCL,
                                        "freedom": Freedom, "vbpr": VBPR}


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


def build_model(config: ModelConfig, n_users: int, n_items: int, content=None) -> Recommender:
    """A fresh model; `content` (a Dataset) gives a multi-modal backbone its item features and withdrawals."""
    cls = model_class(config.name)
    if not issubclass(cls, ContentRecommender):
        return cls(config, n_users, n_items)
    features, withdrawn = content_of(content)
    return cls(config, n_users, n_items, features, withdrawn)


def content_of(dataset) -> tuple[dict, dict]:
    """(features with withdrawn rows zeroed, withdrawn masks) of a Dataset, as multi-modal backbones take them."""
    if dataset is None:
        return {}, {}
    features = {name: dataset.features(name) for name in dataset.modalities}
    withdrawn = {}
    for name, items in dataset.withdrawn.items():
        mask = np.zeros(dataset.n_items, dtype=bool)
        mask[np.asarray(items, dtype=np.int64)] = True
        withdrawn[name] = mask
    return features, withdrawn


def attach_content(model: Recommender, dataset) -> Recommender:
    """Give a multi-modal model the features and withdrawals of `dataset` (other models are unchanged)."""
    if isinstance(model, ContentRecommender):
        model.set_content(*content_of(dataset))
    return model
