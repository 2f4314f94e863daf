"""Named datasets (real statistics), the user's own files, and downloading (never over the network)."""
from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest

from recunlearn.data import download
from recunlearn.data.download import Remote, download_file
from recunlearn.data.interactions import DataError
from recunlearn.data.registry import (clear_cache, data_root, dataset_status, list_datasets, load_dataset,
                                      load_files)
from recunlearn.data.split import users_without_train


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporary files a download may have left behind."""
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


def write_lightgcn(folder: Path, train: str, test: str, gz: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train.txt", train), ("test.txt", test)):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (folder / name).write_text(text)


# ------------------------------------------------------------------------------------------------ names

def test_list_datasets():
    assert list_datasets() == ["gowalla", "ml-100k", "ml-1m", "tiktok", "yelp2018"]


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match=r"unknown dataset 'movielens'; known datasets: gowalla, ml-100k, ml-1m, "
                                        r"tiktok, yelp2018"):
        load_dataset("movielens")


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("RECUNLEARN_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("RECUNLEARN_DATA")
    assert data_root() == Path.home() / ".cache" / "recunlearn" / "data"


# ------------------------------------------------------------------------------------------- real datasets

def test_ml100k(data_root):
    ds = load_dataset("ml-100k", data_root)
    assert (ds.name, ds.n_users, ds.n_items) == ("ml-100k", 943, 1682)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (80_808, 9_596, 9_596)
    star_wars = ds.item_ids.index([50])[0]
    assert ds.item_info.loc[star_wars, "title"] == "Star Wars (1977)"
    assert ds.item_info.loc[star_wars, "genres"] == ["Action", "Adventure", "Romance", "Sci-Fi", "War"]
    assert list(ds.item_info.index) == list(range(1682))
    assert ds.user_info.loc[ds.user_ids.index([1])[0]].tolist() == [24, "M", "technician", "85711"]
    assert ds.modalities == {}


def test_loading_is_cached_per_name_root_and_seed(data_root):
    first = load_dataset("ml-100k", data_root)
    assert load_dataset("ml-100k", data_root) is first
    assert load_dataset("ml-100k", str(data_root)) is first
    other = load_dataset("ml-100k", data_root, seed=1)
    assert other is not first and other.hash != first.hash
    assert np.array_equal(other.user_ids.labels, first.user_ids.labels)
    clear_cache()
    again = load_dataset("ml-100k", data_root)
    assert again is not first and again.hash == first.hash


def test_root_from_environment(data_root, monkeypatch):
    monkeypatch.setenv("RECUNLEARN_DATA", str(data_root))
    assert load_dataset("ml-100k") is load_dataset("ml-100k", data_root)


def test_ml1m_shipped_split(data_root):
    ds = load_dataset("ml-1m", data_root)
    assert (ds.n_users, ds.n_items) == (6040, 3706)
    assert len(ds.train) + len(ds.valid) == 800_167 and len(ds.test) == 200_042
    assert len(ds.valid) == int((ds.train.user_degree() + ds.valid.user_degree()).__floordiv__(10).sum())
    assert ds.test.user_degree()[ds.user_ids.index([4463])[0]] == 0  # the one user without a test line
    assert int(((ds.train.item_degree() + ds.valid.item_degree()) == 0).sum()) == 23  # items only in test
    # the LightGCN files hold GroupLens ids minus 1; side information is aligned accordingly
    assert ds.item_info.loc[ds.item_ids.index([0])[0], "title"] == "Toy Story (1995)"
    assert ds.user_info.loc[ds.user_ids.index([0])[0], ["gender", "age"]].tolist() == ["F", 1]
    assert ds.item_info["title"].notna().all()


def test_gowalla(data_root):
    ds = load_dataset("gowalla", data_root)
    assert (ds.n_users, ds.n_items) == (29_858, 40_981)
    assert len(ds.train) + len(ds.valid) == 810_128 and len(ds.test) == 217_242
    assert 0.08 < len(ds.valid) / 810_128 < 0.1
    assert ds.user_info.loc[0, "org_id"] == "343"
    assert ds.item_info.shape == (40_981, 1)


def test_tiktok(data_root):
    ds = load_dataset("tiktok", data_root)
    assert (ds.n_users, ds.n_items) == (9_308, 6_710)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (59_541, 3_051, 6_130)
    assert users_without_train(ds).size == 10
    assert set(ds.modalities) == {"image", "audio"}
    for features in ds.modalities.values():
        assert features.shape == (6_710, 128) and features.dtype == np.float32
    raw = np.load(data_root / "tiktok" / "image_feat.npy")
    assert np.array_equal(ds.modalities["image"], raw.astype(np.float32))


def test_dataset_status(tmp_path):
    write_lightgcn(tmp_path / "yelp2018", "0 1 2 3 4 5 6 7 8 9 10\n", "0 11\n")
    rows = {row["dataset"]: row for row in dataset_status(tmp_path)}
    assert set(rows) == set(list_datasets())
    assert rows["yelp2018"]["files"] == "present" and rows["yelp2018"]["users"] == 1
    assert rows["yelp2018"]["train"] + rows["yelp2018"]["valid"] == 10
    assert rows["gowalla"]["files"].startswith("missing") and rows["gowalla"]["users"] == "-"


# ----------------------------------------------------------------------------------------- other layouts

def test_yelp2018_layout_gzipped(tmp_path):
    write_lightgcn(tmp_path / "yelp2018", "0 1 2\n1 2 3 4\n2\n3\n", "0 3\n1 5\n2 1\n", gz=True)
    ds = load_dataset("yelp2018", tmp_path, valid_ratio=0.0)
    assert ds.user_ids.labels.tolist() == [0, 1, 2]  # user 3 has no interaction anywhere
    assert ds.n_items == 5
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (5, 0, 3)
    assert users_without_train(ds).tolist() == [2]


def test_ml1m_from_ratings_dat_is_split_8_1_1(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("".join(f"{u}::{m}::4::97830{m}\n" for u in (1, 2) for m in range(1, 21)))
    (folder / "movies.dat").write_bytes("1::Caf\xe9 (1993)::Comedy\n2::Two (1990)::Drama|War\n".encode("latin-1"))
    ds = load_dataset("ml-1m", tmp_path)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (32, 4, 4)
    assert ds.item_ids.labels[:2].tolist() == [1, 2]  # original GroupLens ids: no offset in this layout
    assert ds.item_info.loc[0, "title"] == "Café (1993)" and ds.item_info.loc[1, "genres"] == ["Drama", "War"]
    assert ds.item_info["title"].isna().sum() == 18  # movies without a line in movies.dat
    assert ds.user_info is None


def test_bad_file_in_a_dataset_names_it(tmp_path):
    write_lightgcn(tmp_path / "gowalla", "0 1 2\n1 x\n", "0 3\n")
    with pytest.raises(DataError, match=r"gowalla/train\.txt, line 2: 'x' is not an integer id"):
        load_dataset("gowalla", tmp_path)


# -------------------------------------------------------------------------------------------- own files

def test_load_files_single_csv(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating\n" + "".join(f"u{u},i{i},5\n" for u in range(3) for i in range(10)))
    ds = load_files(path, seed=1)
    assert ds.name == "ratings"
    assert (ds.n_users, ds.n_items) == (3, 10)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (24, 3, 3)
    assert ds.user_ids.labels.tolist() == ["u0", "u1", "u2"]


def test_load_files_train_test_with_explicit_format(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "train.log").write_text("0 1 2 3 4 5 6 7 8 9 10\n1 1\n")
    (folder / "test.log").write_text("0 11\n1 2\n")
    ds = load_files({"train": folder / "train.log", "test": folder / "test.log"}, "lightgcn", valid_ratio=0.1)
    assert ds.name == "shop"
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (10, 1, 2)


def test_load_files_mixed_formats_and_duplicates(tmp_path):
    (tmp_path / "train.json").write_text('{"1": [1, 2, 2], "2": [1]}')
    (tmp_path / "valid.csv").write_text("user,item\n1,3\n")
    (tmp_path / "test.inter").write_text("user_id:token\titem_id:token\n2\t3\n")
    files = {"train": tmp_path / "train.json", "valid": tmp_path / "valid.csv", "test": tmp_path / "test.inter"}
    with pytest.raises(DataError, match=r"train\.json: duplicate \(user 1, item 2\)"):
        load_files(files)
    ds = load_files(files, on_duplicate="drop", name="mixed")
    assert (ds.name, len(ds.train), len(ds.valid), len(ds.test)) == ("mixed", 3, 1, 1)


# ------------------------------------------------------------------------------------------------ download

def test_download_file_verifies_and_renames(tmp_path):
    source = tmp_path / "source.txt"
    source.write_bytes(b"0 1 2\n")
    dest = tmp_path / "out" / "train.txt"
    dest.parent.mkdir()
    assert download_file(source.as_uri(), dest, md5(b"0 1 2\n")) == dest
    assert dest.read_bytes() == b"0 1 2\n" and leftovers(dest.parent) == []


def test_download_file_with_wrong_checksum_writes_nothing(tmp_path):
    source = tmp_path / "source.txt"
    source.write_bytes(b"tampered\n")
    dest = tmp_path / "out" / "train.txt"
    dest.parent.mkdir()
    with pytest.raises(DataError, match=r"checksum mismatch for file://.*expected 5eec1eb2.*was not written"):
        download_file(source.as_uri(), dest, "5eec1eb2edb8dd648377d348b8e136cf")
    assert list(dest.parent.iterdir()) == []


def ml100k_archive(data_root: Path, tmp_path: Path, u_data: bytes | None = None) -> Remote:
    """A local copy of the GroupLens ml-100k.zip layout, built from the real files."""
    folder = data_root / "ml-100k"
    members = {"u.data": u_data if u_data is not None else gzip.decompress((folder / "u.data.gz").read_bytes())}
    for name in ("u.item", "u.user", "u.genre", "README"):
        members[name] = (folder / name).read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"ml-100k/{name}", data)
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(buffer.getvalue())
    original = download.SOURCES["ml-100k"][0]
    return Remote(archive.as_uri(), md5(buffer.getvalue()), original.files)


def test_missing_dataset_is_downloaded_and_loaded(data_root, tmp_path, monkeypatch):
    monkeypatch.setitem(download.SOURCES, "ml-100k", (ml100k_archive(data_root, tmp_path),))
    root = tmp_path / "data"
    root.mkdir()
    ds = load_dataset("ml-100k", root)
    assert (ds.n_users, ds.n_items, len(ds.train) + len(ds.valid) + len(ds.test)) == (943, 1682, 100_000)
    assert ds.hash == load_dataset("ml-100k", data_root).hash
    assert sorted(p.name for p in (root / "ml-100k").iterdir()) == ["README", "u.data", "u.genre", "u.item", "u.user"]
    assert md5((root / "ml-100k" / "u.data").read_bytes()) == "6e47046882bad158b0efbb84cd5cb987"


def test_corrupt_archive_member_is_not_saved(data_root, tmp_path, monkeypatch):
    bad = b"1\t1\t5\t0\n"
    monkeypatch.setitem(download.SOURCES, "ml-100k", (ml100k_archive(data_root, tmp_path, u_data=bad),))
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DataError, match=r"checksum mismatch for ml-100k/u\.data in the downloaded archive"):
        load_dataset("ml-100k", root)
    assert list(root.iterdir()) == []


def test_offline_error_says_what_where_and_from_where(tmp_path, monkeypatch):
    def no_network(url, timeout):
        raise URLError("no route to host")
    monkeypatch.setattr(download, "urlopen", no_network)
    with pytest.raises(DataError) as err:
        load_dataset("gowalla", tmp_path)
    message = str(err.value)
    assert f"data not found in {tmp_path / 'gowalla'}" in message
    assert "downloading failed (no route to host)" in message
    assert "Put the files train.txt, test.txt in $RECUNLEARN_DATA/gowalla/" in message
    assert "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/gowalla/train.txt" in message
    assert leftovers(tmp_path) == []


def test_interrupted_download_leaves_no_file(tmp_path, monkeypatch):
    class Broken(io.BytesIO):
        headers = {"Content-Length": "100"}

        def read(self, size=-1):
            if self.tell():
                raise ConnectionResetError("connection reset")
            return super().read(4)
    monkeypatch.setattr(download, "urlopen", lambda url, timeout: Broken(b"0 1 2 3 4 5"))
    with pytest.raises(DataError, match=r"downloading failed \(connection reset\)"):
        load_dataset("yelp2018", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_off_gives_the_same_instructions(tmp_path):
    with pytest.raises(DataError, match=r"downloading was turned off") as err:
        load_dataset("ml-1m", tmp_path, download=False)
    message = str(err.value)
    assert "looked for train.txt and test.txt, or ratings.dat" in message
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip (unzip ml-1m/ratings.dat" in message


def test_tiktok_sources_match_the_local_copies(data_root):
    """The recorded checksums are those of the verified files, so a download reproduces them byte for byte."""
    for remote in download.SOURCES["tiktok"]:
        (file,) = remote.files
        assert md5((data_root / "tiktok" / file.name).read_bytes()) == remote.md5
    for remote in download.SOURCES["gowalla"]:
        (file,) = remote.files
        assert md5(gzip.decompress((data_root / "gowalla" / f"{file.name}.gz").read_bytes())) == remote.md5
