"""The unlearning commands end to end on ml-100k: request make, train --inject, prepare, unlearn, audit.

Tiny settings throughout (3 training epochs, one encoder epoch); the trained checkpoints are shared by
the tests of this file through module-scoped fixtures, and the model cache lives in a temporary folder.
"""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recunlearn.cli import app
from recunlearn.data.interactions import DataError, Interactions
from recunlearn.data.registry import load_dataset
from recunlearn.data.requests import SPEC_FORMS, Request, random_request
from recunlearn.train.checkpoint import load_checkpoint, read_meta
from cli_helpers import assert_input_error

TRAIN = ["--quiet", "--set", "train.epochs=3", "--set", "train.batch_size=8192", "--set", "train.lr=0.01"]
ENCODER = ["--quiet", "--set", "epochs=1", "--set", "batch_size=8192", "--set", "lr=0.05"]
NUMBER = r"(-?[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?|nan|inf|-inf)"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def state_meta(checkpoint, data_hash: str, method: str = "unlearnrec") -> dict:
    """The saved method state for the model of `data_hash`, in the working store of `checkpoint`."""
    return json.loads((checkpoint / "unlearners" / method / data_hash / "unlearner.json").read_text())


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def row(output: str, label: str) -> list[float]:
    """The numeric cells of the table row whose first cell is `label`."""
    match = re.search(rf"│\s*{re.escape(label)}\s*│(.*)│", output)
    assert match, f"no row {label!r} in:\n{output}"
    return [float(cell) for cell in match.group(1).split("│")]


def edge_set(edges: Interactions) -> set[tuple[int, int]]:
    return set(zip(edges.users.tolist(), edges.items.tolist()))


def injected_of(path, data) -> Interactions:
    """The edges of a request file, read by their original ids against `data`'s id maps."""
    record = json.loads(path.read_text())
    users = data.user_ids.index(record["edges"]["user"], kind="user")
    items = data.item_ids.index(record["edges"]["item"], kind="item")
    return Interactions.from_arrays(users, items, data.n_users, data.n_items)


# --------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", autouse=True)
def model_cache(isolated_model_cache):
    return isolated_model_cache


@pytest.fixture(scope="module")
def work(data_root, tmp_path_factory):
    return tmp_path_factory.mktemp("cli-unlearn")


@pytest.fixture(scope="module")
def clean(data_root, work):
    ml100k = load_dataset("ml-100k", data_root)
    out = work / "clean"
    ok(invoke("train", "--dataset", "ml-100k", "--model", "lightgcn", *TRAIN, "--out", out))
    return out, ml100k


@pytest.fixture(scope="module")
def random_file(clean, work):
    out = work / "random.json"
    result = ok(invoke("request", "make", "--spec", "random:0.01", "--checkpoint", clean[0], "--out", out))
    return out, result


@pytest.fixture(scope="module")
def adversarial_file(clean, work):
    out = work / "adversarial.json"
    result = ok(invoke("request", "make", "--spec", "adversarial:1.0", "--checkpoint", clean[0], "--out", out))
    return out, result


@pytest.fixture(scope="module")
def poisoned(adversarial_file, work):
    out = work / "poisoned"
    result = ok(invoke("train", "--dataset", "ml-100k", "--model", "lightgcn", *TRAIN,
                       "--inject", adversarial_file[0], "--out", out))
    return out, result


@pytest.fixture(scope="module")
def prepared(clean):
    out, _ = clean
    result = ok(invoke("prepare", "--checkpoint", out, *ENCODER))
    return out, result


@pytest.fixture(scope="module")
def unlearned(prepared, random_file, work):
    out = work / "unlearned"
    result = ok(invoke("unlearn", "--checkpoint", prepared[0], "--request", random_file[0], "--out", out,
                       "--quiet"))
    return out, result


# ------------------------------------------------------------------------------------------ request make

def test_random_request_file_holds_one_percent_of_the_training_edges(random_file, clean):
    path, result = random_file
    _, data = clean
    record = json.loads(path.read_text())
    assert record["kind"] == "random" and record["dataset"] == "ml-100k"
    assert record["size"] == round(0.01 * len(data.train)) == 808
    assert len(record["edges"]["user"]) == len(record["edges"]["item_index"]) == 808
    assert record["data_hash"] == record["origin_hash"] == data.hash
    request = Request.load(path, data)
    assert len(request) == 808
    assert data.train.contains(request.edges.users, request.edges.items).all()
    # the seeded generator's draw, written with original ids
    assert np.array_equal(request.edges.keys, random_request(data, 0.01, seed=0).edges.keys)
    assert f"random request with 808 edges ({len(request.users())} users" in result.stdout


def test_adversarial_request_injects_new_edges(adversarial_file, clean):
    path, result = adversarial_file
    _, data = clean
    record = json.loads(path.read_text())
    assert record["kind"] == "adversarial"
    assert record["origin_hash"] == data.hash and record["data_hash"] != data.hash
    injected = injected_of(path, data)
    users, items = injected.users, injected.items
    assert len(injected) == record["size"]
    # one least-likely edge per user and one per item (fewer where the two coincide)
    assert set(users.tolist()) == set(range(data.n_users))
    assert set(items.tolist()) >= set(np.flatnonzero(data.train.item_degree() > 0).tolist())
    assert max(data.n_users, data.n_items) < record["size"] <= data.n_users + data.n_items
    for split in (data.train, data.valid, data.test):
        assert not split.contains(users, items).any()
    assert f"adversarial request with {record['size']} edges" in result.stdout


def test_train_inject_trains_on_the_poisoned_graph(poisoned, adversarial_file, clean):
    out, result = poisoned
    _, data = clean
    injected = injected_of(adversarial_file[0], data)
    expected = data.train.union(injected)
    assert len(expected) == len(data.train) + len(injected)
    meta = read_meta(out)
    assert meta["train_hash"] == expected.hash and meta["data_hash"] == data.hash
    # reloading rebuilds exactly the poisoned training set; valid and test are untouched
    _, _, reloaded, _ = load_checkpoint(out)
    assert np.array_equal(reloaded.train.keys, expected.keys)
    assert np.array_equal(reloaded.test.keys, data.test.keys)
    assert reloaded.hash == json.loads(adversarial_file[0].read_text())["data_hash"]
    assert f"checkpoint written to {out}" in result.stdout


def test_adversarial_request_loads_against_the_poisoned_checkpoint_only(poisoned, adversarial_file, clean):
    _, _, poisoned_data, _ = load_checkpoint(poisoned[0])
    request = Request.load(adversarial_file[0], poisoned_data)
    assert np.array_equal(poisoned_data.train.subtract(request.edges).keys, clean[1].train.keys)
    # against the clean data the injected edges are not training edges
    with pytest.raises(DataError, match="adversarial request deletes injected edges"):
        Request.load(adversarial_file[0], clean[1])


# ---------------------------------------------------------------------------------------------- prepare

def test_prepare_writes_the_method_state_next_to_the_checkpoint(prepared, clean):
    out, result = prepared
    meta = state_meta(out, clean[1].hash)
    assert meta["method"] == "unlearnrec"
    assert meta["config"]["epochs"] == 1 and meta["config"]["lr"] == 0.05
    assert meta["original_train_hash"] == clean[1].train.hash and meta["prepare_seconds"] > 0
    assert "unlearnrec prepared in" in result.stdout


# ---------------------------------------------------------------------------------------------- unlearn

def test_unlearn_writes_a_checkpoint_of_the_residual_model(unlearned, random_file, clean):
    out, result = unlearned
    _, data = clean
    request = Request.load(random_file[0], data)
    residual = data.train.subtract(request.edges)
    assert len(residual) == len(data.train) - 808
    meta = read_meta(out)
    assert meta["train_hash"] == residual.hash
    assert meta["lineage"]["root"] == str(clean[0].resolve()) and meta["lineage"]["parent"] == str(clean[0].resolve())
    assert meta["lineage"]["erased"] == {"train": 808, "valid": 0, "test": 0}
    assert meta["unlearned"]["method"] == meta["lineage"]["method"] == "unlearnrec"
    assert str(random_file[0]) not in json.dumps(meta)      # not even the request file's name
    model, _, reloaded, _ = load_checkpoint(out)
    assert np.array_equal(reloaded.train.keys, residual.keys)
    assert np.array_equal(reloaded.valid.keys, data.valid.keys) and np.array_equal(reloaded.test.keys, data.test.keys)
    # the state for the next request stays in the original model's working store, keyed by the new data
    state = state_meta(clean[0], reloaded.hash)
    assert state["forgotten_hash"] == request.edges.hash
    assert f"unlearned checkpoint written to {out}" in result.stdout


def test_unlearn_prints_before_and_after_and_lowers_the_request_scores(unlearned, clean, random_file):
    out, result = unlearned
    _, data = clean
    assert "unlearnrec forgot 808 edges in" in result.stdout and "zero_shot" in result.stdout
    assert row(result.stdout, "training edges") == [len(data.train), len(data.train) - 808]
    before, after = row(result.stdout, "request-edge mean score")
    assert np.isfinite([before, after]).all()
    assert after < before
    # the numbers are those of the two checkpoints
    request = Request.load(random_file[0], data).edges
    pairs = (torch.from_numpy(request.users), torch.from_numpy(request.items))
    original, *_ = load_checkpoint(clean[0])
    model, *_ = load_checkpoint(out)
    assert original.score_pairs(*pairs).mean().item() == pytest.approx(before, abs=1e-4)
    assert model.score_pairs(*pairs).mean().item() == pytest.approx(after, abs=1e-4)
    recall_before, recall_after = row(result.stdout, "test Recall@20")
    assert 0.05 < recall_before < 0.5 and 0.05 < recall_after < 0.5
    assert read_meta(out)["metrics"]["test"]["Recall@20"] == pytest.approx(recall_after, abs=5e-5)


def test_unlearning_the_same_request_twice_is_refused(unlearned, clean, random_file, work):
    again = work / "unlearned-twice"
    result = invoke("unlearn", "--checkpoint", unlearned[0], "--request", random_file[0], "--out", again, "--quiet")
    assert_input_error(result, "is not a training interaction", "deleted from the training set earlier")
    assert not again.exists()


def test_requests_compose_through_the_unlearned_checkpoint(unlearned, clean, random_file, work):
    """A second request continues from the first one's checkpoint and its method state."""
    _, data = clean
    first = Request.load(random_file[0], data)
    _, _, after_first, _ = load_checkpoint(unlearned[0])
    second_file = work / "second.json"
    ok(invoke("request", "make", "--spec", "random:0.005", "--seed", "7", "--checkpoint", unlearned[0],
              "--out", second_file))
    second = Request.load(second_file, after_first)
    out = work / "unlearned-second"
    ok(invoke("unlearn", "--checkpoint", unlearned[0], "--request", second_file, "--out", out, "--quiet"))
    meta = read_meta(out)
    assert meta["lineage"]["root"] == str(clean[0].resolve()) and meta["lineage"]["parent"] == str(unlearned[0].resolve())
    _, _, reloaded, _ = load_checkpoint(out)
    assert reloaded.train.hash == data.train.subtract(first.edges).subtract(second.edges).hash
    assert state_meta(clean[0], reloaded.hash)["forgotten_hash"] == first.edges.union(second.edges).hash


@pytest.mark.parametrize("method", ["finetune", "retrain"])
def test_any_registered_method_unlearns_from_the_command_line(method, clean, random_file, work):
    out = work / f"unlearned-{method}"
    result = ok(invoke("unlearn", "--checkpoint", clean[0], "--method", method, "--request", random_file[0],
                       "--out", out, "--quiet"))
    assert f"{method} forgot 808 edges in" in result.stdout
    meta = read_meta(out)
    assert meta["unlearned"]["method"] == method
    assert meta["train_hash"] == clean[1].train.subtract(Request.load(random_file[0], clean[1]).edges).hash


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_model_trained_on_a_gpu_unlearns_on_a_machine_without_one_with_device_cpu(clean, random_file, work):
    source = work / "gpu-trained"
    shutil.copytree(clean[0], source, ignore=shutil.ignore_patterns("unlearners"))
    meta = json.loads((source / "config.json").read_text())
    meta["run"]["train"]["device"] = "cuda"        # as `train --device cuda` records it
    (source / "config.json").write_text(json.dumps(meta))
    out = work / "gpu-trained-retrained"
    args = ["unlearn", "--checkpoint", source, "--method", "retrain", "--request", random_file[0], "--out", out,
            "--quiet"]
    assert_input_error(invoke(*args), "train.device=cuda", "sees no CUDA GPU", "`--device cpu`")
    assert not out.exists()
    assert_input_error(invoke(*args, "--device", "gpu"), "train.device='gpu' is not a device")
    assert not out.exists()

    ok(invoke(*args, "--device", "cpu"))
    assert read_meta(out)["run"]["train"]["device"] == "cuda"      # the trained model's record is kept
    on_cpu = work / "cpu-trained-retrained"
    ok(invoke("unlearn", "--checkpoint", clean[0], "--method", "retrain", "--request", random_file[0],
              "--out", on_cpu, "--quiet"))
    retrained, reference = load_checkpoint(out)[0], load_checkpoint(on_cpu)[0]
    for name, tensor in reference.state_dict().items():             # the same CPU retrain
        assert torch.equal(retrained.state_dict()[name], tensor)
    # auditing a Retrain output against the default reference compares the model with itself: said so
    audited = ok(invoke("audit", "--checkpoint", on_cpu, "--original", clean[0], "--request", random_file[0],
                        "--quiet"))
    assert "are the same model; pass --retrain" in audited.stderr


def test_a_method_without_a_model_state_writes_its_serving_state_not_a_checkpoint(clean, random_file, work):
    from recunlearn.train.checkpoint import load_checkpoint
    from recunlearn.unlearn.suppress import SUPPRESSED_SCORE, Suppress

    out = work / "suppressed"
    result = ok(invoke("unlearn", "--checkpoint", clean[0], "--method", "suppress", "--request", random_file[0],
                       "--out", out, "--quiet"))
    assert "no new checkpoint" in result.stdout and "keep it private" in result.stdout
    assert not (out / "config.json").exists() and not (out / "weights.pt").exists()
    edges = Request.load(random_file[0], clean[1]).edges
    with np.load(out / "forgotten.npz") as z:
        assert set(zip(z["users"].tolist(), z["items"].tolist())) == set(zip(edges.users.tolist(), edges.items.tolist()))
    model, _, data, _ = load_checkpoint(clean[0])
    served = Suppress.load(out, model, data).state.scorer          # the state serves around the request
    users, items = torch.from_numpy(edges.users[:50]), torch.from_numpy(edges.items[:50])
    assert (served.score_pairs(users, items) == SUPPRESSED_SCORE).all()


def test_unknown_method_lists_the_registered_ones(clean, random_file, work):
    result = invoke("prepare", "--checkpoint", clean[0], "--method", "sisa-typo", "--quiet")
    assert_input_error(result, "unknown unlearning method 'sisa-typo'", "unlearnrec")


def test_unlearning_the_injected_edges_restores_the_clean_training_set(poisoned, adversarial_file, clean, work):
    """The UnlearnRec protocol: forget exactly the injected edges of the poisoned model."""
    source, _ = poisoned
    # The request touches every user and item: one encoder epoch at lr 0.05 overshoots here (the injected
    # edges then score higher than before), one at lr 0.01 forgets them.
    ok(invoke("prepare", "--checkpoint", source, *ENCODER, "--set", "lr=0.01"))
    _, _, poisoned_data, _ = load_checkpoint(source)
    assert state_meta(source, poisoned_data.hash)["config"]["lr"] == 0.01
    out = work / "poisoned-unlearned"
    result = ok(invoke("unlearn", "--checkpoint", source, "--request", adversarial_file[0], "--out", out, "--quiet"))
    n_injected = json.loads(adversarial_file[0].read_text())["size"]
    assert row(result.stdout, "training edges") == [len(clean[1].train) + n_injected, len(clean[1].train)]
    before, after = row(result.stdout, "request-edge mean score")
    assert after < before - 1.0
    _, _, reloaded, _ = load_checkpoint(out)
    assert np.array_equal(reloaded.train.keys, clean[1].train.keys)
    assert reloaded.hash == clean[1].hash


# ------------------------------------------------------------------------------------------------ audit

def test_audit_reports_forgetting_against_a_retrained_model(unlearned, clean, random_file, work, model_cache):
    out, _ = unlearned
    results = work / "audit.jsonl"
    result = ok(invoke("audit", "--checkpoint", out, "--original", clean[0], "--request", random_file[0],
                       "--json-out", results, "--quiet"))
    assert "audit of" in result.stdout    # the title wraps: the path is long
    # key measures beside Retrain's, with a status each, then a one-line verdict
    verdict_line = result.stdout.strip().splitlines()[-1]
    assert verdict_line.split(":")[0] in ("PASS", "WARN", "FAIL") and "MIA AUC" in verdict_line
    lines = results.read_text().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["checkpoint"] == str(out) and report["request"] == str(random_file[0])
    assert 0.0 <= report["mia_auc"] <= 1.0 and 0.0 <= report["jaccard@20_vs_retrain"] <= 1.0
    assert {"forget_score_mean", "diff_auc", "test_Recall@20", "retrain_test_Recall@20"} <= set(report)
    assert report["audit_edges"] > 0
    assert report["verdict"]["line"] == verdict_line
    checks = {check["measure"]: check for check in report["verdict"]["checks"]}
    assert checks["MIA AUC"]["value"] == report["mia_auc"]
    assert checks["MIA AUC"]["gap"] == pytest.approx(report["mia_auc_gap"])
    assert f"{report['mia_auc']:.4f}" in result.stdout
    # the retrained reference was trained into the temporary cache; a second audit reuses it; --json prints it
    (entry,) = model_cache.glob("lightgcn-*")
    assert read_meta(entry)["train_hash"] == read_meta(out)["train_hash"]
    again = ok(invoke("audit", "--checkpoint", out, "--original", clean[0], "--request", random_file[0],
                      "--json-out", results, "--json", "--quiet"))
    lines = results.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1]) == report == json.loads(again.stdout)
    assert list(model_cache.glob("lightgcn-*")) == [entry]


@pytest.mark.parametrize("command", ["audit", "evaluate"])
def test_a_json_out_that_cannot_be_written_fails_before_any_work(unlearned, clean, random_file, work, model_cache,
                                                                  command):
    out, _ = unlearned
    args = ["--checkpoint", out] + (["--original", clean[0], "--request", random_file[0], "--quiet"]
                                    if command == "audit" else [])
    cached = sorted(model_cache.glob("*"))
    for target, fragment in ((work / "no-such-folder" / "a.jsonl", "does not exist"), (work, "is a folder")):
        assert_input_error(invoke(command, *args, "--json-out", target), "--json-out", fragment)
    assert sorted(model_cache.glob("*")) == cached   # no reference retrain was paid for
    assert not (work / "no-such-folder").exists()


def test_audit_refuses_a_reference_that_is_not_a_retrain_of_the_residual(unlearned, clean, random_file):
    out, _ = unlearned
    result = invoke("audit", "--checkpoint", out, "--original", clean[0], "--request", random_file[0],
                    "--retrain", clean[0], "--quiet")   # the original: it still holds the request
    assert_input_error(result, f"--retrain {clean[0]} was trained on other data than {out}'s residual",
                       "leave --retrain out")


def test_audit_refuses_a_model_that_did_not_forget_this_request(clean, random_file):
    result = invoke("audit", "--checkpoint", clean[0], "--original", clean[0], "--request", random_file[0], "--quiet")
    assert_input_error(result, "not", "with exactly this request forgotten")


# -------------------------------------------------------------------------------------------- bad input

def test_unlearn_without_preparation_says_to_run_prepare(clean, random_file, work):
    bare = work / "bare"
    shutil.copytree(clean[0], bare, ignore=shutil.ignore_patterns("unlearners"))
    result = invoke("unlearn", "--checkpoint", bare, "--request", random_file[0], "--out", work / "x", "--quiet")
    assert_input_error(result, "unlearnrec has not been prepared", "recunlearn prepare --method unlearnrec")
    assert not (work / "x").exists()


@pytest.mark.parametrize("method", ["retrain", "finetune"])
def test_a_request_of_every_training_interaction_is_refused_naming_the_request(clean, work, method):
    everything, out = work / f"everything-{method}.json", work / f"nothing-left-{method}"
    ok(invoke("request", "make", "--spec", "random:1.0", "--checkpoint", clean[0], "--out", everything))
    result = invoke("unlearn", "--checkpoint", clean[0], "--method", method, "--request", everything, "--out", out,
                    "--quiet")
    assert_input_error(result, "the request forgets all", "training interactions", "forget a part of them")
    assert not out.exists()


def test_a_negative_request_seed_is_refused_naming_the_option(work):
    out = work / "negative-seed.json"
    result = invoke("request", "make", "--spec", "random:0.01", "--seed", "-1", "--out", out)
    assert result.exit_code == 2 and "--seed" in result.output and not out.exists()


def test_adversarial_request_needs_the_clean_model(work):
    out = work / "no-model.json"
    result = invoke("request", "make", "--spec", "adversarial:1.0", "--out", out)
    assert_input_error(result, "adversarial request needs the clean model", "--checkpoint")
    assert not out.exists()


@pytest.mark.parametrize("spec", ["random", "random:abc", "random:1.5", "user:0.1:popular", "shuffle:0.1",
                                  "adversarial:1:1:1"])
def test_malformed_spec_lists_the_valid_forms(work, spec):
    out = work / "bad-spec.json"
    result = invoke("request", "make", "--spec", spec, "--out", out)
    line = assert_input_error(result, f"bad request spec {spec!r}")
    for form in SPEC_FORMS:
        assert form in line
    assert not out.exists()


def test_request_for_another_dataset_is_refused(prepared, clean, work):
    other = work / "ml-1m-random.json"
    ok(invoke("request", "make", "--spec", "random:0.001", "--dataset", "ml-1m", "--out", other))
    assert json.loads(other.read_text())["dataset"] == "ml-1m"
    for command in (["unlearn", "--checkpoint", prepared[0], "--out", work / "y"],
                    ["audit", "--checkpoint", prepared[0], "--original", prepared[0]]):
        result = invoke(*command, "--request", other, "--quiet")
        assert_input_error(result, "request made for dataset 'ml-1m'", "this is dataset 'ml-100k'")
    assert not (work / "y").exists()
