"""Unlearning methods by name."""
from __future__ import annotations

from .finetune import FineTune
from .influence_encoder import UnlearnRec
from .retrain import Retrain

UNLEARNERS = {"unlearnrec": UnlearnRec, "retrain": Retrain, "finetune": FineTune}


def unlearner_class(name: str):
    try:
        return UNLEARNERS[name]
    except KeyError:
        raise ValueError(f"unknown unlearning method {name!r}; choose one of {', '.join(sorted(UNLEARNERS))}") from None
