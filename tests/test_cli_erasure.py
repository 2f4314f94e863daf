"""Erasure you can trust from the command line: a full-subject erasure end to end, unlearned checkpoints that
hold no erased data, export, refusals of --out, locks, one-line errors for damaged files, and real processes
killed at each step of a write (fault injection), then a clean next run.

A small LightGCN on ml-100k (3 epochs) and a one-epoch encoder keep this quick; the model cache is private.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recunlearn.cli import app
from recunlearn.storage import exclusive, lock_file
from recunlearn.train.checkpoint import load_checkpoint, read_meta
from cli_helpers import assert_input_error, json_leaves, tensors_in

TRAIN = ["--quiet", "--set", "train.epochs=3", "--set", "train.batch_size=8192", "--set", "train.lr=0.01"]
ENCODER = ["--quiet", "--set", "epochs=1", "--set", "batch_size=8192", "--set", "lr=0.05"]
USER = "42"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def cli_process(*args, fault: str | None = None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """The real `recunlearn` command in its own process, optionally killed (SIGKILL) at a fault point."""
    env = {**os.environ, **(env_extra or {})}
    env.pop("RECUNLEARN_FAULT", None)
    if fault:
        env["RECUNLEARN_FAULT"] = fault
    command = [sys.executable, "-c", "from recunlearn.cli import app; app()", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def user_pairs(data, label: str):
    (user,) = data.user_ids.index([label], kind="user")
    return {split: getattr(data, split).select(getattr(data, split).users == user) for split in ("train", "valid", "test")}


# --------------------------------------------------------------------------------------------- fixtures

pytestmark = pytest.mark.usefixtures("isolated_model_cache", "isolated_locks")


@pytest.fixture(scope="module")
def work(data_root, tmp_path_factory):
    return tmp_path_factory.mktemp("erasure")


@pytest.fixture(scope="module")
def trained(work):
    out = work / "model"
    ok(invoke("train", "--dataset", "ml-100k", "--model", "lightgcn", *TRAIN, "--out", out))
    ok(invoke("prepare", "--checkpoint", out, *ENCODER))
    return out


@pytest.fixture(scope="module")
def user_request(trained, work):
    out = work / f"forget-{USER}.json"
    result = ok(invoke("request", "make", "--checkpoint", trained, "--user", USER, "--out", out))
    return out, result


@pytest.fixture(scope="module")
def forgotten(trained, user_request, work):
    out = work / f"model-without-{USER}"
    result = ok(invoke("unlearn", "--checkpoint", trained, "--request", user_request[0], "--out", out, "--quiet"))
    return out, result


# ------------------------------------------------------------------------------------ full-subject erasure

def test_user_erasure_takes_the_user_out_of_every_split(trained, user_request, forgotten):
    _, _, data, _ = load_checkpoint(trained)
    before = user_pairs(data, USER)
    assert all(len(pairs) > 0 for pairs in before.values())
    assert (f"user erasure: {len(before['train'])} training edges to unlearn, {len(before['valid'])} validation "
            f"and {len(before['test'])} test interactions to remove") in user_request[1].stdout
    assert f"removed {len(before['valid'])} validation and {len(before['test'])} test" in forgotten[1].stdout
    _, _, after, _ = load_checkpoint(forgotten[0])
    assert all(len(pairs) == 0 for pairs in user_pairs(after, USER).values())
    for split in ("train", "valid", "test"):
        assert len(getattr(after, split)) == len(getattr(data, split)) - len(before[split])
    lineage = read_meta(forgotten[0])["lineage"]
    assert lineage["erased"] == {split: len(before[split]) for split in ("train", "valid", "test")}


def test_the_unlearned_checkpoint_holds_no_erased_pair_and_no_original_weights(trained, user_request, forgotten):
    out, _ = forgotten
    _, _, data, _ = load_checkpoint(trained)
    erased = user_pairs(data, USER)
    original = list(torch.load(trained / "weights.pt", weights_only=True).values())
    files = sorted(p.name for p in out.rglob("*"))
    assert files == ["config.json", "weights.pt"]
    # no stored array or tensor is one of the original model's, or lists the erased items or users
    (user,) = data.user_ids.index([USER], kind="user")
    erased_items = np.sort(np.concatenate([pairs.items for pairs in erased.values()]))
    for tensor in tensors_in(out):
        assert not any(tensor.shape == o.shape and torch.equal(tensor, o) for o in original)
        if not tensor.is_floating_point() and tensor.numel():
            values = tensor.flatten().numpy()
            assert not (np.isin(erased_items, values).all() and (values == user).any())
    # nor does the config: no pair, no request file name, no list of ids
    text = (out / "config.json").read_text()
    assert user_request[0].name not in text and f"forget-{USER}" not in text
    meta = json.loads(text)
    assert set(meta["lineage"]) >= {"root_weights_sha256", "erased_sha256", "erased", "root"}
    assert all(not isinstance(v, list) or len(v) < 10 for v in json_leaves(meta))
    # the erasure record lives in the trained model's own working store
    assert (trained / "erasures" / f"{meta['dataset_hash']}.npz").is_file()


def test_another_users_recommendations_before_and_after(trained, forgotten):
    before = json.loads(ok(invoke("recommend", "--checkpoint", trained, "--user", "7", "-k", "5", "--json")).stdout)
    after = json.loads(ok(invoke("recommend", "--checkpoint", forgotten[0], "--user", "7", "-k", "5",
                                 "--json")).stdout)
    assert [r["rank"] for r in after["recommendations"]] == [1, 2, 3, 4, 5]
    assert {r["user"] for r in before["recommendations"] + after["recommendations"]} == {"7"}


def test_audit_gives_a_verdict_for_the_user_erasure(trained, user_request, forgotten):
    result = ok(invoke("audit", "--checkpoint", forgotten[0], "--original", trained, "--request", user_request[0],
                       "--json", "--quiet"))
    report = json.loads(result.stdout)
    assert report["verdict"]["status"] in ("pass", "warn", "fail")
    assert report["verdict"]["line"].split(":")[0] == report["verdict"]["status"].upper()


def test_export_ships_weights_and_hashes_only(forgotten, work):
    out = work / "shipped"
    ok(invoke("export", forgotten[0], "--out", out))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "weights.pt"]
    meta = json.loads((out / "config.json").read_text())
    assert meta["exported"] and "root" not in meta["lineage"] and "parent" not in meta["lineage"]
    assert str(work) not in (out / "config.json").read_text().replace(meta["run"]["data"].get("path") or "", "")
    shipped = torch.load(out / "weights.pt", weights_only=True)
    source = torch.load(forgotten[0] / "weights.pt", weights_only=True)
    assert all(torch.equal(shipped[k], source[k]) for k in source)
    assert_input_error(invoke("evaluate", "--checkpoint", out), "is an exported model")


def test_a_derived_checkpoint_without_its_root_says_where_the_root_was(forgotten, trained, work):
    moved = work / "moved-away"
    trained.rename(moved)
    try:
        assert_input_error(invoke("evaluate", "--checkpoint", forgotten[0]), "was unlearned from", "is missing")
    finally:
        moved.rename(trained)


def test_a_person_written_pair_file_spans_the_splits(trained, work):
    _, _, data, _ = load_checkpoint(trained)
    pairs = user_pairs(data, "7")
    rows = []
    for split in ("train", "valid"):
        p = pairs[split]
        rows += [(str(data.user_ids.label([u])[0]), str(data.item_ids.label([i])[0]))
                 for u, i in zip(p.users[:2], p.items[:2])]
    csv = work / "pairs.csv"
    csv.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in rows))
    out = work / "pairs-request.json"
    result = ok(invoke("request", "make", "--checkpoint", trained, "--pairs", csv, "--out", out))
    assert "edges erasure: 2 training edges to unlearn, 2 validation and 0 test" in result.stdout


# ------------------------------------------------------------------------------------------------ --out

def test_out_that_is_not_a_checkpoint_is_never_replaced(trained, user_request, work):
    folder = work / "my-photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_text("precious")
    for extra in ([], ["--overwrite"]):
        result = invoke("unlearn", "--checkpoint", trained, "--request", user_request[0], "--out", folder,
                        "--quiet", *extra)
        assert_input_error(result, str(folder), "exists")
        assert (folder / "holiday.jpg").read_text() == "precious"
    file = work / "notes.txt"
    file.write_text("keep")
    assert_input_error(invoke("export", trained, "--out", file), "exists")
    assert file.read_text() == "keep" and not list(work.glob(".notes.txt*"))


def test_export_never_replaces_the_checkpoint_it_exports(trained, work):
    own = work / "exported-onto-itself"
    shutil.copytree(trained, own)
    before = sorted(p.relative_to(own) for p in own.rglob("*"))
    for extra in ([], ["--overwrite"]):
        assert_input_error(invoke("export", own, "--out", own / ".", *extra), "is the checkpoint itself")
    assert sorted(p.relative_to(own) for p in own.rglob("*")) == before
    ok(invoke("evaluate", "--checkpoint", own))   # still a working checkpoint, not an exported one


def test_existing_checkpoint_is_replaced_only_with_overwrite(trained, work):
    out = work / "export-twice"
    ok(invoke("export", trained, "--out", out))
    assert_input_error(invoke("export", trained, "--out", out), "pass --overwrite")
    ok(invoke("export", trained, "--out", out, "--overwrite"))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "weights.pt"]


# ------------------------------------------------------------------------------------------------ locks

def test_a_second_writer_fails_at_once_naming_the_holder(trained, user_request, work):
    out = work / "locked-out"
    with exclusive(trained, "unlearn"):
        result = invoke("unlearn", "--checkpoint", trained, "--request", user_request[0], "--out", out, "--quiet")
        assert_input_error(result, str(trained.resolve()), f"in use by pid {os.getpid()} (unlearn)")
        result = invoke("prepare", "--checkpoint", trained, *ENCODER)
        assert_input_error(result, "in use by pid")
    assert not out.exists()


def test_two_real_processes_on_one_checkpoint_one_waits_for_nothing(trained, user_request, work):
    """Two `unlearn` processes on the same checkpoint, the second started while the first holds the lock (held
    there by RECUNLEARN_PAUSE until the second has ended): the second fails at once with the lock message and
    writes nothing; the first then completes its checkpoint."""
    first_out, second_out, go = work / "race-first", work / "race-second", work / "race-go"
    command = [sys.executable, "-c", "from recunlearn.cli import app; app()", "unlearn", "--checkpoint",
               str(trained), "--request", str(user_request[0]), "--quiet", "--out"]
    first = subprocess.Popen(command + [str(first_out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "RECUNLEARN_PAUSE": f"locked:unlearn={go}"})
    lock = lock_file(trained)
    deadline = time.monotonic() + 300
    while not (lock.is_file() and lock.read_text().startswith(f"pid {first.pid} ")):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first process never took the lock"
        time.sleep(0.05)
    second = subprocess.run(command + [str(second_out)], capture_output=True, text=True, timeout=300)
    go.touch()
    first_err = first.communicate(timeout=600)[1]
    assert second.returncode == 2, second.stderr
    assert f"is in use by pid {first.pid} (unlearn)" in second.stderr and "Traceback" not in second.stderr
    assert not second_out.exists()
    assert first.returncode == 0, first_err
    load_checkpoint(first_out)


# ------------------------------------------------------------------------------------------ damaged files

def test_damaged_checkpoints_give_one_line_errors(trained, work):
    def damaged(name: str) -> Path:
        copy = work / name
        shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("unlearners", "erasures"))
        return copy

    truncated = damaged("truncated")
    data = (truncated / "weights.pt").read_bytes()
    (truncated / "weights.pt").write_bytes(data[: len(data) // 2])
    assert_input_error(invoke("evaluate", "--checkpoint", truncated), "weights.pt", "damaged or truncated")
    empty = damaged("empty-weights")
    (empty / "weights.pt").write_bytes(b"")
    assert_input_error(invoke("evaluate", "--checkpoint", empty), "weights.pt")
    code = damaged("code")

    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"x": Payload()}, code / "weights.pt")
    line = assert_input_error(invoke("evaluate", "--checkpoint", code), "refused to load")
    assert "weights_only=False" not in line
    no_run = damaged("no-run")
    meta = json.loads((no_run / "config.json").read_text())
    del meta["run"]
    (no_run / "config.json").write_text(json.dumps(meta))
    assert_input_error(invoke("evaluate", "--checkpoint", no_run), "config.json", "no run")


# --------------------------------------------------------------------------------------------- threads

def test_threads_is_a_global_option(trained):
    before = torch.get_num_threads()
    try:
        ok(invoke("--threads", "1", "evaluate", "--checkpoint", trained, "--json"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_k_is_capped_at_the_unseen_items_with_a_note(trained):
    _, _, data, _ = load_checkpoint(trained)
    result = ok(invoke("recommend", "--checkpoint", trained, "--user", "7", "-k", str(data.n_items), "--json"))
    record = json.loads(result.stdout)
    (user,) = data.user_ids.index(["7"], kind="user")
    seen = data.train.union(data.valid)
    unseen = data.n_items - int(seen.user_degree()[user])
    assert len(record["recommendations"]) == unseen
    assert record["notes"] == [f"user 7 has {unseen} unseen items: the list stops there"]
    items = data.item_ids.index([r["item"] for r in record["recommendations"]], kind="item")
    assert not seen.contains(np.full(len(items), user), items).any()


# ------------------------------------------------------------------------------------ killed processes

@pytest.fixture(scope="module")
def killable(work, data_root):
    """A trained, prepared checkpoint of its own (the kill tests replace folders in it)."""
    out = work / "killable"
    ok(invoke("train", "--dataset", "ml-100k", "--model", "lightgcn", *TRAIN, "--out", out))
    ok(invoke("prepare", "--checkpoint", out, *ENCODER))
    request = work / "killable-request.json"
    ok(invoke("request", "make", "--checkpoint", out, "--spec", "random:0.01", "--out", request))
    return out, request


UNLEARN_POINTS = ["unlearn:after-erasure-record", "state:before-rename", "unlearn:after-state",
                  "checkpoint:before-rename"]


@pytest.mark.parametrize("fault", UNLEARN_POINTS)
def test_unlearn_killed_at_each_step_leaves_the_old_state_and_the_next_run_completes(killable, work, fault,
                                                                                    data_root):
    source, request = killable
    out = work / f"killed-{fault.replace(':', '-')}"
    killed = cli_process("unlearn", "--checkpoint", source, "--request", request, "--out", out, "--quiet",
                         fault=fault, env_extra={"RECUNLEARN_DATA": str(data_root)})
    assert killed.returncode == -9, killed.stderr
    assert not out.exists()                        # nothing at the path: the checkpoint is written last
    load_checkpoint(source)                        # the source still loads and can be unlearned
    again = cli_process("unlearn", "--checkpoint", source, "--request", request, "--out", out, "--quiet",
                        env_extra={"RECUNLEARN_DATA": str(data_root)})
    assert again.returncode == 0, again.stderr
    _, _, data, _ = load_checkpoint(out)
    assert not list(out.parent.glob(f".{out.name}.*"))
    # and the new checkpoint can itself be unlearned further (its method state was written before it)
    more = work / f"{out.name}-more.json"
    ok(invoke("request", "make", "--checkpoint", out, "--spec", "random:0.005", "--seed", "3", "--out", more))
    ok(invoke("unlearn", "--checkpoint", out, "--request", more, "--out", work / f"{out.name}-2", "--quiet"))


@pytest.mark.parametrize("fault", ["checkpoint:between-renames", "checkpoint:before-cleanup"])
def test_replacing_a_checkpoint_killed_between_renames_is_recovered(killable, work, fault, data_root):
    source, request = killable
    out = work / f"replaced-{fault.replace(':', '-')}"
    ok(invoke("unlearn", "--checkpoint", source, "--request", request, "--out", out, "--quiet"))
    first = read_meta(out)
    killed = cli_process("unlearn", "--checkpoint", source, "--request", request, "--out", out, "--overwrite",
                         "--quiet", "--set", "finetune_epochs=0.1", fault=fault,
                         env_extra={"RECUNLEARN_DATA": str(data_root)})
    assert killed.returncode == -9, killed.stderr
    # a reader finds a complete checkpoint at the path: the new one (moved into place) or the old one
    meta = read_meta(out)
    assert meta["dataset_hash"] == first["dataset_hash"]
    load_checkpoint(out)
    assert not list(out.parent.glob(f".{out.name}.*"))


def test_re_prepare_killed_between_renames_keeps_a_working_state(killable, work, data_root):
    source, request = killable
    killed = cli_process("prepare", "--checkpoint", source, *ENCODER, fault="prepare:between-renames",
                         env_extra={"RECUNLEARN_DATA": str(data_root)})
    assert killed.returncode == -9, killed.stderr
    out = work / "after-killed-prepare"
    result = cli_process("unlearn", "--checkpoint", source, "--request", request, "--out", out, "--quiet",
                         env_extra={"RECUNLEARN_DATA": str(data_root)})
    assert result.returncode == 0, result.stderr
    assert "recovered" in result.stderr
    load_checkpoint(out)


def test_train_killed_before_its_rename_leaves_nothing_at_the_path(work, data_root):
    out = work / "killed-train"
    killed = cli_process("train", "--dataset", "ml-100k", *TRAIN, "--set", "train.epochs=1", "--out", out,
                         fault="checkpoint:before-rename", env_extra={"RECUNLEARN_DATA": str(data_root)})
    assert killed.returncode == -9
    assert not out.exists()
    result = cli_process("train", "--dataset", "ml-100k", *TRAIN, "--set", "train.epochs=1", "--out", out,
                         env_extra={"RECUNLEARN_DATA": str(data_root)})
    assert result.returncode == 0, result.stderr
    assert not list(work.glob(".killed-train.*"))


def test_a_missing_request_file_is_named_without_unrelated_advice(trained, work):
    result = invoke("unlearn", "--checkpoint", trained, "--request", work / "no-such.json", "--out", work / "z")
    line = assert_input_error(result, "no-such.json does not exist", "check the path")
    assert "RECUNLEARN_DATA" not in line
    assert not (work / "z").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_an_unwritable_out_folder_is_one_line(trained, work):
    locked = work / "read-only"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = invoke("export", trained, "--out", locked / "model")
        assert_input_error(result, "permission denied")
    finally:
        locked.chmod(0o700)


def test_request_make_never_replaces_a_file_silently(trained, work):
    out = work / "kept.json"
    out.write_text("mine")
    assert_input_error(invoke("request", "make", "--checkpoint", trained, "--user", USER, "--out", out),
                       "exists", "--overwrite")
    assert out.read_text() == "mine"
    ok(invoke("request", "make", "--checkpoint", trained, "--user", USER, "--out", out, "--overwrite"))
    assert json.loads(out.read_text())["kind"] == "user"
    assert_input_error(invoke("request", "make", "--checkpoint", trained, "--user", USER, "--out", work,
                              "--overwrite"), "is a folder")


def test_a_permission_error_is_one_line_naming_the_path(trained, work, monkeypatch):
    """(Also where tests run as root, whom permissions do not bind: the error is raised on purpose.)"""
    from recunlearn import storage

    target = work / "denied" / "model"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(target.parent))

    monkeypatch.setattr(storage.Path, "mkdir", refuse)
    line = assert_input_error(invoke("export", trained, "--out", target), "permission denied")
    assert str(target.parent) in line


def test_an_empty_state_file_is_one_line_not_aborted(trained, work):
    copy = work / "empty-state"
    shutil.copytree(trained, copy)
    _, _, data, _ = load_checkpoint(trained)
    (copy / "unlearners" / "unlearnrec" / data.hash / "forgotten.npz").write_bytes(b"")
    request = work / "for-empty-state.json"
    ok(invoke("request", "make", "--checkpoint", copy, "--spec", "random:0.01", "--out", request))
    result = invoke("unlearn", "--checkpoint", copy, "--request", request, "--out", work / "never", "--quiet")
    assert result.exit_code == 2 and "Aborted" not in result.output
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert not (work / "never").exists()
