"""UnlearnRec: a pre-trained influence encoder for recommendation unlearning (docs/unlearnrec.md)."""
from .encoder import IEConfig, InfluenceEncoder, influence_matrix
from .unlearner import UnlearnRec

__all__ = ["IEConfig", "InfluenceEncoder", "UnlearnRec", "influence_matrix"]
