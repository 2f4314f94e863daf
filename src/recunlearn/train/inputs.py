"""The data a run config names: a benchmark dataset by name, or your own files (`data.path`)."""
from __future__ import annotations

from pathlib import Path

from ..data.interactions import DataError, Dataset
from ..data.registry import load_dataset, load_files
from .config import DataConfig


def load_data(cfg: DataConfig) -> Dataset:
    """The dataset a run config names: a named benchmark dataset, or your own files (`data.path`)."""
    if cfg.path is None:
        return load_dataset(cfg.name, seed=cfg.seed, valid_ratio=cfg.valid_ratio)
    return load_files(split_files(Path(cfg.path)), name=cfg.name, seed=cfg.seed, valid_ratio=cfg.valid_ratio)


def split_files(path: Path) -> Path | dict[str, Path]:
    """A file as it is; a folder as its train/valid/test files (`train.csv`, `test.txt.gz`, ...)."""
    if not path.is_dir():
        return path
    found = {split: file for split in ("train", "valid", "test")
             for file in sorted(path.iterdir()) if file.is_file() and file.name.split(".")[0] == split}
    if not {"train", "test"} <= set(found):
        raise DataError(f"{path}: a data folder needs train.* and test.* files (valid.* optional), "
                        f"found {sorted(f.name for f in path.iterdir())[:6]}")
    return found
