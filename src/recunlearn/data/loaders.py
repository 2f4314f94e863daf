"""Readers for interaction files and side information.

Every interaction reader returns a DataFrame with columns `user`, `item` (the original ids of the file)
and, where the format has them, `rating` and `timestamp`. Bad input raises `DataError` naming the file,
the line and what is wrong. Parsing is vectorised: Python loops run over lines at most, never over pairs.
"""
from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import pickle
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .interactions import DataError

try:  # numpy >= 2 moved the pickle helpers to numpy._core
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar

COLUMN_ALIASES = {
    "user": "user", "user_id": "user", "userid": "user", "uid": "user",
    "item": "item", "item_id": "item", "itemid": "item", "iid": "item", "movie_id": "item", "movieid": "item",
    "rating": "rating", "score": "rating",
    "timestamp": "timestamp", "time": "timestamp", "ts": "timestamp",
}
MOVIELENS_FIELDS = ["user", "item", "rating", "timestamp"]
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western"]
ML1M_AGES = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML1M_OCCUPATIONS = ["other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer"]
DUPLICATE_POLICIES = ("error", "drop")
_INTEGER_TEXT = r"-?(?:0|[1-9][0-9]*)"


# ---------------------------------------------------------------------------------------------- text input

def read_text(path: str | Path, encoding: str = "utf-8-sig") -> str:
    """The whole file as text (gzip when the name ends in .gz); a missing or empty file is a DataError."""
    raw = _read_bytes(path)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not valid {encoding} text ({err.reason}); "
                        "save the file as UTF-8 text") from None
    if not text.strip():
        raise DataError(f"{path} is empty")
    return text


def _read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"{path} {what}: check the path")
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"{path} cannot be read: {err}") from None


# ------------------------------------------------------------------------------------ interaction formats

def read_lightgcn(path: str | Path, *, on_duplicate: str = "error") -> pd.DataFrame:
    """LightGCN text: `user item item ...` per line; a line with a user alone gives no rows."""
    lines = read_text(path).splitlines()
    tokens = [line.split() for line in lines]
    counts = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    try:
        ids = np.array(list(itertools.chain.from_iterable(tokens)), dtype=np.int64)
    except (ValueError, OverflowError):
        raise _bad_lightgcn_line(path, tokens) from None
    starts = np.cumsum(counts) - counts
    has_id = counts > 0
    n_items = np.maximum(counts - 1, 0)
    users = np.repeat(ids[starts[has_id]], n_items[has_id])
    item_mask = np.ones(ids.size, dtype=bool)
    item_mask[starts[has_id]] = False
    line_numbers = np.repeat(np.arange(1, len(lines) + 1), n_items)
    frame = pd.DataFrame({"user": users, "item": ids[item_mask]})
    return _deduplicate(frame, path, on_duplicate, line_numbers)


def _bad_lightgcn_line(path, tokens: list[list[str]]) -> DataError:
    pattern = re.compile(_INTEGER_TEXT)
    for number, line in enumerate(tokens, start=1):
        bad = next((t for t in line if not pattern.fullmatch(t)), None)
        if bad is not None:
            return DataError(f"{path}, line {number}: {bad!r} is not an integer id "
                             "(LightGCN format: `user item item ...`, integers separated by spaces)")
    return DataError(f"{path}: an id does not fit in 64 bits")


def read_udata(path: str | Path, *, on_duplicate: str = "error") -> pd.DataFrame:
    """MovieLens-100K `u.data`: `user<TAB>item<TAB>rating<TAB>timestamp`."""
    return _read_movielens(path, "\t", on_duplicate)


def read_ratings_dat(path: str | Path, *, on_duplicate: str = "error") -> pd.DataFrame:
    """MovieLens-1M `ratings.dat`: `UserID::MovieID::Rating::Timestamp`."""
    return _read_movielens(path, "::", on_duplicate)


def _read_movielens(path, sep: str, on_duplicate: str) -> pd.DataFrame:
    table, lines = read_table(path, sep, n_fields=4)
    table.columns = MOVIELENS_FIELDS
    frame = _typed_frame(table, path, lines, integer_ids=True)
    return _deduplicate(frame, path, on_duplicate, lines)


def read_inter(path: str | Path, *, on_duplicate: str = "error") -> pd.DataFrame:
    """RecBole atomic `.inter`: a typed header (`user_id:token<TAB>item_id:token<TAB>rating:float...`)."""
    text = read_text(path)
    header = text.split("\n", 1)[0].rstrip("\r").split("\t")
    names = [field.split(":", 1)[0].strip().lower() for field in header]
    return _read_named_columns(path, text, "\t", names, 1, on_duplicate, quoted=False)


def read_csv(path: str | Path, *, on_duplicate: str = "error") -> pd.DataFrame:
    """CSV `user,item[,rating,timestamp]`; a header line names the columns, or they come in that order."""
    text = read_text(path)
    first = [field.strip().strip('"').lower() for field in text.split("\n", 1)[0].rstrip("\r").split(",")]
    has_header = "user" in {COLUMN_ALIASES.get(name) for name in first}
    if not has_header and not 2 <= len(first) <= 4:
        raise DataError(f"{path}, line 1: {len(first)} fields without a header; expected user,item[,rating,timestamp] "
                        "or a header line naming the columns")
    names = first if has_header else MOVIELENS_FIELDS[:len(first)]
    return _read_named_columns(path, text, ",", names, int(has_header), on_duplicate, quoted=True)


def _read_named_columns(path, text: str, sep: str, names: list[str], header_lines: int, on_duplicate: str,
                        quoted: bool) -> pd.DataFrame:
    """A delimited table whose columns are named (aliases allowed); columns other than ours are ignored."""
    columns = [COLUMN_ALIASES.get(name, name) for name in names]
    _require_user_item(columns, path, f"header {names}")
    ours = [name for name in columns if name in MOVIELENS_FIELDS]
    if len(ours) != len(set(ours)):
        raise DataError(f"{path}: header {names} names the same column twice (aliases: {COLUMN_ALIASES})")
    unused = [n for n, name in enumerate(columns) if name not in MOVIELENS_FIELDS]
    table, lines = read_table(path, sep, n_fields=len(columns), header_lines=header_lines, text=text,
                              text_columns=unused, optional_columns=unused, quoted=quoted)
    table.columns = columns
    frame = _typed_frame(table, path, lines, integer_ids=False)
    return _deduplicate(frame, path, on_duplicate, lines)


def read_parquet(path: str | Path, *, on_duplicate: str = "error") -> pd.DataFrame:
    """Parquet with columns user, item and optionally rating, timestamp (aliases such as user_id accepted)."""
    path = Path(path)
    _read_bytes(path)  # the same missing-file message as every other format
    try:
        table = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several unrelated types for a corrupt file
        raise DataError(f"{path} is not a readable Parquet file: {err}") from None
    if table.empty:
        raise DataError(f"{path} is empty: expected interactions")
    table = table.rename(columns=lambda name: COLUMN_ALIASES.get(str(name).lower(), name))
    _require_user_item(table.columns, path, f"columns {list(table.columns)}")
    rows = np.arange(1, len(table) + 1)
    frame = _typed_frame(table.reset_index(drop=True), path, rows, integer_ids=False, unit="row")
    return _deduplicate(frame, path, on_duplicate, rows, unit="row")


def read_json(path: str | Path, *, on_duplicate: str = "error") -> pd.DataFrame:
    """JSON object `{user: [item, item, ...]}`."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{user: [items]}}, found {type(data).__name__}")
    bad = next((user for user, items in data.items() if not isinstance(items, list)), None)
    if bad is not None:
        raise DataError(f"{path}: user {bad!r} maps to {type(data[bad]).__name__}, expected a list of items")
    counts = [len(items) for items in data.values()]
    items = list(itertools.chain.from_iterable(data.values()))
    frame = pd.DataFrame({"user": np.repeat(np.array(list(data), dtype=object), counts),
                          "item": pd.Series(items, dtype=object)})
    frame = frame.assign(user=_ids(frame["user"], path, None, "user", False),
                         item=_ids(frame["item"], path, None, "item", False))
    return _deduplicate(frame, path, on_duplicate, None)


def read_sparse_pickle(path: str | Path, *, on_duplicate: str = "error") -> pd.DataFrame:
    """A pickled scipy sparse matrix (users x items), as in the DiffMM `trnMat.pkl`; stored zeros are skipped."""
    matrix = load_sparse_pickle(path).tocoo()
    keep = matrix.data != 0
    frame = pd.DataFrame({"user": matrix.row[keep].astype(np.int64), "item": matrix.col[keep].astype(np.int64)})
    return _deduplicate(frame, path, on_duplicate, None)


def load_sparse_pickle(path: str | Path) -> sp.spmatrix | sp.sparray:
    """Unpickle a scipy sparse matrix, refusing every global other than scipy.sparse classes and numpy arrays."""
    raw = _read_bytes(path)
    if not raw:
        raise DataError(f"{path} is empty: expected a pickled scipy sparse matrix")
    try:
        matrix = _SparseUnpickler(io.BytesIO(raw)).load()
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    except Exception as err:  # unpickling reports corruption through many exception types
        raise DataError(f"{path} is not a readable pickle: {type(err).__name__}: {err}") from None
    if not sp.issparse(matrix):
        raise DataError(f"{path} holds {type(matrix).__name__}, expected a scipy sparse matrix")
    return matrix


_SPARSE_CLASSES = {"coo_matrix", "csr_matrix", "csc_matrix", "coo_array", "csr_array", "csc_array"}
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,
    ("numpy._core.multiarray", "scalar"): scalar,
}


class _SparseUnpickler(pickle.Unpickler):
    """Maps old module paths (`scipy.sparse.coo`, `numpy.core`) to current ones; anything else is refused."""

    def find_class(self, module: str, name: str):
        if module.split(".")[:2] == ["scipy", "sparse"] and name in _SPARSE_CLASSES:
            return getattr(sp, name)
        found = _NUMPY_GLOBALS.get((module, name))
        if found is None:
            raise DataError(f"refusing to unpickle {module}.{name}: only scipy.sparse matrices and numpy "
                            "arrays are allowed")
        return found


# ---------------------------------------------------------------------------------------- format dispatch

READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "lightgcn": read_lightgcn,
    "udata": read_udata,
    "dat": read_ratings_dat,
    "inter": read_inter,
    "csv": read_csv,
    "parquet": read_parquet,
    "json": read_json,
    "pickle": read_sparse_pickle,
}
_EXTENSIONS = {".txt": "lightgcn", ".data": "udata", ".dat": "dat", ".inter": "inter", ".csv": "csv",
               ".parquet": "parquet", ".pq": "parquet", ".json": "json", ".pkl": "pickle", ".pickle": "pickle"}


def detect_format(path: str | Path) -> str:
    """Format name from the file name (a trailing .gz is ignored); see READERS for the names."""
    name = Path(path).name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise DataError(f"cannot tell the format of {path} from its name: rename it to end in one of "
                    f"{', '.join(sorted(_EXTENSIONS))} (optionally + .gz), or from Python pass fmt=, one of "
                    f"{sorted(READERS)}")


def read_interactions(path: str | Path, fmt: str | None = None, *, on_duplicate: str = "error") -> pd.DataFrame:
    """Read any supported interaction file; `fmt` (a READERS key) overrides the format implied by the name."""
    fmt = fmt or detect_format(path)
    if fmt not in READERS:
        raise DataError(f"unknown format {fmt!r}; known formats: {sorted(READERS)}")
    return READERS[fmt](path, on_duplicate=on_duplicate)


# ------------------------------------------------------------------------------------------ side information

def read_ml100k_items(path: str | Path) -> pd.DataFrame:
    """MovieLens-100K `u.item`: columns item, title, release_date, imdb_url, genres (list of names)."""
    table, lines = read_table(path, "|", n_fields=5 + len(ML100K_GENRES), encoding="ISO-8859-1",
                              text_columns=(1, 2, 3, 4), optional_columns=(2, 3, 4))
    flags = table.iloc[:, 5:].to_numpy()
    if not np.isin(flags, (0, 1)).all():
        row = int(np.flatnonzero(~np.isin(flags, (0, 1)).all(axis=1))[0])
        raise DataError(f"{path}, line {lines[row]}: genre flags must be 0 or 1")
    names = np.array(ML100K_GENRES, dtype=object)
    return pd.DataFrame({
        "item": _ids(table[0], path, lines, "item", True),
        "title": table[1].astype(object),
        "release_date": pd.to_datetime(table[2], format="%d-%b-%Y", errors="coerce"),
        "imdb_url": table[4].astype(object),
        "genres": [names[row.astype(bool)].tolist() for row in flags],
    })


def read_ml100k_users(path: str | Path) -> pd.DataFrame:
    """MovieLens-100K `u.user`: columns user, age, gender, occupation, zip."""
    table, lines = read_table(path, "|", n_fields=5, encoding="ISO-8859-1", text_columns=(2, 3, 4))
    return pd.DataFrame({
        "user": _ids(table[0], path, lines, "user", True),
        "age": _numbers(table[1], path, lines, "age"),
        "gender": table[2].astype(object),
        "occupation": table[3].astype(object),
        "zip": table[4].astype(str),
    })


def read_ml1m_movies(path: str | Path) -> pd.DataFrame:
    """MovieLens-1M `movies.dat`: columns item, title, genres (list of names)."""
    table, lines = read_table(path, "::", n_fields=3, encoding="ISO-8859-1", text_columns=(1, 2))
    return pd.DataFrame({"item": _ids(table[0], path, lines, "item", True), "title": table[1].astype(object),
                         "genres": table[2].str.split("|").tolist()})


def read_ml1m_users(path: str | Path) -> pd.DataFrame:
    """MovieLens-1M `users.dat`: columns user, gender, age (group code), age_range, occupation (name), zip."""
    table, lines = read_table(path, "::", n_fields=5, encoding="ISO-8859-1", text_columns=(1, 4))
    age = _numbers(table[2], path, lines, "age")
    occupation = _numbers(table[3], path, lines, "occupation")
    if not occupation.between(0, len(ML1M_OCCUPATIONS) - 1).all():
        row = int(np.flatnonzero(~occupation.between(0, len(ML1M_OCCUPATIONS) - 1))[0])
        raise DataError(f"{path}, line {lines[row]}: occupation code {occupation[row]} is not in 0..20")
    return pd.DataFrame({
        "user": _ids(table[0], path, lines, "user", True),
        "gender": table[1].astype(object),
        "age": age,
        "age_range": age.map(ML1M_AGES).astype(object),
        "occupation": np.array(ML1M_OCCUPATIONS, dtype=object)[occupation.to_numpy()],
        "zip": table[4].astype(str),
    })


def read_id_list(path: str | Path) -> pd.DataFrame:
    """LightGCN `user_list.txt` / `item_list.txt`: a header `org_id remap_id`; columns org_id, remap_id."""
    table, lines = read_table(path, " ", n_fields=2, header_lines=1, text_columns=(0,))
    return pd.DataFrame({"org_id": table[0].astype(str),
                         "remap_id": _ids(table[1], path, lines, "remap_id", True)})


def read_modality(path: str | Path) -> np.ndarray:
    """A `.npy` feature matrix [n_items, dim] (e.g. tiktok `image_feat.npy`) as float32."""
    raw = _read_bytes(path)
    try:
        features = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as err:
        raise DataError(f"{path} is not a numeric .npy array: {err}") from None
    if features.ndim != 2 or features.dtype.kind not in "fiu":
        raise DataError(f"{path}: expected a 2-D numeric array [n_items, dim], found {features.dtype} "
                        f"of shape {features.shape}")
    return features.astype(np.float32)


# ----------------------------------------------------------------------------------------- table parsing

def read_table(path, sep: str, n_fields: int, *, header_lines: int = 0, encoding: str = "utf-8-sig",
               text: str | None = None, text_columns: Sequence[int] = (), optional_columns: Sequence[int] = (),
               quoted: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Split a delimited file into `n_fields` columns (integer labels); also returns each row's line number.

    Column types are inferred (fast) except `text_columns`, kept as text (zip codes, titles). Blank lines are
    skipped; a line with more fields, or with a field missing outside `optional_columns`, is an error naming it.
    """
    text = read_text(path, encoding) if text is None else text
    parser_sep = sep
    if len(sep) > 1:  # the C parser takes one-character separators only; "::" files never contain tabs
        text = text.replace(sep, "\t")
        parser_sep = "\t"
    try:
        table = pd.read_csv(io.StringIO(text), sep=parser_sep, header=None, skiprows=header_lines,
                            dtype={column: object for column in text_columns}, skip_blank_lines=False,
                            keep_default_na=False, na_values=[""],
                            quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: expected data after {header_lines} header line(s)") from None
    except pd.errors.ParserError as err:
        raise _too_many_fields(path, err, sep, n_fields, header_lines) from None
    lines = np.arange(header_lines + 1, header_lines + 1 + len(table))
    blank = table.isna().all(axis=1).to_numpy()
    if blank.any():
        table, lines = table[~blank].reset_index(drop=True), lines[~blank]
    if table.empty:
        raise DataError(f"{path} is empty: expected data after {header_lines} header line(s)")
    if table.shape[1] != n_fields:
        raise _field_count_error(path, lines[0], table.shape[1], n_fields, sep)
    required = [column for column in range(n_fields) if column not in set(optional_columns)]
    empty = table[required].isna().to_numpy()
    if empty.any():
        row, column = (int(i[0]) for i in np.nonzero(empty))
        raise DataError(f"{path}, line {lines[row]}: field {required[column] + 1} is empty or missing "
                        f"(expected {n_fields} {_separator_name(sep)}-separated fields)")
    return table, lines


def _too_many_fields(path, err: Exception, sep: str, n_fields: int, header_lines: int) -> DataError:
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
    if match is None:
        return DataError(f"{path}: cannot be parsed: {err}")
    first_fields = int(match.group(1))
    if first_fields != n_fields:  # the first data line set the width pandas expected: blame it
        return _field_count_error(path, header_lines + 1, first_fields, n_fields, sep)
    return _field_count_error(path, int(match.group(2)), int(match.group(3)), n_fields, sep)


def _field_count_error(path, line: int, found: int, expected: int, sep: str) -> DataError:
    return DataError(f"{path}, line {line}: {found} {_separator_name(sep)}-separated fields, expected {expected}")


def _separator_name(sep: str) -> str:
    return {"\t": "tab", " ": "space", ",": "comma"}.get(sep, repr(sep))


def _require_user_item(columns, path, described: str) -> None:
    missing = [name for name in ("user", "item") if name not in set(columns)]
    if missing:
        raise DataError(f"{path}: {described} has no {' or '.join(missing)} column "
                        f"(accepted names: {sorted(k for k, v in COLUMN_ALIASES.items() if v in missing)})")


def _typed_frame(table: pd.DataFrame, path, lines: np.ndarray, *, integer_ids: bool,
                 unit: str = "line") -> pd.DataFrame:
    """Keep user, item, rating, timestamp: ids parsed (integers where possible), the rest numeric."""
    frame = pd.DataFrame({"user": _ids(table["user"], path, lines, "user", integer_ids, unit),
                          "item": _ids(table["item"], path, lines, "item", integer_ids, unit)})
    for column in ("rating", "timestamp"):
        if column in table.columns:
            frame[column] = _numbers(table[column], path, lines, column, unit)
    return frame


def _ids(values: pd.Series, path, lines: np.ndarray | None, kind: str, integer_only: bool,
         unit: str = "line") -> pd.Series:
    """Ids as int64 when every one is an integer, else as text (an error where integers are required)."""
    values = values.reset_index(drop=True)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            raise _value_error(path, lines, int(np.flatnonzero(bad)[0]), values, kind, "is not an integer id", unit)
        return values.astype(np.int64)
    text = values.astype(str).str.strip()
    is_integer = text.str.fullmatch(_INTEGER_TEXT).to_numpy(dtype=bool)
    if is_integer.all():
        try:
            return pd.Series(text.to_numpy().astype(np.int64))
        except OverflowError:
            pass
    if integer_only:
        row = int(np.flatnonzero(~is_integer)[0]) if not is_integer.all() else 0
        raise _value_error(path, lines, row, values, kind, "is not an integer id", unit)
    return text.astype(object)


def _numbers(values: pd.Series, path, lines: np.ndarray, kind: str, unit: str = "line") -> pd.Series:
    values = values.reset_index(drop=True)
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna().to_numpy()
    if bad.any():
        raise _value_error(path, lines, int(np.flatnonzero(bad)[0]), values, kind, "is not a number", unit)
    return numeric


def _value_error(path, lines, row: int, values: pd.Series, kind: str, problem: str, unit: str) -> DataError:
    where = f", {unit} {lines[row]}" if lines is not None else ""
    return DataError(f"{path}{where}: {kind} {_plain(values.iloc[row])!r} {problem}")


def _plain(value):
    """numpy scalars as Python values, so that messages show 3, not np.int64(3)."""
    return value.item() if isinstance(value, np.generic) else value


def _deduplicate(frame: pd.DataFrame, path, on_duplicate: str, lines: np.ndarray | None,
                 unit: str = "line") -> pd.DataFrame:
    """Apply the duplicate policy: 'error' names the first repeated pair and where it occurs, 'drop' keeps the first."""
    if on_duplicate not in DUPLICATE_POLICIES:
        raise ValueError(f"on_duplicate must be one of {DUPLICATE_POLICIES}, not {on_duplicate!r}")
    repeated = frame.duplicated(["user", "item"], keep="first").to_numpy()
    if not repeated.any():
        return frame.reset_index(drop=True)
    if on_duplicate == "drop":
        return frame[~repeated].reset_index(drop=True)
    row = int(np.flatnonzero(repeated)[0])
    user, item = _plain(frame["user"].iloc[row]), _plain(frame["item"].iloc[row])
    where = ""
    if lines is not None:
        first = int(np.flatnonzero((frame["user"] == user).to_numpy() & (frame["item"] == item).to_numpy())[0])
        where = f", {unit} {lines[row]} repeats {unit} {lines[first]}"
    raise DataError(f"{path}{where}: duplicate (user {user!r}, item {item!r}); {int(repeated.sum())} repeated "
                    "pairs in all; remove the repeated lines from the file (from Python, on_duplicate='drop' keeps "
                    "the first of each)")
