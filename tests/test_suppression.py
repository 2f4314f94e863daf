"""The suppression list at every data load: `recunlearn train --ledger` filters erased subjects out of every
split, records which ledger rows it applied, and a later load of the checkpoint applies exactly those again."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cli_helpers import assert_input_error
from generated import taste_groups
from recunlearn.cli import app
from recunlearn.data.suppression import SuppressionList, apply_suppression, read_suppression
from recunlearn.service.intake import accept
from recunlearn.service.ledger import open_ledger
from recunlearn.service.schemas import ErasureRequest
from recunlearn.service.settings import Policy
from recunlearn.train.checkpoint import load_checkpoint_data

pytestmark = pytest.mark.usefixtures("isolated_model_cache", "isolated_locks")


def pairs_of(split) -> set[tuple[int, int]]:
    return set(zip(split.users.tolist(), split.items.tolist()))


def test_apply_removes_exactly_the_suppressed_subjects_from_every_split():
    data = taste_groups(30, 20, 8, seed=1)
    label_u, label_i = data.user_ids.label, data.item_ids.label
    some_pair = (int(data.test.users[0]), int(data.test.items[0]))
    listed = SuppressionList(users=frozenset({str(label_u([3])[0])}), items=frozenset({str(label_i([5])[0])}),
                             pairs=frozenset({(str(label_u([some_pair[0]])[0]), str(label_i([some_pair[1]])[0])),
                                              ("no such user", "1")}), through_row=4)
    out = apply_suppression(data, listed)
    for split in ("train", "valid", "test"):
        expected = {(u, i) for u, i in pairs_of(getattr(data, split))
                    if u != 3 and i != 5 and (u, i) != some_pair}          # brute force
        assert pairs_of(getattr(out, split)) == expected
    assert out.original_train is None and out.origin_hash == out.hash != data.hash   # stores no list of removals
    assert apply_suppression(data, SuppressionList()).hash == data.hash


def test_the_list_hash_covers_every_subject_and_the_rows():
    base = SuppressionList(users=frozenset({"1"}), through_row=1)
    assert base.sha256 == SuppressionList(users=frozenset({"1"}), through_row=1).sha256
    others = [SuppressionList(users=frozenset({"2"}), through_row=1), SuppressionList(items=frozenset({"1"}), through_row=1),
              SuppressionList(users=frozenset({"1"}), through_row=2)]
    assert len({base.sha256, *(o.sha256 for o in others)}) == 4


@pytest.fixture
def ledger_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    ledger = open_ledger(url)
    yield url, ledger
    ledger.dispose()


def test_rows_are_read_through_the_recorded_row(ledger_url):
    url, ledger = ledger_url
    accept(ledger, ErasureRequest(user="7"), None, Policy())
    accept(ledger, ErasureRequest(pairs=[["8", "50"], ["8", "51"]]), None, Policy())
    accept(ledger, ErasureRequest(item="99"), None, Policy())
    everything = read_suppression(url)
    assert everything.users == {"7"} and everything.items == {"99"} and everything.pairs == {("8", "50"), ("8", "51")}
    assert everything.through_row == 4
    first = read_suppression(url, through_row=1)
    assert first.users == {"7"} and not first.pairs and not first.items


def test_train_with_a_ledger_never_sees_the_erased_user_and_reloads_the_same_data(ledger_url, tmp_path, data_root):
    url, ledger = ledger_url
    accept(ledger, ErasureRequest(user="1"), None, Policy())
    accept(ledger, ErasureRequest(item="50"), None, Policy())
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", "--dataset", "ml-100k", "--ledger", url, "--quiet", "--out", str(out),
                                      "--set", "train.epochs=1", "--set", "train.batch_size=8192"])
    assert result.exit_code == 0, result.output
    assert "1 users, 1 items, 0 pairs filtered out of every split" in result.output
    run, data, _ = load_checkpoint_data(out)
    user, item = data.user_ids.index(["1"])[0], data.item_ids.index(["50"])[0]
    for split in (data.train, data.valid, data.test):
        assert not np.isin(split.users, [user]).any() and not np.isin(split.items, [item]).any()
    assert run.data.suppression.through_row == 2 and "ledger.sqlite3" in run.data.suppression.ledger
    assert not any(p.name.startswith("edits") for p in out.iterdir()), "no list of removed pairs in the checkpoint"
    # A later erasure does not change what this checkpoint was trained on.
    accept(ledger, ErasureRequest(user="2"), None, Policy())
    assert load_checkpoint_data(out)[1].hash == data.hash
    assert CliRunner().invoke(app, ["evaluate", "--checkpoint", str(out)]).exit_code == 0


def test_a_ledger_that_reads_back_otherwise_is_refused(ledger_url, tmp_path, data_root, monkeypatch):
    url, ledger = ledger_url
    accept(ledger, ErasureRequest(user="1"), None, Policy())
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", "--dataset", "ml-100k", "--ledger", url, "--quiet", "--out", str(out),
                                      "--set", "train.epochs=1", "--set", "train.batch_size=8192"])
    assert result.exit_code == 0, result.output
    other = open_ledger(f"sqlite:///{tmp_path / 'other.sqlite3'}")
    accept(other, ErasureRequest(user="3"), None, Policy())
    other.dispose()
    monkeypatch.setenv("RECUNLEARN_LEDGER_URL", f"sqlite:///{tmp_path / 'other.sqlite3'}")
    assert_input_error(CliRunner().invoke(app, ["evaluate", "--checkpoint", str(out)]),
                       "not the recorded", "not the ledger the run was trained against")


def test_an_unreadable_ledger_is_a_clear_error(tmp_path, data_root):
    result = CliRunner().invoke(app, ["train", "--dataset", "ml-100k", "--ledger", f"sqlite:///{tmp_path}/none.db",
                                      "--quiet", "--out", str(tmp_path / "m")])
    assert_input_error(result, "cannot read the suppression list", "RECUNLEARN_LEDGER_URL")
    assert not (tmp_path / "m").exists()
