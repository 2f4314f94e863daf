"""Readers: every format on small generated files, every bad-input case, and the real files' contents."""
from __future__ import annotations

import gzip
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recunlearn.data.interactions import DataError
from recunlearn.data.loaders import (detect_format, load_sparse_pickle, read_csv, read_id_list, read_inter,
                                     read_interactions, read_json, read_lightgcn, read_ml1m_movies, read_ml1m_users,
                                     read_ml100k_items, read_ml100k_users, read_modality, read_parquet,
                                     read_ratings_dat, read_sparse_pickle, read_udata)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    data = text.encode(encoding)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def pairs(frame: pd.DataFrame) -> list[tuple]:
    return list(zip(frame["user"].tolist(), frame["item"].tolist()))


# ------------------------------------------------------------------------------------------------ LightGCN

@pytest.mark.parametrize("name", ["train.txt", "train.txt.gz"])
def test_lightgcn_reads_plain_and_gzip(tmp_path, name):
    frame = read_lightgcn(write(tmp_path / name, "0 5 7\n1 7\n2\n\n3 1 2 3\n"))
    assert pairs(frame) == [(0, 5), (0, 7), (1, 7), (3, 1), (3, 2), (3, 3)]
    assert list(frame.columns) == ["user", "item"]
    assert frame["user"].dtype == np.int64 and frame["item"].dtype == np.int64


def test_lightgcn_user_without_items_gives_no_rows(tmp_path):
    frame = read_lightgcn(write(tmp_path / "t.txt", "4\n5\n"))
    assert frame.empty


def test_lightgcn_non_integer_id_names_line_and_token(tmp_path):
    path = write(tmp_path / "t.txt", "0 1 2\n1 3\n2 4 x5\n")
    with pytest.raises(DataError, match=r"t\.txt, line 3: 'x5' is not an integer id"):
        read_lightgcn(path)


def test_lightgcn_float_id_is_rejected(tmp_path):
    with pytest.raises(DataError, match=r"line 2: '3\.0'"):
        read_lightgcn(write(tmp_path / "t.txt", "0 1\n1 3.0\n"))


def test_lightgcn_duplicate_names_both_lines(tmp_path):
    path = write(tmp_path / "t.txt", "0 1 2\n1 3\n0 2\n")
    with pytest.raises(DataError, match=r"line 3 repeats line 1: duplicate \(user 0, item 2\); 1 repeated"):
        read_lightgcn(path)
    assert pairs(read_lightgcn(path, on_duplicate="drop")) == [(0, 1), (0, 2), (1, 3)]


def test_unknown_duplicate_policy_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="on_duplicate"):
        read_lightgcn(write(tmp_path / "t.txt", "0 1\n"), on_duplicate="sum")


def test_missing_file_says_which_path_and_what_to_do(tmp_path):
    missing = tmp_path / "nowhere" / "train.txt"
    with pytest.raises(DataError, match="does not exist") as err:
        read_lightgcn(missing)
    assert str(missing) in str(err.value) and "check the path" in str(err.value)
    assert "RECUNLEARN_DATA" not in str(err.value)   # a file given by path is not looked up in the data root


@pytest.mark.parametrize("reader, name", [(read_lightgcn, "t.txt"), (read_udata, "u.data"), (read_csv, "r.csv"),
                                          (read_json, "r.json"), (read_inter, "r.inter")])
def test_empty_file_is_an_error(tmp_path, reader, name):
    with pytest.raises(DataError, match="is empty"):
        reader(write(tmp_path / name, "\n  \n"))


def test_corrupt_gzip_is_an_error(tmp_path):
    path = tmp_path / "t.txt.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot be read"):
        read_lightgcn(path)


# ----------------------------------------------------------------------------------------------- MovieLens

@pytest.mark.parametrize("name", ["u.data", "u.data.gz"])
def test_udata_columns_and_types(tmp_path, name):
    frame = read_udata(write(tmp_path / name, "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"))
    assert list(frame.columns) == ["user", "item", "rating", "timestamp"]
    assert frame.to_numpy().tolist() == [[196, 242, 3, 881250949], [186, 302, 3, 891717742]]


@pytest.mark.parametrize("content, message", [
    ("1\t2\t3\t4\n5\t6\t7\t8\t9\n", r"u\.data, line 2: 5 tab-separated fields, expected 4"),
    ("1\t2\t3\t4\n\n5\t6\t7\t8\n5\t6\n", r"line 4: field 3 is empty or missing \(expected 4 tab-separated fields\)"),
    ("1\t2\n5\t6\t7\t8\n", r"line 1: 2 tab-separated fields, expected 4"),
    ("1\t2\t3\t4\n1\tabc\t3\t4\n", r"line 2: item 'abc' is not an integer id"),
    ("1\t2\t3\t4\n1\t3\tgood\t4\n", r"line 2: rating 'good' is not a number"),
], ids=["extra field", "missing field", "short first line", "text id", "non-numeric rating"])
def test_udata_malformed_line_names_the_line_and_problem(tmp_path, content, message):
    path = write(tmp_path / "u.data", content)
    with pytest.raises(DataError, match=message):
        read_udata(path)


def test_udata_blank_line_keeps_line_numbers_right(tmp_path):
    path = write(tmp_path / "u.data", "1\t2\t3\t4\n\n1\t2\t5\t6\n")
    with pytest.raises(DataError, match=r"line 3 repeats line 1"):
        read_udata(path)
    frame = read_udata(path, on_duplicate="drop")
    assert frame.to_numpy().tolist() == [[1, 2, 3, 4]]


def test_ratings_dat_double_colon(tmp_path):
    frame = read_ratings_dat(write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n"))
    assert frame.to_numpy().tolist() == [[1, 1193, 5, 978300760], [1, 661, 3, 978302109]]


def test_ratings_dat_wrong_field_count(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3\n")
    with pytest.raises(DataError, match=r"line 2: field 4 is empty or missing \(expected 4 '::'-separated"):
        read_ratings_dat(path)


# ------------------------------------------------------------------------------------------ RecBole .inter

def test_inter_typed_header_and_token_ids(tmp_path):
    text = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\tlabel:float\n"
            "u1\ti9\t4.5\t100\t1\nu2\ti9\t3\t200\t\n")  # an empty field in a column we do not use
    frame = read_inter(write(tmp_path / "ml.inter", text))
    assert list(frame.columns) == ["user", "item", "rating", "timestamp"]
    assert pairs(frame) == [("u1", "i9"), ("u2", "i9")]
    assert frame["rating"].tolist() == [4.5, 3.0]


def test_inter_integer_tokens_become_integers(tmp_path):
    frame = read_inter(write(tmp_path / "ml.inter", "user_id:token\titem_id:token\n1\t10\n2\t20\n"))
    assert pairs(frame) == [(1, 10), (2, 20)]


def test_inter_without_item_column(tmp_path):
    path = write(tmp_path / "ml.inter", "user_id:token\tscore:float\n1\t10\n")
    with pytest.raises(DataError, match="has no item column"):
        read_inter(path)


def test_inter_line_numbers_count_the_header(tmp_path):
    path = write(tmp_path / "ml.inter", "user_id:token\titem_id:token\n1\t10\n2\t20\t5\n")
    with pytest.raises(DataError, match=r"line 3: 3 tab-separated fields, expected 2"):
        read_inter(path)


# -------------------------------------------------------------------------------------- CSV, Parquet, JSON

def test_csv_with_header_aliases_and_extra_columns(tmp_path):
    frame = read_csv(write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp,comment\n1,a,5,10,ok\n2,b,4,20,\n"))
    assert list(frame.columns) == ["user", "item", "rating", "timestamp"]
    assert pairs(frame) == [(1, "a"), (2, "b")]


def test_csv_without_header_takes_columns_in_order(tmp_path):
    frame = read_csv(write(tmp_path / "r.csv.gz", "1,2,5\n3,4,1\n"))
    assert frame.to_numpy().tolist() == [[1, 2, 5], [3, 4, 1]]


def test_csv_quoted_ids(tmp_path):
    frame = read_csv(write(tmp_path / "r.csv", 'user,item\n"Smith, J",x\n'))
    assert pairs(frame) == [("Smith, J", "x")]


def test_csv_missing_item_value(tmp_path):
    with pytest.raises(DataError, match=r"r\.csv, line 3: field 2 is empty or missing \(expected 2 comma-separated"):
        read_csv(write(tmp_path / "r.csv", "user,item\n1,2\n3,\n"))


def test_csv_too_many_fields_without_header(tmp_path):
    with pytest.raises(DataError, match="5 fields without a header"):
        read_csv(write(tmp_path / "r.csv", "1,2,3,4,5\n"))


def test_parquet_round_trip(tmp_path):
    path = tmp_path / "r.parquet"
    pd.DataFrame({"user": [3, 1], "item": [7, 8], "rating": [1.0, 2.0]}).to_parquet(path)
    frame = read_parquet(path)
    assert frame.to_numpy().tolist() == [[3, 7, 1.0], [1, 8, 2.0]]


def test_parquet_duplicate_reports_rows(tmp_path):
    path = tmp_path / "r.parquet"
    pd.DataFrame({"user": [3, 1, 3], "item": [7, 8, 7]}).to_parquet(path)
    with pytest.raises(DataError, match="row 3 repeats row 1"):
        read_parquet(path)


def test_parquet_missing_column_and_corrupt_file(tmp_path):
    path = tmp_path / "r.parquet"
    pd.DataFrame({"user": [1]}).to_parquet(path)
    with pytest.raises(DataError, match="has no item column"):
        read_parquet(path)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_parquet(tmp_path / "bad.parquet")


def test_json_user_to_items(tmp_path):
    frame = read_json(write(tmp_path / "r.json", '{"1": [10, 11], "2": [], "3": [10]}'))
    assert pairs(frame) == [(1, 10), (1, 11), (3, 10)]


def test_json_text_ids_stay_text(tmp_path):
    frame = read_json(write(tmp_path / "r.json", '{"alice": ["b1", "b2"]}'))
    assert pairs(frame) == [("alice", "b1"), ("alice", "b2")]


@pytest.mark.parametrize("text, message", [
    ('{"1": [10,\n 11,,]}', r"line 2: invalid JSON"),
    ('[[1, 2]]', r"expected a JSON object"),
    ('{"1": 10}', r"user '1' maps to int, expected a list"),
    ('{"1": [10, 10]}', r"duplicate \(user 1, item 10\)"),
])
def test_json_errors(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_json(write(tmp_path / "r.json", text))


# ------------------------------------------------------------------------------------------ sparse pickles

def test_sparse_pickle_round_trip(tmp_path):
    matrix = sp.coo_matrix((np.ones(3), ([0, 2, 2], [1, 0, 3])), shape=(4, 5))
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(matrix))
    assert pairs(read_sparse_pickle(path)) == [(0, 1), (2, 0), (2, 3)]
    assert load_sparse_pickle(path).shape == (4, 5)


def test_sparse_pickle_csr_is_accepted(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(sp.csr_matrix(np.eye(3))))
    assert pairs(read_sparse_pickle(path)) == [(0, 0), (1, 1), (2, 2)]


def test_sparse_pickle_refuses_other_globals(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(os.getcwd))  # a reference to a callable: never resolved
    with pytest.raises(DataError, match=r"refusing to unpickle .*getcwd"):
        read_sparse_pickle(path)


def test_sparse_pickle_must_hold_a_sparse_matrix(tmp_path):
    path = tmp_path / "dense.pkl"
    path.write_bytes(pickle.dumps(np.eye(2)))
    with pytest.raises(DataError, match="holds ndarray, expected a scipy sparse matrix"):
        read_sparse_pickle(path)
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(DataError, match="not a readable pickle"):
        read_sparse_pickle(tmp_path / "junk.pkl")


# ------------------------------------------------------------------------------------------ format dispatch

@pytest.mark.parametrize("name, fmt", [("train.txt", "lightgcn"), ("test.txt.gz", "lightgcn"), ("u.data", "udata"),
                                       ("ratings.dat", "dat"), ("ml.inter", "inter"), ("r.CSV", "csv"),
                                       ("r.parquet", "parquet"), ("r.json.gz", "json"), ("trnMat.pkl", "pickle")])
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt


def test_unknown_extension_asks_for_the_format(tmp_path):
    with pytest.raises(DataError, match="rename it to end in one of"):
        detect_format("ratings.xlsx")
    path = write(tmp_path / "ratings.log", "0 1 2\n")
    assert pairs(read_interactions(path, "lightgcn")) == [(0, 1), (0, 2)]
    with pytest.raises(DataError, match="unknown format 'excel'"):
        read_interactions(path, "excel")


# -------------------------------------------------------------------------------------- side information

def test_ml100k_items_and_users(data_root):
    items = read_ml100k_items(data_root / "ml-100k" / "u.item")
    assert len(items) == 1682 and items["item"].tolist()[:2] == [1, 2]
    toy = items.iloc[0]
    assert toy["title"] == "Toy Story (1995)" and toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert toy["release_date"] == pd.Timestamp("1995-01-01")
    assert items.loc[items["item"] == 543, "title"].item() == "Misérables, Les (1995)"  # ISO-8859-1
    assert items.loc[items["item"] == 267, "genres"].item() == ["unknown"]
    users = read_ml100k_users(data_root / "ml-100k" / "u.user")
    assert len(users) == 943
    assert users.iloc[0][["user", "age", "gender", "occupation", "zip"]].tolist() == [1, 24, "M", "technician", "85711"]


def test_ml1m_movies_and_users(data_root):
    movies = read_ml1m_movies(data_root / "ml-1m" / "movies.dat")
    assert len(movies) == 3883
    assert movies.iloc[0][["item", "title"]].tolist() == [1, "Toy Story (1995)"]
    assert movies.iloc[0]["genres"] == ["Animation", "Children's", "Comedy"]
    assert "Misérables, Les (1995)" in set(movies["title"])
    users = read_ml1m_users(data_root / "ml-1m" / "users.dat")
    assert len(users) == 6040
    assert users.iloc[0][["user", "gender", "age", "age_range", "occupation", "zip"]].tolist() == \
        [1, "F", 1, "Under 18", "K-12 student", "48067"]


def test_ml100k_items_bad_genre_flag(tmp_path):
    line = "1|Toy Story (1995)|01-Jan-1995||url|" + "|".join(["0"] * 18 + ["2"]) + "\n"
    with pytest.raises(DataError, match=r"line 1: genre flags must be 0 or 1"):
        read_ml100k_items(write(tmp_path / "u.item", line, "ISO-8859-1"))


def test_ml1m_users_bad_occupation(tmp_path):
    with pytest.raises(DataError, match=r"line 2: occupation code 42"):
        read_ml1m_users(write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::42::70072\n"))


def test_id_list(data_root):
    users = read_id_list(data_root / "gowalla" / "user_list.txt")
    assert len(users) == 29858 and users.iloc[0].tolist() == ["343", 0]


def test_modality_is_float32(data_root, tmp_path):
    image = read_modality(data_root / "tiktok" / "image_feat.npy")
    assert image.shape == (6710, 128) and image.dtype == np.float32
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(DataError, match="expected a 2-D numeric array"):
        read_modality(tmp_path / "flat.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="not a numeric .npy array"):
        read_modality(tmp_path / "objects.npy")


# ------------------------------------------------------------------------------------------------ real files

def test_real_udata(data_root):
    frame = read_udata(data_root / "ml-100k" / "u.data.gz")
    assert len(frame) == 100_000
    assert frame["user"].nunique() == 943 and frame["item"].nunique() == 1682
    assert frame.iloc[0].tolist() == [196, 242, 3, 881250949]
    assert sorted(frame["rating"].unique()) == [1, 2, 3, 4, 5]


def test_real_gowalla_is_fast(data_root):
    start = time.perf_counter()
    train = read_lightgcn(data_root / "gowalla" / "train.txt.gz")
    elapsed = time.perf_counter() - start
    assert len(train) == 810_128 and train["user"].nunique() == 29_858
    assert elapsed < 5.0, f"parsing gowalla train took {elapsed:.1f} s"


def test_real_tiktok_pickle_with_old_scipy_path(data_root):
    raw = (data_root / "tiktok" / "trnMat.pkl").read_bytes()
    assert b"scipy.sparse.coo" in raw[:40]  # the pre-1.8 module path that new SciPy has dropped
    matrix = load_sparse_pickle(data_root / "tiktok" / "trnMat.pkl")
    assert matrix.shape == (9308, 6710) and matrix.nnz == 59_541
    assert len(read_sparse_pickle(data_root / "tiktok" / "tstMat.pkl")) == 6_130
