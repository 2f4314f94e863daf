"""MMRecUn from the command line: a modality constraint and an item take-down unlearned with reverse BPR into
plain checkpoints, which record the withdrawal and the removal only as hashes, rebuild them from the root's
erasure record at every load, and compose.

A small FREEDOM model on ml-100k with image features of our own (a seeded .npy file, row r for item id r),
3 epochs, its projected content added to the item-item propagation (so that scores read every feature row the
model may use, not only through the kNN graph). The chain: root -> U1 (the image features of 10% of the items
withdrawn) -> U2 (1% of the items taken down) -> U3 (the image features of 5% more withdrawn).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recunlearn.bench.measure import takedown_in_top
from recunlearn.cli import app
from recunlearn.erasure import checkpoint_scorer
from recunlearn.train.checkpoint import catalogue_removed, load_checkpoint, read_meta
from recunlearn.unlearn.base import REMOVED_SCORE
from cli_helpers import assert_input_error, json_leaves, tensors_in

TRAIN = ["--quiet", "--set", "train.epochs=3", "--set", "train.batch_size=8192", "--set", "train.lr=0.01",
         "--set", "model.dim=32", "--set", "model.content_in_graph=true"]
UNLEARN = ["--method", "reverse-bpr", "--quiet"]
FEATURE_SEED = 0

pytestmark = pytest.mark.usefixtures("isolated_model_cache", "isolated_locks")


def invoke(*args):
    return CliRunner().invoke(app, ["--threads", "1", *map(str, args)])


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def all_scores(checkpoint: Path) -> torch.Tensor:
    model, _, data, _ = load_checkpoint(checkpoint)
    return checkpoint_scorer(checkpoint, model).score_users(torch.arange(data.n_users))


# --------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def work(data_root, tmp_path_factory):
    return tmp_path_factory.mktemp("mmrecun")


@pytest.fixture(scope="module")
def features(work) -> Path:
    """The root's image feature source: 16 random numbers per item id (ml-100k ids run 1..1682)."""
    path = work / "image.npy"
    np.save(path, np.random.default_rng(FEATURE_SEED).normal(size=(1683, 16)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def root(work, features):
    out = work / "root"
    ok(invoke("train", "--dataset", "ml-100k", "--model", "freedom", "--set", f"data.feature_files.image={features}",
              *TRAIN, "--out", out))
    return out


def unlearned(work: Path, source: Path, name: str, *spec: str) -> tuple[Path, Path]:
    request, out = work / f"{name}.json", work / name
    ok(invoke("request", "make", "--checkpoint", source, "--spec", *spec, "--out", request))
    ok(invoke("unlearn", "--checkpoint", source, "--request", request, "--out", out, *UNLEARN))
    return out, request


@pytest.fixture(scope="module")
def u1(work, root):
    return unlearned(work, root, "u1", "modality:image:0.1")


@pytest.fixture(scope="module")
def u2(work, u1):
    return unlearned(work, u1[0], "u2", "item:0.01")


@pytest.fixture(scope="module")
def u3(work, u2):
    return unlearned(work, u2[0], "u3", "modality:image:0.05", "--seed", "1")


def request_items(request: Path, key: str = "withdrawn") -> np.ndarray:
    record = json.loads(request.read_text())
    if key == "withdrawn":
        return np.sort(np.asarray(record["withdrawn"]["image"]["item_index"], np.int64))
    return np.unique(np.asarray(record["edges"]["item_index"], np.int64))


# ------------------------------------------------------------------------------------------- the chain

def test_withdrawals_accumulate_and_removals_carry_over(root, u1, u2, u3):
    first, taken, second = request_items(u1[1]), request_items(u2[1], "edges"), request_items(u3[1])
    _, _, data, _ = load_checkpoint(u3[0])
    assert np.array_equal(data.withdrawn["image"], np.union1d(first, second))
    assert np.array_equal(catalogue_removed(u2[0]), taken) and np.array_equal(catalogue_removed(u3[0]), taken)
    assert len(catalogue_removed(u1[0])) == 0 and len(catalogue_removed(root)) == 0
    lineage = read_meta(u3[0])["lineage"]
    assert lineage["withdrawn"] == {"image": len(np.union1d(first, second))} and lineage["removed"] == len(taken)
    assert read_meta(u3[0])["unlearned"]["withdrawn"] == {"image": len(np.setdiff1d(second, first))}


def test_loading_rebuilds_the_model_that_was_measured(u1, u2, u3):
    """The rebuilt model scores as the one `unlearn` measured, which reads neither a withdrawn row nor a removed
    item: their masks are set and they have no link in the item-item graph."""
    for out, _ in (u1, u2, u3):
        model, _, data, meta = load_checkpoint(out)
        unread = np.union1d(data.withdrawn["image"], catalogue_removed(out))
        mask = model.withdrawn_mask("image").numpy()
        assert np.array_equal(np.flatnonzero(mask), unread)
        graph = model.item_graph().to_dense()
        assert graph[unread].abs().sum() == 0 and graph[:, unread].abs().sum() == 0
        evaluated = json.loads(ok(invoke("evaluate", "--checkpoint", out, "--k", "20", "--json")).stdout)
        assert evaluated["metrics"]["Recall@20"] == pytest.approx(meta["metrics"]["test"]["Recall@20"], abs=1e-6)


def test_withdrawn_and_removed_feature_rows_reach_no_score(u3, features):
    """New values in the root's feature file for the withdrawn and removed items move no score of the loaded
    model; the same change to rows still in use does (the check can fail)."""
    out = u3[0]
    _, _, data, _ = load_checkpoint(out)
    unread = np.union1d(data.withdrawn["image"], catalogue_removed(out))
    kept = np.setdiff1d(np.arange(data.n_items), unread)[:5]
    before = all_scores(out)
    original = np.load(features)
    try:
        for items, moves in ((unread, False), (kept, True)):
            changed = original.copy()
            changed[data.item_ids.label(items)] += 5.0
            np.save(features, changed)
            after = all_scores(out)
            if moves:
                assert not torch.allclose(after, before)
            else:
                torch.testing.assert_close(after, before, rtol=0, atol=0)
    finally:
        np.save(features, original)


@pytest.fixture(scope="module")
def still_ranking(work, u2):
    """U2 with the taken-down items' rows pointed along the users' mean embedding: a model that ranks them first
    for most users, which only the catalogue removal recorded for U2 keeps out of every list."""
    out = work / "u2-still-ranking"
    shutil.copytree(u2[0], out)
    model, _, _, _ = load_checkpoint(out)
    users, _ = model.final_embeddings()
    weights = torch.load(out / "weights.pt", weights_only=True)
    rows = torch.from_numpy(catalogue_removed(out) + model.n_users)
    weights["embedding.weight"][rows] = 1e3 * torch.nn.functional.normalize(users.mean(0), dim=0)
    torch.save(weights, out / "weights.pt")
    model, _, data, _ = load_checkpoint(out)
    assert takedown_in_top(model, data, catalogue_removed(out), k=20)["takedown_in_top20"] > 0
    return out


def test_recommend_never_lists_a_removed_item(still_ranking):
    _, _, data, _ = load_checkpoint(still_ranking)
    removed = catalogue_removed(still_ranking)
    labels = set(data.item_ids.label(removed).astype(str).tolist())
    users = data.user_ids.labels.astype(str).tolist()
    listed = json.loads(ok(invoke("recommend", "--checkpoint", still_ranking, *sum((["--user", u] for u in users), []),
                                  "-k", "20", "--json")).stdout)["recommendations"]
    assert len(listed) == 20 * len(users) and not labels & {r["item"] for r in listed}
    # asked for every item: the list stops before the removed ones
    whole = json.loads(ok(invoke("recommend", "--checkpoint", still_ranking, "--user", users[0], "-k", data.n_items,
                                 "--json")).stdout)
    assert not labels & {r["item"] for r in whole["recommendations"]}
    seen = data.train.union(data.valid)
    assert len(whole["recommendations"]) == data.n_items - len(np.union1d(seen.items[seen.users == 0], removed))


def test_the_service_never_recommends_a_removed_item(still_ranking, tmp_path):
    """`GET /v1/recommendations` on a published take-down version: the catalogue removal holds there too."""
    from fastapi.testclient import TestClient

    from recunlearn.service.api import create_app
    from recunlearn.service.ledger import open_ledger
    from recunlearn.service.publisher import folder_sha256
    from recunlearn.service.settings import ServiceSettings
    from recunlearn.service.versions import publish_version

    settings = ServiceSettings(state_dir=tmp_path / "state", require_tokens=False)
    ledger = open_ledger(settings.ledger_url())
    with ledger.writing() as session:
        publish_version(session, parent=None, kind="initial", path=str(still_ranking),
                        sha256=folder_sha256(still_ranking))
    _, _, data, _ = load_checkpoint(still_ranking)
    removed = catalogue_removed(still_ranking)
    labels = set(data.item_ids.label(removed).astype(str).tolist())
    seen = data.train.union(data.valid)
    with TestClient(create_app(settings, ledger)) as client:
        for user in data.user_ids.labels.astype(str).tolist()[:50]:
            answer = client.get(f"/v1/recommendations/{user}", params={"k": 20})
            assert answer.status_code == 200 and len(answer.json()["items"]) == 20
            assert not labels & set(answer.json()["items"])
        whole = client.get(f"/v1/recommendations/{data.user_ids.labels[0]}", params={"k": data.n_items}).json()
    assert not labels & set(whole["items"])
    assert len(whole["items"]) == data.n_items - len(np.union1d(seen.items[seen.users == 0], removed))
    ledger.dispose()


def test_evaluate_ranks_through_the_catalogue(still_ranking, monkeypatch):
    from recunlearn.train import runs

    ranked = []

    def spy(scorer, dataset, ks=(10, 20)):
        ranked.append(scorer)
        return real(scorer, dataset, ks)

    real = runs.test_metrics
    monkeypatch.setattr(runs, "test_metrics", spy)
    ok(invoke("evaluate", "--checkpoint", still_ranking, "--json"))
    _, _, data, _ = load_checkpoint(still_ranking)
    (scorer,) = ranked
    assert takedown_in_top(scorer, data, catalogue_removed(still_ranking), k=20)["takedown_in_top20"] == 0


def test_audit_scores_the_taken_down_items_out_of_the_catalogue(u1, u2):
    report = json.loads(ok(invoke("audit", "--checkpoint", u2[0], "--original", u1[0], "--request", u2[1],
                                  "--json", "--quiet")).stdout)
    assert report["forget_score_mean"] == pytest.approx(REMOVED_SCORE)
    assert report["verdict"]["status"] in ("pass", "warn", "fail")


@pytest.mark.parametrize("method", ["gradient-ascent", "suppress"])
def test_a_method_that_cannot_withdraw_features_refuses_a_modality_constraint(root, u1, work, method):
    out = work / f"refused-{method}"
    assert_input_error(invoke("unlearn", "--checkpoint", root, "--request", u1[1], "--out", out, "--method", method,
                              "--quiet"), method, "--method reverse-bpr")
    assert not out.exists()


def test_a_modality_constraint_has_nothing_to_audit(root, u1):
    assert_input_error(invoke("audit", "--checkpoint", u1[0], "--original", root, "--request", u1[1], "--quiet"),
                       "modality constraint", "nothing to audit", "recunlearn evaluate")


# --------------------------------------------------------------------------- what the checkpoints hold

def test_the_checkpoints_hold_no_list_or_mask_of_the_withdrawn_or_removed_items(root, u1, u2, u3, work):
    _, _, data, _ = load_checkpoint(u3[0])
    named = [data.withdrawn["image"], catalogue_removed(u3[0]), request_items(u1[1]), request_items(u3[1])]
    for out, _ in (u1, u2, u3):
        assert sorted(p.name for p in out.rglob("*")) == ["config.json", "weights.pt"]
        assert not [key for key in torch.load(out / "weights.pt", weights_only=True) if key.startswith("withdrawn")]
        for tensor in tensors_in(out):
            if tensor.is_floating_point():
                continue
            assert tensor.shape[-1:] != (data.n_items,), "a per-item mask or list is stored"
            values = tensor.flatten().numpy()
            assert not any(len(items) and np.isin(items, values).all() for items in named)
        meta = json.loads((out / "config.json").read_text())
        assert all(not isinstance(v, list) or len(v) < 10 for v in json_leaves(meta))
    shipped = work / "u3-shipped"
    ok(invoke("export", u3[0], "--out", shipped))
    lineage = json.loads((shipped / "config.json").read_text())["lineage"]
    assert {"withdrawn_sha256", "withdrawn", "removed_sha256", "removed"} <= set(lineage)
    # the lists live in the root's working store, one record per derived checkpoint
    assert len(list((root / "erasures").glob("*.npz"))) == 3


def record_of(root: Path, out: Path) -> Path:
    meta = read_meta(out)
    (record,) = (root / "erasures").glob(f"{meta['dataset_hash']}*.npz")
    return record


@pytest.mark.parametrize("altered", ["withdrawn_image", "removed_items"])
def test_an_altered_erasure_record_is_one_line_at_load(root, u2, altered):
    record = record_of(root, u2[0])
    kept = record.read_bytes()
    with np.load(record) as z:
        arrays = {key: z[key] for key in z.files}
    arrays[altered] = arrays[altered][1:]     # one item quietly dropped from the record
    try:
        np.savez(record, **arrays)
        what = "withdrawn features" if altered.startswith("withdrawn") else "removed items"
        assert_input_error(invoke("evaluate", "--checkpoint", u2[0]), what, str(record),
                           "do not match the recorded hash")
        assert_input_error(invoke("recommend", "--checkpoint", u2[0], "--user", "1"), "do not match")
    finally:
        record.write_bytes(kept)
    ok(invoke("evaluate", "--checkpoint", u2[0]))
