"""A damaged saved unlearner state (or one of an older format) gives one PreparedStateError that names the file
and says how to prepare the state again, whichever of its files is damaged: the base's own (unlearner.json,
forgotten.npz, weights.pt) or a method's (here `extra.pt`, as UnlearnRec's input_state.pt)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recunlearn.data.graph import build_graph
from recunlearn.models.registry import build_model
from recunlearn.train.config import RunConfig
from recunlearn.unlearn.base import PreparedStateError, Unlearner

EXTRA_FILE = "extra.pt"


class Keeper(Unlearner):
    """Forgets nothing, but saves what a real method does: a new model state and a torch file of its own."""

    name, kind = "keeper", "control"

    def _unlearn(self, edges, residual):
        model = self.original.clone()
        return self._result(model, residual, edges, model)

    def _save_extra(self, path):
        torch.save({"x": torch.arange(3)}, path / EXTRA_FILE)

    def _load_extra(self, path, model, dataset):
        self.extra = torch.load(path / EXTRA_FILE, weights_only=True)["x"]


@pytest.fixture
def saved(synthetic, tmp_path):
    """(state folder as the CLI keeps it, the checkpoint it belongs to, model, data) after one request."""
    data = synthetic()
    run = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 8}})
    torch.manual_seed(0)
    model = build_model(run.model, data.n_users, data.n_items).attach(build_graph(data.train))
    keeper = Keeper(progress=False).prepare(model, data)
    keeper.unlearn(data.train.select(np.arange(len(data.train)) < 5))
    checkpoint = tmp_path / "ckpt"
    return keeper.save(checkpoint / "unlearners" / "keeper" / data.hash), checkpoint, model, data


def test_an_intact_state_loads(saved):
    path, _, model, data = saved
    loaded = Keeper.load(path, model, data, progress=False)
    assert torch.equal(loaded.extra, torch.arange(3)) and len(loaded.state.forgotten) == 5


def truncate(file) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("file, damage, named", [
    ("unlearner.json", truncate, True),
    ("unlearner.json", lambda file: file.write_text("{}"), True),
    ("unlearner.json", lambda file: file.write_text(json.dumps({**json.loads(file.read_text()),
                                                                "config": {"renamed": 1}})), True),
    ("forgotten.npz", truncate, True),
    ("forgotten.npz", lambda file: file.write_text("garbage\n"), True),
    ("forgotten.npz", lambda file: np.savez(file, users=np.zeros(0, np.int64)), True),
    ("weights.pt", truncate, True),
    ("weights.pt", lambda file: file.write_text("garbage\n"), True),
    (EXTRA_FILE, truncate, True),
    # an older format of the method's own file: which file lacked the key is the method's to know
    (EXTRA_FILE, lambda file: torch.save({"y": torch.zeros(1)}, file), False),
])
def test_a_damaged_file_is_named_with_how_to_prepare_again(saved, file, damage, named):
    path, checkpoint, model, data = saved
    damage(path / file)
    with pytest.raises(PreparedStateError) as err:
        Keeper.load(path, model, data, progress=False)
    message = str(err.value)
    assert message.startswith(f"{path / file if named else path}: unreadable ("), message
    assert f"run `recunlearn prepare --checkpoint {checkpoint} --method keeper` again" in message
    assert len(message.splitlines()) == 1


def test_a_state_kept_elsewhere_says_to_delete_it_and_prepare_again(saved, tmp_path):
    path, _, model, data = saved
    elsewhere = path.rename(tmp_path / "cache-entry")
    (elsewhere / "unlearner.json").write_text("{")
    with pytest.raises(PreparedStateError, match="delete .*cache-entry and prepare it again"):
        Keeper.load(elsewhere, model, data, progress=False)


@pytest.mark.parametrize("file", ["unlearner.json", "forgotten.npz", "weights.pt"])
def test_a_file_that_cannot_be_read_for_want_of_permission_is_not_called_damaged(saved, monkeypatch, file):
    """Deleting and preparing again would not help an access problem: the PermissionError is passed on (the CLI
    names the file and the permissions). Tests run as root, where chmod does not deny, so opening is patched."""
    path, _, model, data = saved
    denied = path / file
    real_open = open

    def guarded_open(name, *args, **kwargs):
        if str(name) == str(denied):
            raise PermissionError(13, "Permission denied", str(denied))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    monkeypatch.setattr("io.open", guarded_open)   # what pathlib opens with
    with pytest.raises(PermissionError) as err:
        Keeper.load(path, model, data, progress=False)
    assert err.value.filename == str(denied)
