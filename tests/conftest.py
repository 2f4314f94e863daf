"""Shared fixtures: the folder of real benchmark datasets."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Test graphs are small: one thread is as fast and immune to oversubscription on a busy 2-core machine.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RECUNLEARN_DATA", str((REPO / ".." / "shared" / "data").resolve()))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """$RECUNLEARN_DATA (default ../shared/data beside the repository); tests needing it skip when it is absent."""
    root = Path(os.environ.get("RECUNLEARN_DATA", "../shared/data"))
    root = root if root.is_absolute() else (REPO / root).resolve()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root}; set RECUNLEARN_DATA to the folder that holds them")
    return root


@pytest.fixture(scope="module")
def isolated_model_cache(tmp_path_factory):
    """Trained and retrained models of a test module go to a fresh cache folder, never the user's."""
    path = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECUNLEARN_CACHE", str(path))
        yield path
