"""Self-describing checkpoints: exact round trips, plain-tensor weights, edited training sets, data checks,
clear errors, and atomic writes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recunlearn.config import load_config
from recunlearn.data.graph import build_graph
from recunlearn.data.interactions import Dataset, Interactions
from recunlearn.data.registry import load_dataset
from recunlearn.models.registry import MODELS, build_model
from recunlearn.train import checkpoint as checkpoint_module
from recunlearn.train.checkpoint import (CheckpointError, load_checkpoint, load_tensors, read_meta,
                                         save_checkpoint)
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer


@pytest.fixture(scope="module")
def ml100k(data_root) -> Dataset:
    return load_dataset("ml-100k", data_root)


@pytest.fixture(scope="module")
def trained(ml100k):
    """A LightGCN after one epoch (weights far from their initial values), with its run config."""
    run = load_config(RunConfig, overrides=["train.epochs=1", "train.lr=0.01", "train.batch_size=4096"])
    model, _ = Trainer(run, progress=False).fit(ml100k)
    return model, run


def all_scores(model) -> torch.Tensor:
    model.eval()
    model.invalidate()
    return model.score(torch.arange(model.n_users))


def copy_of(model, run: RunConfig, dataset: Dataset):
    """The same weights on `dataset`'s training graph (the shared fixture stays untouched)."""
    other = build_model(run.model, dataset.n_users, dataset.n_items)
    other.load_state_dict(model.state_dict())
    return other.attach(build_graph(dataset.train))


def folder_entries(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# ------------------------------------------------------------------------------------------------ round trip

def test_round_trip_reproduces_scores_exactly(trained, ml100k, tmp_path):
    model, run = trained
    path = save_checkpoint(tmp_path / "ckpt", model, run, ml100k, metrics={"valid": {"Recall@20": 0.25}})
    assert path == tmp_path / "ckpt"
    loaded, loaded_run, data, meta = load_checkpoint(path)
    assert torch.equal(all_scores(loaded), all_scores(model))
    assert loaded_run == run
    assert type(loaded) is type(model) and not loaded.training
    assert data.hash == ml100k.hash and data.train.hash == ml100k.train.hash
    assert loaded.graph.source_hash == ml100k.train.hash
    assert meta["metrics"] == {"valid": {"Recall@20": 0.25}}
    assert (meta["dataset"], meta["n_users"], meta["n_items"]) == ("ml-100k", 943, 1682)


def test_round_trip_with_the_dataset_given(trained, ml100k, tmp_path):
    model, run = trained
    save_checkpoint(tmp_path / "ckpt", model, run, ml100k)
    loaded, _, data, _ = load_checkpoint(tmp_path / "ckpt", dataset=ml100k)
    assert data is ml100k
    assert torch.equal(all_scores(loaded), all_scores(model))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_for_every_backbone(name, ml100k, tmp_path):
    run = load_config(RunConfig, overrides=[f"model.name={name}", "model.dim=16"])
    torch.manual_seed(0)
    model = build_model(run.model, ml100k.n_users, ml100k.n_items).attach(build_graph(ml100k.train))
    save_checkpoint(tmp_path / name, model, run, ml100k)
    loaded, loaded_run, _, _ = load_checkpoint(tmp_path / name, dataset=ml100k)
    assert type(loaded) is MODELS[name] and loaded_run.model == run.model
    assert torch.equal(all_scores(loaded), all_scores(model))


def test_folder_layout_and_plain_tensor_weights(trained, ml100k, tmp_path):
    model, run = trained
    path = save_checkpoint(tmp_path / "ckpt", model, run, ml100k, extra={"note": "n"},
                           tensors={"aux": {"x": torch.arange(3)}})
    assert folder_entries(path) == ["aux.pt", "config.json", "weights.pt"]
    weights = torch.load(path / "weights.pt", weights_only=True)
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    meta = json.loads((path / "config.json").read_text())
    assert meta == read_meta(path)
    assert meta["run"] == run.model_dump(mode="json")
    assert meta["data_hash"] == ml100k.hash and meta["train_hash"] == ml100k.train.hash
    assert meta["note"] == "n" and "recunlearn" in meta
    assert torch.equal(load_tensors(path, "aux")["x"], torch.arange(3))
    assert load_tensors(path, "absent") is None


def test_saving_over_an_existing_checkpoint_replaces_it(trained, ml100k, tmp_path):
    model, run = trained
    path = tmp_path / "ckpt"
    save_checkpoint(path, model, run, ml100k, metrics={"v": 1}, tensors={"old": {"x": torch.zeros(1)}})
    save_checkpoint(path, model, run, ml100k, metrics={"v": 2})
    assert read_meta(path)["metrics"] == {"v": 2}
    assert folder_entries(path) == ["config.json", "weights.pt"]   # nothing of the old one is left
    assert folder_entries(tmp_path) == ["ckpt"]                     # no backup or temporary folder


# ----------------------------------------------------------------------------------------- edited train set

def edited(dataset: Dataset, seed: int = 0) -> tuple[Dataset, Interactions, Interactions]:
    """The dataset with 1% of its training edges removed and 20 valid-set edges added."""
    rng = np.random.default_rng(seed)
    removed = dataset.train.select(rng.random(len(dataset.train)) < 0.01)
    added = dataset.valid.select(np.isin(np.arange(len(dataset.valid)), rng.choice(len(dataset.valid), 20)))
    return dataset.with_train(dataset.train.subtract(removed).union(added)), removed, added


def test_checkpoint_of_an_edited_training_set_reloads_exactly_that_set(trained, ml100k, tmp_path):
    model, run = trained
    residual, removed, added = edited(ml100k)
    model = copy_of(model, run, residual)
    path = save_checkpoint(tmp_path / "unlearned", model, run, residual)
    assert (path / "train_edits.npz").is_file()
    loaded, _, data, meta = load_checkpoint(path)             # the data is loaded by name, as shipped
    assert data.train.hash == residual.train.hash == meta["train_hash"]
    np.testing.assert_array_equal(data.train.keys, residual.train.keys)
    assert not data.train.contains(removed.users, removed.items).any()
    assert data.train.contains(added.users, added.items).all()
    assert data.origin_hash == ml100k.hash                      # still known as the shipped dataset
    got_added, got_removed = data.train_edits()
    np.testing.assert_array_equal(got_removed.keys, removed.keys)
    np.testing.assert_array_equal(got_added.keys, added.subtract(ml100k.train).keys)
    assert loaded.graph.source_hash == residual.train.hash      # propagation runs on the edited graph
    assert torch.equal(all_scores(loaded), all_scores(model))


def test_edited_checkpoint_loads_with_the_edited_dataset_given(trained, ml100k, tmp_path):
    model, run = trained
    residual, _, _ = edited(ml100k, seed=1)
    path = save_checkpoint(tmp_path / "unlearned", model, run, residual)
    _, _, data, _ = load_checkpoint(path, dataset=residual)
    assert data.train.hash == residual.train.hash


def test_unedited_checkpoint_has_no_edit_file(trained, ml100k, tmp_path):
    model, run = trained
    path = save_checkpoint(tmp_path / "ckpt", model, run, ml100k)
    assert not (path / "train_edits.npz").exists()


# ------------------------------------------------------------------------------------------- wrong data

def test_loading_against_another_split_fails_clearly(trained, ml100k, data_root, tmp_path):
    model, run = trained
    path = save_checkpoint(tmp_path / "ckpt", model, run, ml100k)
    other = load_dataset("ml-100k", data_root, seed=1)
    assert other.hash != ml100k.hash
    with pytest.raises(CheckpointError, match="split seed changed") as err:
        load_checkpoint(path, dataset=other)
    assert ml100k.hash in str(err.value) and other.hash in str(err.value)


def test_loading_a_checkpoint_whose_training_set_cannot_be_rebuilt_fails(trained, ml100k, tmp_path):
    model, run = trained
    path = save_checkpoint(tmp_path / "ckpt", model, run, ml100k)
    meta = read_meta(path)
    meta["train_hash"] = "0123456789abcdef"
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="training set hash"):
        load_checkpoint(path, dataset=ml100k)


def test_missing_folder_says_how_to_create_one(tmp_path):
    for path in (tmp_path / "nowhere", tmp_path):   # absent, and present but empty
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert str(path) in str(err.value)
        assert "recunlearn train --out" in str(err.value)


# ------------------------------------------------------------------------------------------- atomic writes

def failing_save(*args, **kwargs):
    raise OSError("disk full")


def test_failed_save_leaves_no_folder_behind(trained, ml100k, tmp_path, monkeypatch):
    model, run = trained
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt", model, run, ml100k)
    assert folder_entries(tmp_path) == []       # neither the target nor a temporary folder


def test_failed_save_over_an_existing_checkpoint_keeps_the_old_one(trained, ml100k, tmp_path, monkeypatch):
    model, run = trained
    path = save_checkpoint(tmp_path / "ckpt", model, run, ml100k, metrics={"v": 1})
    before = all_scores(load_checkpoint(path, dataset=ml100k)[0])
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        save_checkpoint(path, model, run, ml100k, metrics={"v": 2})
    monkeypatch.undo()
    assert folder_entries(tmp_path) == ["ckpt"]
    assert read_meta(path)["metrics"] == {"v": 1}
    assert torch.equal(all_scores(load_checkpoint(path, dataset=ml100k)[0]), before)


def test_failure_while_writing_the_edit_file_leaves_nothing(trained, ml100k, tmp_path, monkeypatch):
    model, run = trained
    residual, _, _ = edited(ml100k)

    def failing_savez(*args, **kwargs):
        raise OSError("interrupted")

    monkeypatch.setattr(checkpoint_module.np, "savez", failing_savez)
    with pytest.raises(OSError, match="interrupted"):
        save_checkpoint(tmp_path / "ckpt", model, run, residual)
    assert folder_entries(tmp_path) == []
