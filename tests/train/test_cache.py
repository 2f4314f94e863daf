"""Trained-model cache: keyed by data content and config; an interrupted entry resumes, never counts as a hit."""
from __future__ import annotations

import json

import numpy as np
import pytest

from recunlearn.data.interactions import Dataset, IdMap, Interactions
from recunlearn.train import cache as cache_module
from recunlearn.train.checkpoint import read_meta
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import TRAINER_STATE, Trainer


def tiny_dataset(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 30, 400), rng.integers(0, 25, 400)
    everything = Interactions.from_arrays(users, items, 30, 25, on_duplicate="drop")
    part = rng.random(len(everything))
    train, valid, test = (everything.select(m) for m in (part < 0.8, (part >= 0.8) & (part < 0.9), part >= 0.9))
    return Dataset("tiny", train, valid, test, IdMap(np.arange(30)), IdMap(np.arange(25)))


RUN = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 8},
                                "train": {"epochs": 3, "batch_size": 64, "lr": 0.01, "patience": 10}})


def test_second_call_is_a_hit_and_other_data_is_a_miss(tmp_path):
    data = tiny_dataset()
    _, meta, hit = cache_module.train_cached(RUN, data, tmp_path, progress=False)
    assert not hit and meta["complete"]
    _, meta2, hit2 = cache_module.train_cached(RUN, data, tmp_path, progress=False)
    assert hit2 and meta2["metrics"]["seconds"] == meta["metrics"]["seconds"]
    residual = data.with_train(data.train.select(np.arange(len(data.train)) % 7 != 0))
    assert cache_module.run_key(RUN, residual) != cache_module.run_key(RUN, data)
    _, _, hit3 = cache_module.train_cached(RUN, residual, tmp_path, progress=False)
    assert not hit3


def test_interrupted_entry_resumes_instead_of_counting_as_trained(tmp_path, monkeypatch):
    data = tiny_dataset()
    real_epoch = Trainer.train_epoch
    calls = []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(self, *args)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache_module.train_cached(RUN, data, tmp_path, progress=False)
    (entry,) = list(tmp_path.iterdir())
    assert not read_meta(entry).get("complete")
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    _, meta, hit = cache_module.train_cached(RUN, data, tmp_path, progress=False)
    assert not hit and meta["complete"]
    assert [r["epoch"] for r in meta["history"]] == [1, 2, 3]   # resumed after epoch 1, not restarted


def test_unfinished_entry_without_resume_state_is_trained_again(tmp_path):
    """A folder with weights but neither the `complete` flag nor the trainer state (an entry of older code)
    cannot resume: it is trained afresh instead of failing with "nothing to resume"."""
    data = tiny_dataset()
    cache_module.train_cached(RUN, data, tmp_path, progress=False)
    (entry,) = list(tmp_path.iterdir())
    meta = read_meta(entry)
    meta.pop("complete")
    (entry / "config.json").write_text(json.dumps(meta))
    assert not (entry / f"{TRAINER_STATE}.pt").exists()
    _, meta2, hit = cache_module.train_cached(RUN, data, tmp_path, progress=False)
    assert not hit and meta2["complete"]
    assert [r["epoch"] for r in meta2["history"]] == [1, 2, 3]


def test_entry_of_another_code_version_is_not_reused(tmp_path, monkeypatch):
    """The key carries the code version: after a change to the code that trains models, the same data and
    config train afresh instead of loading the stale entry."""
    data = tiny_dataset()
    cache_module.train_cached(RUN, data, tmp_path, progress=False)
    assert cache_module.train_cached(RUN, data, tmp_path, progress=False)[2]
    monkeypatch.setattr(cache_module, "code_version", lambda packages: "0.1.0+changedcode")
    _, meta, hit = cache_module.train_cached(RUN, data, tmp_path, progress=False)
    assert not hit and meta["complete"]
    assert len(list(tmp_path.iterdir())) == 2


def test_code_version_ignores_docstrings_but_not_code(tmp_path):
    from recunlearn.train.version import fingerprint_sources
    package = tmp_path / "data"
    package.mkdir()
    (package / "a.py").write_text('"""Doc."""\ndef f():\n    """Doc."""\n    return 1  # comment\n')
    before = fingerprint_sources(tmp_path, ("data",))
    (package / "a.py").write_text('"""Other doc."""\ndef f():\n    """Changed."""\n    return 1\n')
    assert fingerprint_sources(tmp_path, ("data",)) == before
    (package / "a.py").write_text('"""Doc."""\ndef f():\n    return 2\n')
    assert fingerprint_sources(tmp_path, ("data",)) != before
