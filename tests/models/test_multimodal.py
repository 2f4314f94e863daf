"""The multi-modal backbones: the kNN item graph, withdrawn rows, and content that helps."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from recunlearn.data.graph import build_graph
from recunlearn.data.registry import load_dataset
from recunlearn.eval.ranking import evaluate
from recunlearn.models.modal import knn_adjacency
from recunlearn.models.registry import build_model, model_config
from recunlearn.train.config import RunConfig
from recunlearn.train import runs
from recunlearn.train.trainer import Trainer

from generated import taste_groups


def with_group_features(data, noise: float = 0.3, seed: int = 0):
    """Each item's feature: its taste group (one-hot) plus noise, so that content says who likes it."""
    rng = np.random.default_rng(seed)
    group = (np.arange(data.n_items) >= data.n_items // 2).astype(np.float32)
    features = np.stack([group, 1 - group], axis=1) + noise * rng.standard_normal((data.n_items, 2))
    return replace(data, modalities={"image": features.astype(np.float32)})


def test_knn_graph_is_symmetric_normalised_and_skips_inactive_items():
    features = torch.randn(30, 4)
    active = torch.ones(30, dtype=torch.bool)
    active[[3, 7]] = False
    a = knn_adjacency(features, 5, active).toarray()
    np.testing.assert_allclose(a, a.T, atol=1e-7)
    assert (a[[3, 7]] == 0).all() and (a[:, [3, 7]] == 0).all() and (np.diag(a) == 0).all()
    assert ((a > 0).sum(1)[active.numpy()] >= 5).all()     # k out-links each, more where others link in


@pytest.mark.parametrize("name", ["freedom", "vbpr"])
def test_scores_read_content_except_withdrawn_rows(name):
    data = with_group_features(taste_groups(40, 30, 6))
    torch.manual_seed(0)
    model = build_model(model_config(name, {"dim": 8, "knn_k": 3}), data.n_users, data.n_items, content=data)
    model.attach(build_graph(data.train)).eval()
    with torch.no_grad():   # a trained projection: make content matter for VBPR and FREEDOM's loss alike
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.invalidate()
    users = torch.arange(data.n_users)
    base = model.score_users(users)
    model.withdraw("image", [0, 1, 2])
    withdrawn = model.score_users(users)
    assert not torch.allclose(base, withdrawn)                 # the rows were in use
    # new values in the withdrawn rows reach no score
    moved = data.modalities["image"] + np.where(np.arange(30)[:, None] < 3, 9.0, 0.0).astype(np.float32)
    model.set_content({"image": moved}, {})
    model.invalidate()
    torch.testing.assert_close(model.score_users(users), withdrawn, rtol=0, atol=0)


def test_no_content_is_lightgcn():
    data = with_group_features(taste_groups(40, 30, 6))
    torch.manual_seed(0)
    plain = build_model(model_config("freedom", {"dim": 8, "modalities": []}), data.n_users, data.n_items,
                        content=data)
    torch.manual_seed(0)
    lightgcn = build_model(model_config("lightgcn", {"dim": 8, "layers": 3}), data.n_users, data.n_items)
    graph = build_graph(data.train)
    plain.attach(graph).eval()
    lightgcn.attach(graph).eval()
    torch.testing.assert_close(plain.score_users(torch.arange(5)), lightgcn.score_users(torch.arange(5)))


def test_unknown_modality_is_a_clear_error(data_root):
    tiktok = load_dataset("tiktok", data_root)
    with pytest.raises(ValueError, match="uses the video features, but the data has audio, image"):
        build_model(model_config("freedom", {"modalities": ["video"]}), tiktok.n_users, tiktok.n_items,
                    content=tiktok)


def test_content_helps_where_interactions_are_few():
    """Users with two training items each: the items' features (their taste group) carry what the sparse
    graph cannot, so the model with content ranks the held-out items higher than the same model without."""
    data = with_group_features(taste_groups(120, 60, 4, seed=3))
    recall = {}
    for modalities in (None, []):
        run = RunConfig.model_validate({"model": {"name": "freedom", "dim": 16, "knn_k": 5, "modalities": modalities},
                                        "train": {"epochs": 30, "batch_size": 128, "lr": 0.02, "seed": 0}})
        model, _ = Trainer(run, progress=False, validate=False).fit(data)
        recall[modalities is None] = evaluate(model, data.test, data.train, ks=[10])["Recall@10"]
    assert recall[True] > recall[False] + 0.02


def test_content_beats_no_content_on_tiktok(data_root):
    """The real case: tiktok with image and audio features, the benchmark's training settings (about 40 s on
    one thread: two trainings with early stopping)."""
    tiktok = load_dataset("tiktok", data_root)
    test = {}
    for modalities in (None, []):
        run = RunConfig.model_validate({"model": {"name": "freedom", "modalities": modalities},
                                        "train": {"batch_size": 4096, "lr": 0.01, "patience": 3, "eval_every": 2,
                                                  "epochs": 200, "threads": 1}})
        model, _ = Trainer(run, progress=False).fit(tiktok)
        test[modalities is None] = runs.test_metrics(model, tiktok, [20])["Recall@20"]
    assert test[True] > test[False]
