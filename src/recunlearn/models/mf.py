"""Matrix factorisation trained with BPR (Rendle et al., 2009): the readout is the identity."""
from __future__ import annotations

from typing import Literal

from .base import ModelConfig, Recommender


class MFConfig(ModelConfig):
    name: Literal["mf"] = "mf"


class MF(Recommender):
    config_class = MFConfig
