"""The data a run config names: a benchmark dataset by name, or your own files (`data.path`)."""
from __future__ import annotations

from pathlib import Path

from ..data.content import with_content
from ..data.interactions import DataError, Dataset
from ..data.registry import load_dataset, load_files
from ..data.suppression import SuppressionList, apply_suppression, read_suppression, safe_url
from .config import DataConfig, RunConfig, SuppressionRef


def load_data(cfg: DataConfig) -> Dataset:
    """The dataset a run config names: a named benchmark dataset, or your own files (`data.path`)."""
    if cfg.path is None:
        dataset = load_dataset(cfg.name, seed=cfg.seed, valid_ratio=cfg.valid_ratio)
    else:
        dataset = load_files(split_files(Path(cfg.path)), name=cfg.name, seed=cfg.seed, valid_ratio=cfg.valid_ratio)
    dataset = with_content(dataset, cfg.modalities, cfg.feature_files)
    return dataset if cfg.suppression is None else suppressed(dataset, cfg.suppression)


def with_ledger(run: RunConfig, ledger_url: str) -> tuple[RunConfig, SuppressionList]:
    """`run` with the ledger's suppression list as it is now recorded in its data section (its last row and
    hash), and that list."""
    listed = read_suppression(ledger_url)
    ref = SuppressionRef(ledger=safe_url(ledger_url), through_row=listed.through_row, sha256=listed.sha256)
    return run.model_copy(update={"data": run.data.model_copy(update={"suppression": ref})}), listed


def suppressed(dataset: Dataset, ref: SuppressionRef) -> Dataset:
    """`dataset` through the ledger's suppression list as the run recorded it (the same rows, checked)."""
    listed = read_suppression(ref.ledger, ref.through_row)
    if listed.sha256 != ref.sha256:
        raise DataError(f"the suppression list read from {ref.ledger} through row {ref.through_row} hashes to "
                        f"{listed.sha256[:12]}, not the recorded {ref.sha256[:12]}: this is not the ledger the run "
                        "was trained against")
    return apply_suppression(dataset, listed)


def split_files(path: Path) -> Path | dict[str, Path]:
    """A file as it is; a folder as its train/valid/test files (`train.csv`, `test.txt.gz`, ...)."""
    if not path.is_dir():
        return path
    files = sorted(file for file in path.iterdir() if file.is_file())
    found = {}
    for split in ("train", "valid", "test"):
        named = [file for file in files if file.name.split(".")[0] == split]
        if len(named) > 1:   # reading one of them would silently ignore the others
            raise DataError(f"{path}: {len(named)} {split} files ({', '.join(f.name for f in named)}): keep one "
                            f"{split}.* file in the folder and move the others out")
        if named:
            found[split] = named[0]
    if not {"train", "test"} <= set(found):
        raise DataError(f"{path}: a data folder needs train.* and test.* files (valid.* optional), "
                        f"found {sorted(f.name for f in path.iterdir())[:6]}")
    return found
