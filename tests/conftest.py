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


@pytest.fixture(scope="module")
def isolated_locks(tmp_path_factory):
    """Locks taken by a test module live in a fresh folder: no other run on the machine can hold them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECUNLEARN_LOCKS", str(tmp_path_factory.mktemp("locks")))
        yield


@pytest.fixture
def batch_spy(monkeypatch):
    """`batch_spy()` wraps `recunlearn.data.sampling.bpr_epoch`, through which every training loop draws its
    (user, positive, negative) triples, and returns the list of every (users, positives) batch it yields:
    a check of what any method fed in as training positives."""
    from recunlearn.data import sampling

    def install() -> list:
        seen = []
        real = sampling.bpr_epoch

        def spy(train, rng, batch_size, **options):
            for users, pos, neg in real(train, rng, batch_size, **options):
                seen.append((users.copy(), pos.copy()))
                yield users, pos, neg

        monkeypatch.setattr(sampling, "bpr_epoch", spy)
        return seen
    return install
