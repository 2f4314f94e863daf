"""The named benchmark datasets: where their files are, how they are split, and their side information.

Files are looked up in `<root>/<name>/`, where root is the `root` argument, else `$RECUNLEARN_DATA`, else
`~/.cache/recunlearn/data`; every text file may also be gzipped (`train.txt.gz`). Missing files are downloaded
from the official source when the network allows. A root you name (argument or $RECUNLEARN_DATA) must exist:
nothing creates it, so a typo is an error, not a new folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from . import download as downloads
from .interactions import DataError, Dataset, IdMap
from .loaders import (read_id_list, read_interactions, read_lightgcn, read_ml1m_movies, read_ml1m_users,
                      read_ml100k_items, read_ml100k_users, read_modality, read_ratings_dat, read_sparse_pickle,
                      read_udata)
from .split import make_dataset

DATA_ENV = "RECUNLEARN_DATA"
DEFAULT_ROOT = Path.home() / ".cache" / "recunlearn" / "data"
CACHED_DATASETS = 8


@dataclass(frozen=True)
class SideInfo:
    """Side information keyed by the ids of the interaction files (`user` / `item` columns)."""

    users: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    modalities: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Layout:
    """One way a dataset's files can sit in its folder."""

    files: Mapping[str, str]                 # split -> file name; name + ".gz" is accepted too
    reader: Callable[..., pd.DataFrame]
    id_offset: int = 0                       # ids in these files = original ids - id_offset


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    layouts: tuple[Layout, ...]
    side_info: Callable[[Path, int], SideInfo]


def _movielens_100k_side(folder: Path, id_offset: int) -> SideInfo:
    return SideInfo(_read_optional(read_ml100k_users, folder, "u.user"),
                    _read_optional(read_ml100k_items, folder, "u.item"))


def _movielens_1m_side(folder: Path, id_offset: int) -> SideInfo:
    users = _read_optional(read_ml1m_users, folder, "users.dat")
    items = _read_optional(read_ml1m_movies, folder, "movies.dat")
    return SideInfo(None if users is None else users.assign(user=users["user"] - id_offset),
                    None if items is None else items.assign(item=items["item"] - id_offset))


def _lightgcn_side(folder: Path, id_offset: int) -> SideInfo:
    """user_list.txt / item_list.txt give the id each remapped id had in the original data."""
    users = _read_optional(read_id_list, folder, "user_list.txt")
    items = _read_optional(read_id_list, folder, "item_list.txt")
    return SideInfo(None if users is None else users.rename(columns={"remap_id": "user"}),
                    None if items is None else items.rename(columns={"remap_id": "item"}))


def _tiktok_side(folder: Path, id_offset: int) -> SideInfo:
    found = {name: _read_optional(read_modality, folder, f"{name}_feat.npy") for name in ("image", "audio", "text")}
    return SideInfo(modalities={name: features for name, features in found.items() if features is not None})


_LIGHTGCN_SPLIT = {"train": "train.txt", "test": "test.txt"}
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("ml-100k", "MovieLens-100K ratings as implicit feedback, seeded 8:1:1 split per user; "
                "movie titles, genres and user demographics",
                (Layout({"all": "u.data"}, read_udata),), _movielens_100k_side),
    DatasetSpec("ml-1m", "MovieLens-1M: the shipped LightGCN-format train/test split (ids = GroupLens ids - 1), "
                "or ratings.dat with a seeded 8:1:1 split; movie titles, genres and user demographics",
                (Layout(_LIGHTGCN_SPLIT, read_lightgcn, id_offset=1),
                 Layout({"all": "ratings.dat"}, read_ratings_dat)), _movielens_1m_side),
    DatasetSpec("gowalla", "Gowalla check-ins, the LightGCN/NGCF train/test split",
                (Layout(_LIGHTGCN_SPLIT, read_lightgcn),), _lightgcn_side),
    DatasetSpec("yelp2018", "Yelp 2018, the LightGCN/NGCF train/test split",
                (Layout(_LIGHTGCN_SPLIT, read_lightgcn),), _lightgcn_side),
    DatasetSpec("tiktok", "TikTok micro-videos (DiffMM version): shipped train/valid/test split, image and audio "
                "features per item", (Layout({"train": "trnMat.pkl", "valid": "valMat.pkl", "test": "tstMat.pkl"},
                                             read_sparse_pickle),), _tiktok_side),
)}


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`."""
    return sorted(DATASETS)


_STAT_KEYS = ("users", "items", "train", "valid", "test", "density")


def dataset_status(root: str | Path | None = None) -> list[dict]:
    """One row per known dataset: whether its files are under the data root, and its statistics if they are.
    A dataset whose files cannot be read gets its own row, `broken: <reason>`; the others are still listed."""
    rows = []
    base = existing_root(root)
    for name in list_datasets():
        folder = base / name
        if _find_layout(DATASETS[name], folder) is None:
            rows.append({"dataset": name, "files": "missing (fetched on first load)",
                         **{key: "-" for key in _STAT_KEYS}})
            continue
        try:
            stats = load_dataset(name, root, download=False).stats()
        except (OSError, ValueError) as err:   # DataError is a ValueError
            rows.append({"dataset": name, "files": f"broken: {_short_reason(err, folder)}",
                         **{key: "-" for key in _STAT_KEYS}})
        else:
            rows.append({"dataset": name, "files": "present", **{key: stats[key] for key in _STAT_KEYS}})
    return rows


def _short_reason(err: BaseException, folder: Path) -> str:
    """The first line of an error, file names relative to the dataset folder, at most 100 characters."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    reason = lines[0].replace(f"{folder.resolve()}/", "").replace(f"{folder}/", "")
    return reason if len(reason) <= 100 else reason[:97] + "..."


def data_root(root: str | Path | None = None) -> Path:
    """The folder holding one subfolder per dataset: `root`, else $RECUNLEARN_DATA, else ~/.cache/recunlearn/data."""
    return Path(root or os.environ.get(DATA_ENV) or DEFAULT_ROOT).expanduser()


def existing_root(root: str | Path | None = None) -> Path:
    """`data_root(root)`, which must exist when it was named (argument or $RECUNLEARN_DATA): a missing one
    is a DataError naming where it came from, and is never created. The default folder may be missing
    (nothing downloaded yet); the first download creates it."""
    path = data_root(root)
    if path.is_dir() or (not root and not os.environ.get(DATA_ENV)):
        return path
    problem = "is a file, not a folder" if path.exists() else "does not exist"
    # creating the folder is advice only where nothing is in the way
    create = "" if path.exists() else f" (to download datasets into a new one, create it first: mkdir -p {path})"
    if root:
        raise DataError(f"data folder {path} {problem}: pass the folder that holds one folder per dataset{create}")
    raise DataError(f"{DATA_ENV}={os.environ[DATA_ENV]} {problem}: set {DATA_ENV} to the folder that holds one "
                    f"folder per dataset, or unset it to use {DEFAULT_ROOT}{create}")


def load_dataset(name: str, root: str | Path | None = None, seed: int = 0, valid_ratio: float = 0.1, *,
                 download: bool = True) -> Dataset:
    """Load a named benchmark dataset with its split and side information.

    `seed` drives the 8:1:1 split of datasets without a shipped split and the validation set carved from a
    shipped train set (`valid_ratio` of each user's training interactions). Results are cached in memory
    per (name, folder, seed, valid_ratio): the Dataset is immutable, so do not modify its side-info frames.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())} "
                        "(or load your own files with load_files)")
    folder = (existing_root(root) / name).resolve()
    return _load_cached(name, str(folder), seed, valid_ratio, download)


@lru_cache(maxsize=CACHED_DATASETS)
def _load_cached(name: str, folder: str, seed: int, valid_ratio: float, download: bool) -> Dataset:
    spec = DATASETS[name]
    layout, paths = _locate(spec, Path(folder), download)
    frames = {split: layout.reader(path) for split, path in paths.items()}
    dataset = make_dataset(frames, name, seed=seed, valid_ratio=valid_ratio)
    return attach_side_info(dataset, spec.side_info(Path(folder), layout.id_offset))


def clear_cache() -> None:
    """Forget datasets loaded so far (after files on disk changed)."""
    _load_cached.cache_clear()


def load_files(files: str | Path | Mapping[str, str | Path], fmt: str | None = None, *, name: str | None = None,
               seed: int = 0, valid_ratio: float = 0.1, on_duplicate: str = "error") -> Dataset:
    """Load your own interaction files in any supported format (from the extension, or `fmt`).

    `files` is one file (split 8:1:1 per user with `seed`) or a mapping with keys train/test (validation carved
    from train) or train/valid/test.
    """
    paths = {"all": files} if isinstance(files, (str, Path)) else dict(files)
    frames = {split: read_interactions(path, fmt, on_duplicate=on_duplicate) for split, path in paths.items()}
    return make_dataset(frames, name or _default_name(paths), seed=seed, valid_ratio=valid_ratio,
                        on_duplicate=on_duplicate)


def _default_name(paths: Mapping[str, str | Path]) -> str:
    first = Path(next(iter(paths.values())))
    return first.name.split(".")[0] if "all" in paths else first.resolve().parent.name


def attach_side_info(dataset: Dataset, side: SideInfo) -> Dataset:
    """Attach side information, re-indexed to the dataset's contiguous user and item indices."""
    modalities = {name: _align_rows(features, dataset.item_ids, name)
                  for name, features in (side.modalities or {}).items()}
    return replace(dataset, user_info=_align_frame(side.users, dataset.user_ids, "user"),
                   item_info=_align_frame(side.items, dataset.item_ids, "item"), modalities=modalities)


def _align_frame(info: pd.DataFrame | None, ids: IdMap, column: str) -> pd.DataFrame | None:
    """Row k describes index k; ids without information get empty (NaN) rows, unknown ids are dropped."""
    if info is None:
        return None
    repeated = info[column].duplicated()
    if repeated.any():
        raise DataError(f"{column} information lists {column} {info[column][repeated].iloc[0]!r} twice")
    aligned = info.set_index(column).reindex(pd.Index(ids.labels))
    return aligned.reset_index(drop=True)


def _align_rows(features: np.ndarray, ids: IdMap, name: str) -> np.ndarray:
    """Feature row k for item index k: rows are taken at the items' original (integer) ids."""
    labels = ids.labels
    if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() >= len(features))):
        raise DataError(f"{name} features have {len(features)} rows, which do not cover the item ids "
                        f"({labels[:1].tolist()}..{labels[-1:].tolist()})")
    aligned = np.ascontiguousarray(features[labels])
    aligned.flags.writeable = False  # shared by every caller of the cached dataset
    return aligned


def _locate(spec: DatasetSpec, folder: Path, download: bool) -> tuple[Layout, dict[str, Path]]:
    found = _find_layout(spec, folder)
    if found is None:
        expected = _describe_layouts(spec)
        if not download:
            raise downloads.missing_data_error(spec.name, folder, expected, "downloading was turned off")
        downloads.download_dataset(spec.name, folder, expected=expected)
        found = _find_layout(spec, folder)
        if found is None:
            raise downloads.missing_data_error(spec.name, folder, expected, "the download did not provide them")
    return found


def _find_layout(spec: DatasetSpec, folder: Path) -> tuple[Layout, dict[str, Path]] | None:
    for layout in spec.layouts:
        paths = {split: _find_file(folder, file) for split, file in layout.files.items()}
        if all(paths.values()):
            return layout, paths
    return None


def _describe_layouts(spec: DatasetSpec) -> str:
    alternatives = ", or ".join(" and ".join(layout.files.values()) for layout in spec.layouts)
    return f"{alternatives}; each may also be gzipped, as name.gz"


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_optional(reader: Callable, folder: Path, name: str):
    path = _find_file(folder, name)
    return None if path is None else reader(path)
