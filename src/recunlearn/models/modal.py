"""What multi-modal backbones share: item features held by the model, withdrawn rows, and the frozen kNN
item-item graph of each modality (LATTICE / FREEDOM style).

A withdrawn row (a modality constraint, or an item taken down) is zeroed before anything reads it and leaves
that modality's item-item graph, so no later computation can depend on its values. The masks are part of the
state dict, so a saved model keeps its withdrawals; a checkpoint derived by erasure leaves them out
(`withdrawal_state_keys`) and its loader rebuilds them from the erasure record.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field

from torch import nn

from ..data.graph import csr_index_dtype
from .base import ModelConfig, Recommender

KNN_CHUNK = 2048     # rows of the similarity matrix held at once
EMPTY = torch.empty(0)   # "no item graph" passed to a clone, which then skips the build


class ContentConfig(ModelConfig):
    modalities: list[str] | None = Field(None, description="item feature modalities to use (None: every one the "
                                                           "dataset has; []: none, the model without content)")
    knn_k: int = Field(10, ge=1, description="neighbours per item in each modality's item-item graph")


def knn_adjacency(features: torch.Tensor, k: int, active: torch.Tensor) -> sp.csr_matrix:
    """Symmetric kNN graph on cosine similarity over the `active` items, D^-1/2 A D^-1/2 normalised.

    Each active item links to its k most similar other active items; the links are made symmetric (a link
    either way counts once), so that propagation over the graph is symmetric. Inactive items have no links."""
    n = features.shape[0]
    idx = torch.nonzero(active).squeeze(1)
    k = min(k, max(int(idx.numel()) - 1, 0))
    if k == 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    x = F.normalize(features[idx].float(), dim=1)
    rows, cols = [], []
    for start in range(0, idx.numel(), KNN_CHUNK):
        sim = x[start:start + KNN_CHUNK] @ x.T
        local = torch.arange(start, min(start + KNN_CHUNK, idx.numel()))
        sim[torch.arange(local.numel()), local] = -float("inf")     # no self-links
        top = sim.topk(k, dim=1).indices
        rows.append(idx[local].repeat_interleave(k))
        cols.append(idx[top.reshape(-1)])
    r, c = torch.cat(rows).numpy(), torch.cat(cols).numpy()
    a = sp.coo_matrix((np.ones(r.size, np.float32), (r, c)), shape=(n, n)).tocsr()
    a = ((a + a.T) > 0).astype(np.float32)
    deg = np.asarray(a.sum(1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0).astype(np.float32)
    return (sp.diags(inv) @ a @ sp.diags(inv)).tocsr().astype(np.float32)


def _unit_rows(features) -> torch.Tensor:
    """Rows scaled to unit length: modalities of very different scales (tiktok's image rows are about 7x longer
    than its audio rows) then weigh alike; a zero row (withdrawn) stays zero."""
    return F.normalize(torch.as_tensor(np.asarray(features, dtype=np.float32)), dim=1)


def to_torch_csr(a: sp.csr_matrix) -> torch.Tensor:
    a = a.tocsr()
    a.sort_indices()
    index = csr_index_dtype(max(a.shape), a.nnz)
    return torch.sparse_csr_tensor(torch.from_numpy(a.indptr.astype(index)), torch.from_numpy(a.indices.astype(index)),
                                   torch.from_numpy(a.data.astype(np.float32)), size=a.shape,
                                   check_invariants=False)


class ContentRecommender(Recommender):
    """A Recommender that reads item features; built with `features` (name -> [n_items, dim]) and optional
    `withdrawn` masks (name -> bool [n_items]). Subclasses use `self.feature(name)` and `self.item_graph()`."""

    config_class = ContentConfig
    uses_content = True

    def __init__(self, config: ContentConfig, n_users: int, n_items: int,
                 features: Mapping[str, np.ndarray] | None = None, withdrawn: Mapping[str, np.ndarray] | None = None,
                 item_graph: torch.Tensor | None = None):
        super().__init__(config, n_users, n_items)
        features = dict(features or {})
        names = sorted(features) if config.modalities is None else list(config.modalities)
        missing = [name for name in names if name not in features]
        if missing:
            known = ", ".join(sorted(features)) or "none"
            raise ValueError(f"{config.name} uses the {', '.join(missing)} features, but the data has {known}: "
                             f"set model.modalities to some of them (or load them: data.modalities / "
                             f"data.feature_files)")
        self.modality_names = names
        for name in names:
            raw = _unit_rows(features[name])
            if raw.shape[0] != n_items:
                raise ValueError(f"{name} features have {raw.shape[0]} rows, the model {n_items} items")
            mask = torch.zeros(n_items, dtype=torch.bool)
            if withdrawn is not None and name in withdrawn:
                mask = torch.as_tensor(np.asarray(withdrawn[name], dtype=bool)).clone()
            self.register_buffer(f"features_{name}", raw.clone(), persistent=False)
            self.register_buffer(f"withdrawn_{name}", mask)
        self._item_graph: torch.Tensor | None = item_graph
        self._refresh(rebuild=item_graph is None)   # a clone shares its source's (immutable) graph

    # --- content -----------------------------------------------------------------------------
    def feature(self, name: str) -> torch.Tensor:
        return getattr(self, f"features_{name}")

    def withdrawn_mask(self, name: str) -> torch.Tensor:
        return getattr(self, f"withdrawn_{name}")

    def withdrawal_state_keys(self) -> list[str]:
        """The state-dict entries that only say which rows are withdrawn (the masks, one per modality)."""
        return [f"withdrawn_{name}" for name in self.modality_names]

    @torch.no_grad()
    def withdraw(self, name: str, items) -> None:
        """Features of `name` for `items` may no longer be used: zero them and rebuild the item-item graph."""
        if name not in self.modality_names:
            raise ValueError(f"this model uses no {name!r} features (it uses {', '.join(self.modality_names) or 'none'})")
        self.withdrawn_mask(name)[torch.as_tensor(np.asarray(items, dtype=np.int64))] = True
        self._refresh()

    @torch.no_grad()
    def set_content(self, features: Mapping[str, np.ndarray], withdrawn: Mapping[str, np.ndarray]) -> None:
        """Take the features and withdrawals of (new) data; a withdrawal already applied stays applied."""
        for name in self.modality_names:
            if name not in features:
                raise ValueError(f"the data has no {name!r} features, which this model uses")
            self.feature(name).copy_(_unit_rows(features[name]))
            if name in withdrawn:
                self.withdrawn_mask(name).logical_or_(torch.as_tensor(np.asarray(withdrawn[name], dtype=bool)))
        self._refresh()

    @torch.no_grad()
    def _refresh(self, rebuild: bool = True) -> None:
        """Zero withdrawn rows and rebuild the item-item graph (mean of the modalities' kNN graphs)."""
        graphs = []
        for name in self.modality_names:
            feats, mask = self.feature(name), self.withdrawn_mask(name)
            feats[mask] = 0.0
            if rebuild:
                active = (~mask) & (feats.abs().sum(1) > 0)
                graphs.append(knn_adjacency(feats, self.config.knn_k, active))
        if rebuild:
            self._item_graph = to_torch_csr(sum(graphs[1:], graphs[0]) / len(graphs)) if graphs else None
        self._cache = None

    def item_graph(self) -> torch.Tensor | None:
        return self._item_graph

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._refresh()    # the loaded masks may withdraw rows
        return out

    def clone(self) -> "ContentRecommender":
        features = {name: self.feature(name).numpy() for name in self.modality_names}
        masks = {name: self.withdrawn_mask(name).numpy() for name in self.modality_names}
        other = type(self)(self.config.model_copy(), self.n_users, self.n_items, features, masks,
                           item_graph=self._item_graph if self._item_graph is not None else EMPTY)
        # the masks are equal, so the graph is too: load without rebuilding it
        nn.Module.load_state_dict(other, {k: v.detach().clone() for k, v in self.state_dict().items()})
        other._item_graph = self._item_graph
        if self.graph is not None:
            other.attach(self.graph)
        other.train(self.training)
        return other
