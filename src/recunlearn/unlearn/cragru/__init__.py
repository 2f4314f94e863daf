"""CRAGRU: retrieval-augmented LLM re-ranking that forgets users at inference time (see unlearner.py)."""
from .unlearner import CRAGRU, CRAGRUConfig, RerankScorer

__all__ = ["CRAGRU", "CRAGRUConfig", "RerankScorer"]
