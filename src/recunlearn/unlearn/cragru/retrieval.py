"""Retrieval: a target user's history without the forgotten interactions, filtered to at most `limit` items.

Strategies (spec "Filtering strategies"):
- none: the most recent items (or the first ones when no timestamps are known);
- preference: items from each item cluster in proportion to the cluster's share of the history;
- diversity: an equal share from every cluster of the history;
- attention: scaled dot-product attention between each history item's embedding and the mean embedding of
  the candidates (the base model's own item embeddings), weighted by the user's rating where ratings exist.

Clusters come from item content vectors (sentence embeddings of titles and genres, or genre one-hot vectors,
or, for data without content, the base model's item embeddings), grouped by KMeans with a fixed seed.
"""
from __future__ import annotations

import numpy as np

STRATEGIES = ("none", "preference", "diversity", "attention")


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown retrieval strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return strategy


def item_clusters(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster label of every item (KMeans on L2-normalised content vectors, fixed seed)."""
    from sklearn.cluster import KMeans

    vectors = np.asarray(vectors, dtype=np.float64)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    k = max(1, min(k, len(np.unique(vectors, axis=0))))
    return KMeans(n_clusters=k, random_state=seed, n_init=10).fit_predict(vectors).astype(np.int64)


def genre_vectors(genres: list) -> np.ndarray:
    """One-hot genre matrix [n_items, n_genres] from each item's list of genre names."""
    lists = [g if isinstance(g, (list, tuple, np.ndarray)) else [] for g in genres]
    names = sorted({name for g in lists for name in g})
    column = {name: j for j, name in enumerate(names)}
    out = np.zeros((len(lists), max(len(names), 1)), dtype=np.float32)
    for i, g in enumerate(lists):
        out[i, [column[name] for name in g]] = 1.0
    return out


def text_vectors(texts: list[str], model_path: str) -> np.ndarray:
    """Sentence embeddings of item texts with a local sentence-transformers model (no network)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu", local_files_only=True)
    return model.encode(texts, batch_size=64, show_progress_bar=False, convert_to_numpy=True)


def filter_history(items: np.ndarray, limit: int, strategy: str, *, clusters: np.ndarray | None = None,
                   ratings: np.ndarray | None = None, timestamps: np.ndarray | None = None,
                   item_embeddings: np.ndarray | None = None, candidates: np.ndarray | None = None) -> np.ndarray:
    """At most `limit` of `items` (the residual history), in chronological order where timestamps exist.

    `ratings` and `timestamps` are aligned with `items`; `clusters` and `item_embeddings` are indexed by item.
    """
    check_strategy(strategy)
    items = np.asarray(items, dtype=np.int64)
    order = np.argsort(timestamps, kind="stable") if timestamps is not None else np.arange(len(items))
    items = items[order]
    ratings = None if ratings is None else np.asarray(ratings, dtype=np.float64)[order]
    if len(items) <= limit:
        return items
    # Within a cluster (and as tie-break elsewhere) prefer liked, then recent items.
    liked = ratings if ratings is not None else np.zeros(len(items))
    recency = np.arange(len(items), dtype=np.float64)
    if strategy == "none":
        keep = np.arange(len(items) - limit, len(items))
    elif strategy == "attention":
        keep = _attention_keep(items, limit, liked if ratings is not None else None, item_embeddings, candidates)
    else:
        if clusters is None:
            raise ValueError(f"the {strategy} strategy needs item clusters")
        keep = _cluster_keep(clusters[items], limit, strategy, liked, recency)
    return items[np.sort(keep)]


def _attention_keep(items: np.ndarray, limit: int, ratings: np.ndarray | None, embeddings: np.ndarray | None,
                    candidates: np.ndarray | None) -> np.ndarray:
    if embeddings is None or candidates is None or len(candidates) == 0:
        raise ValueError("the attention strategy needs the base model's item embeddings and the candidates")
    keys = embeddings[items]
    query = embeddings[np.asarray(candidates)].mean(0)
    logits = keys @ query / np.sqrt(keys.shape[1])
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    if ratings is not None:
        weights = weights * ratings
    return np.argsort(-weights, kind="stable")[:limit]


def _cluster_keep(labels: np.ndarray, limit: int, strategy: str, liked: np.ndarray,
                  recency: np.ndarray) -> np.ndarray:
    present, counts = np.unique(labels, return_counts=True)
    if strategy == "preference":
        quota = _largest_remainder(counts / counts.sum() * limit, counts)
    else:
        quota = _equal_shares(counts, limit)
    keep = []
    for cluster, q in zip(present, quota):
        members = np.flatnonzero(labels == cluster)
        best = np.lexsort((-recency[members], -liked[members]))   # liked first, then recent
        keep.extend(members[best[:q]].tolist())
    return np.asarray(keep, dtype=np.int64)


def _largest_remainder(shares: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Integer quotas summing to round(sum(shares)), each at most its cluster's size."""
    quota = np.minimum(np.floor(shares).astype(np.int64), caps)
    left = int(round(shares.sum())) - int(quota.sum())
    for j in np.argsort(-(shares - np.floor(shares)), kind="stable"):
        if left <= 0:
            break
        if quota[j] < caps[j]:
            quota[j] += 1
            left -= 1
    return quota


def _equal_shares(counts: np.ndarray, limit: int) -> np.ndarray:
    """Equal quotas per cluster; what a small cluster cannot fill goes to the others, in turn."""
    quota = np.zeros(len(counts), dtype=np.int64)
    left = limit
    while left > 0 and (quota < counts).any():
        for j in np.flatnonzero(quota < counts):
            if left == 0:
                break
            quota[j] += 1
            left -= 1
    return quota
