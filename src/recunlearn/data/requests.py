"""Unlearning requests: seeded generators for each request type, and the request file any method can consume.

A request is a set of training edges to forget, plus (for the erasure of a whole user or item, or of pairs
given by a person) the held-out interactions of the same subject: those leave the validation and test
splits, so nothing about the subject is evaluated or masked afterwards. Its file holds the metadata (kind, parameters, seed, the
hash of the data it was made for) and the edges both as original ids and as indices, so that it can be
checked against the dataset it is applied to and read by tools that know only the original ids.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from ..storage import atomic_file
from .interactions import DataError, Dataset, IdMap, Interactions
from .loaders import read_csv, read_text

FORMAT = "recunlearn-request"
VERSION = 1
KINDS = ("random", "adversarial", "user", "item", "edges", "modality")
USER_MODES = ("random", "core", "edge")
ITEM_MODES = ("random", "popular")
SPEC_FORMS = ("random:RHO", "user:RHO[:random|core|edge]", "item:RHO[:random|popular]",
              "adversarial:RHO[:RHO_ITEMS]", "modality:NAME:RHO")
# Sort direction of the degree for each sampling mode: -1 most active first, +1 least active first.
_DEGREE_ORDER = {"random": 0, "core": -1, "edge": 1, "popular": -1}


@dataclass(frozen=True, eq=False)
class Request:
    """Training edges to forget, with what is needed to regenerate and to validate them.

    `data_hash` is the hash of the dataset the edges were drawn from (for an adversarial request, the
    poisoned one) and `origin_hash` that of the same dataset as shipped, before any edit of its training set
    (for an adversarial request, the clean one). Build requests with `Request.create` or the generators, so
    that they carry the dataset's id maps and can be saved with original ids.
    """

    kind: str
    params: dict[str, Any]
    seed: int | None
    dataset: str
    data_hash: str
    edges: Interactions
    origin_hash: str = ""
    user_ids: IdMap | None = field(default=None, repr=False)
    item_ids: IdMap | None = field(default=None, repr=False)
    held_out: Interactions | None = field(default=None, repr=False)   # valid/test pairs of the same subjects
    # modality constraint: modality -> item indices whose features of that modality may no longer be used
    withdrawn: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown request kind {self.kind!r}; known kinds: {', '.join(KINDS)}")
        if not self.origin_hash:
            object.__setattr__(self, "origin_hash", self.data_hash)

    @classmethod
    def create(cls, dataset: Dataset, kind: str, params: dict[str, Any], seed: int | None,
               edges: Interactions, held_out: Interactions | None = None,
               withdrawn: dict[str, np.ndarray] | None = None) -> "Request":
        """A request for `dataset` (its name, hashes and id maps) over the given index pairs."""
        seed = None if seed is None else int(seed)  # numpy integers are not JSON
        return cls(kind, dict(params), seed, dataset.name, dataset.hash, edges, dataset.origin_hash,
                   dataset.user_ids, dataset.item_ids, held_out if held_out is not None and len(held_out) else None,
                   withdrawn or None)

    def withdraw(self, dataset: Dataset) -> Dataset:
        """`dataset` where the request's withdrawn feature rows may no longer be used (no-op without any)."""
        for name, items in (self.withdrawn or {}).items():
            dataset = dataset.with_withdrawn(name, items)
        return dataset

    def apply(self, dataset: Dataset) -> Dataset:
        """`dataset` without the request's held-out pairs (the training edges are the unlearner's to remove)."""
        if self.held_out is None:
            return dataset
        return dataset.with_held_out(dataset.valid.subtract(self.held_out), dataset.test.subtract(self.held_out))

    def held_out_counts(self, dataset: Dataset) -> dict[str, int]:
        """How many of the held-out pairs are in `dataset`'s validation and test splits."""
        if self.held_out is None:
            return {"valid": 0, "test": 0}
        return {name: int(split.contains(self.held_out.users, self.held_out.items).sum())
                for name, split in (("valid", dataset.valid), ("test", dataset.test))}

    def __len__(self) -> int:
        return len(self.edges)

    def __repr__(self) -> str:
        return (f"Request(kind={self.kind!r}, params={self.params!r}, seed={self.seed!r}, dataset={self.dataset!r}, "
                f"data_hash={self.data_hash!r}, origin_hash={self.origin_hash!r}, edges={len(self)})")

    def users(self) -> np.ndarray:
        """Sorted indices of the users the request touches."""
        return np.unique(self.edges.users)

    def items(self) -> np.ndarray:
        """Sorted indices of the items the request touches."""
        return np.unique(self.edges.items)

    def split(self, n: int, seed: int | None = None) -> list["Request"]:
        """A seeded partition into `n` sub-requests of near-equal size, for a sequential stream.

        User and item requests are split by whole users / items, so that each part is itself a user- or
        item-level request; other kinds are split by edge. `seed` defaults to the request's own seed.
        """
        if self.withdrawn:
            raise ValueError("a modality constraint is one request: it cannot be split into a stream")
        units = {"user": self.edges.users, "item": self.edges.items}.get(self.kind, np.arange(len(self)))
        groups, group_of_edge = np.unique(units, return_inverse=True)
        if not 1 <= n <= groups.size:
            what = {"user": "users", "item": "items"}.get(self.kind, "edges")
            raise ValueError(f"cannot split a request of {groups.size} {what} into {n} parts")
        split_seed = seed if seed is not None else (self.seed if self.seed is not None else 0)
        order = np.random.default_rng(split_seed).permutation(groups.size)
        part_of_group = np.empty(groups.size, dtype=np.int64)
        part_of_group[order] = np.arange(groups.size) * n // groups.size
        part = part_of_group[group_of_edge]
        return [replace(self, params={**self.params, "part": k, "parts": n, "split_seed": split_seed},
                        edges=self.edges.select(part == k), held_out=self._held_out_part(units, part, k))
                for k in range(n)]

    def _held_out_part(self, units: np.ndarray, part: np.ndarray, k: int) -> Interactions | None:
        """The held-out pairs of part k: by user or item for subject requests, else all with the first part."""
        if self.held_out is None:
            return None
        if self.kind not in ("user", "item"):
            return self.held_out if k == 0 else None
        held_units = self.held_out.users if self.kind == "user" else self.held_out.items
        return self.held_out.select(np.isin(held_units, units[part == k]))

    # ------------------------------------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Write the request as JSON (atomically: a half-written file never replaces a complete one)."""
        if self.user_ids is None or self.item_ids is None:
            raise ValueError("this request has no id maps to write original ids with; build it with "
                             "Request.create(dataset, ...) or a generator")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:   # a half-written file never replaces a complete one
            tmp.write_text(_dump(self._record()), encoding="utf-8")
        return path

    def _record(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "kind": self.kind, "params": self.params,
                "seed": self.seed, "dataset": self.dataset, "data_hash": self.data_hash,
                "origin_hash": self.origin_hash, "size": len(self),
                "edges": {"user": self.user_ids.label(self.edges.users).tolist(),
                          "item": self.item_ids.label(self.edges.items).tolist(),
                          "user_index": self.edges.users.tolist(), "item_index": self.edges.items.tolist()},
                **({} if self.held_out is None else {"held_out": self._columns(self.held_out)}),
                **({} if not self.withdrawn else {"withdrawn": {
                    name: {"item": self.item_ids.label(items).tolist(), "item_index": np.asarray(items).tolist()}
                    for name, items in self.withdrawn.items()}})}

    def _columns(self, pairs: Interactions) -> dict[str, list]:
        return {"user": self.user_ids.label(pairs.users).tolist(), "item": self.item_ids.label(pairs.items).tolist(),
                "user_index": pairs.users.tolist(), "item_index": pairs.items.tolist()}

    @classmethod
    def load(cls, path: str | Path, dataset: Dataset, *, on_duplicate: str = "error") -> "Request":
        """Read a request file written by `save`, or a plain list of pairs in original ids (CSV `user,item`,
        or a JSON list of [user, item]), and check it against `dataset`: see `from_pairs`."""
        path = Path(path)
        if path.name.lower().removesuffix(".gz").endswith(".csv"):
            frame = read_csv(path, on_duplicate=on_duplicate)
            pairs = zip(frame["user"].tolist(), frame["item"].tolist())
            return cls.from_pairs(dataset, pairs, source=str(path), on_duplicate=on_duplicate)
        data = _read_json(path)
        if isinstance(data, list):
            return cls.from_pairs(dataset, data, source=str(path), on_duplicate=on_duplicate)
        if isinstance(data, dict) and data.get("format") == FORMAT:
            return cls._from_record(data, dataset, str(path))
        raise DataError(f"{path}: not a request file; expected a {FORMAT} JSON object, a JSON list of "
                        "[user, item] pairs, or a CSV file `user,item`")

    @classmethod
    def from_pairs(cls, dataset: Dataset, pairs: Iterable, *, source: str = "pairs",
                   on_duplicate: str = "error") -> "Request":
        """A user-supplied request (kind "edges") from (user, item) pairs in original ids.

        Every id must be known to `dataset` and every pair one of its interactions: training pairs are
        forgotten, validation and test pairs leave those splits (a person's whole history spans all three).
        """
        users, items = _unzip_pairs(list(pairs), source)
        edges = _edges_from_ids(dataset, users, items, source, on_duplicate, held_out_allowed=True)
        held_out = edges.subtract(dataset.train)
        return cls.create(dataset, "edges", {"source": source}, None, edges.subtract(held_out), held_out)

    @classmethod
    def _from_record(cls, data: dict[str, Any], dataset: Dataset, source: str) -> "Request":
        fields = _require(data, ("version", "kind", "params", "seed", "dataset", "data_hash", "edges"), source)
        if fields["version"] != VERSION:
            raise DataError(f"{source}: request file version {fields['version']!r}, this library reads {VERSION}")
        if fields["kind"] not in KINDS:
            raise DataError(f"{source}: unknown request kind {fields['kind']!r}; known kinds: {', '.join(KINDS)}")
        origin_hash = data.get("origin_hash") or fields["data_hash"]
        _check_hash(dataset, fields["dataset"], fields["data_hash"], origin_hash, source)
        columns = _require(fields["edges"], ("user", "item", "user_index", "item_index"), f"{source}: edges")
        lengths = {len(column) if isinstance(column, list) else -1 for column in columns.values()}
        if len(lengths | {data.get("size", next(iter(lengths)))}) != 1 or -1 in lengths:
            raise DataError(f"{source}: malformed request file: edges must be four lists of `size` entries each")
        withdrawn = _withdrawn_from_record(data.get("withdrawn"), dataset, source)
        if withdrawn and not columns["user"]:
            edges = Interactions.empty(dataset.n_users, dataset.n_items)
        else:
            edges = _edges_from_ids(dataset, columns["user"], columns["item"], source, "error",
                                    hint=_ADVERSARIAL_HINT if fields["kind"] == "adversarial" else "")
        _check_indices(edges, columns["user_index"], columns["item_index"], source)
        held_out = None
        if data.get("held_out"):
            held = _require(data["held_out"], ("user", "item", "user_index", "item_index"), f"{source}: held_out")
            held_out = _held_out_from_ids(dataset, held["user"], held["item"], f"{source}: held_out")
            _check_indices(held_out, held["user_index"], held["item_index"], f"{source}: held_out")
        return cls(fields["kind"], fields["params"], fields["seed"], fields["dataset"], fields["data_hash"], edges,
                   origin_hash, dataset.user_ids, dataset.item_ids, held_out, withdrawn)


def _withdrawn_from_record(record: Any, dataset: Dataset, source: str) -> dict[str, np.ndarray] | None:
    if not record:
        return None
    if not isinstance(record, dict):
        raise DataError(f"{source}: malformed request file: `withdrawn` must map a modality to its items")
    out = {}
    for name, columns in record.items():
        columns = _require(columns, ("item", "item_index"), f"{source}: withdrawn.{name}")
        _check_modality(dataset, name)
        items = dataset.item_ids.index(columns["item"], "item")
        if not np.array_equal(items, np.asarray(columns["item_index"], dtype=np.int64)):
            raise DataError(f"{source}: the stored item indices of withdrawn.{name} do not match the item ids "
                            "under this dataset's id maps: the file was made with other id maps")
        out[name] = np.sort(items)
    return out


_ADVERSARIAL_HINT = ("; an adversarial request deletes injected edges: load it against the poisoned dataset, "
                     "poisoned_dataset(dataset, request edges)")


def _dump(record: dict[str, Any]) -> str:
    """JSON with one line per metadata field and per edge list, so that the header stays readable."""
    edges = ",\n".join(f'  "{name}": {json.dumps(column)}' for name, column in record["edges"].items())
    fields = [f' "{key}": {json.dumps(value)}' for key, value in record.items() if key != "edges"]
    return "{\n" + ",\n".join(fields + [f' "edges": {{\n{edges}\n }}']) + "\n}\n"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: invalid JSON ({err.msg}); a request file is JSON "
                        "(or a CSV file `user,item` named .csv)") from None


def _require(data: Any, keys: tuple[str, ...], source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise DataError(f"{source}: malformed request file: expected a JSON object, found {type(data).__name__}")
    missing = [key for key in keys if key not in data]
    if missing:
        raise DataError(f"{source}: malformed request file: missing {', '.join(map(repr, missing))}")
    return {key: data[key] for key in keys}


def _check_hash(dataset: Dataset, name: str, data_hash: str, origin_hash: str, source: str) -> None:
    """Accept the exact data the request was made for, or any edit of the same shipped data (e.g. the residual
    after earlier requests of a stream); whether the edges are still there is checked edge by edge."""
    if data_hash == dataset.hash or origin_hash == dataset.origin_hash:
        return
    made_for = f"data hash {data_hash}" + (f", shipped data {origin_hash}" if origin_hash != data_hash else "")
    this = f"data hash {dataset.hash}" + (f", shipped data {dataset.origin_hash}"
                                          if dataset.origin_hash != dataset.hash else "")
    raise DataError(f"{source}: request made for dataset {name!r} ({made_for}), but this is dataset "
                    f"{dataset.name!r} ({this}); load it with the data it was made for")


def _unzip_pairs(pairs: list, source: str) -> tuple[list, list]:
    bad = next((n for n, pair in enumerate(pairs) if not isinstance(pair, (list, tuple)) or len(pair) != 2), None)
    if bad is not None:
        raise DataError(f"{source}: pair {bad + 1} is {pairs[bad]!r}, expected [user, item]")
    users, items = zip(*pairs) if pairs else ((), ())
    return list(users), list(items)


def _edges_from_ids(dataset: Dataset, users: list, items: list, source: str, on_duplicate: str,
                    hint: str = "", held_out_allowed: bool = False) -> Interactions:
    """Original ids -> index pairs of `dataset`, each a known id and a training interaction (or, when
    `held_out_allowed`, a validation or test one), without repeats."""
    if not users:
        raise DataError(f"{source}: no (user, item) pairs: a request needs at least one edge")
    try:
        user_index = dataset.user_ids.index(users, "user")
        item_index = dataset.item_ids.index(items, "item")
    except DataError as err:
        raise DataError(f"{source}: {err}") from None
    _check_duplicates(user_index, item_index, dataset, source, on_duplicate)
    edges = Interactions.from_arrays(user_index, item_index, dataset.n_users, dataset.n_items, on_duplicate="drop")
    if held_out_allowed:
        _check_known(edges, dataset, source)
    else:
        _check_training(edges, dataset, source, hint)
    return edges


def _held_out_from_ids(dataset: Dataset, users: list, items: list, source: str) -> Interactions:
    pairs = _edges_from_ids(dataset, users, items, source, "error", held_out_allowed=True)
    in_train = dataset.train.contains(pairs.users, pairs.items)
    if in_train.any():
        raise DataError(f"{source}: {int(in_train.sum())} held-out pairs are training interactions; a request "
                        "file lists those under `edges`")
    return pairs


def _check_known(pairs: Interactions, dataset: Dataset, source: str) -> None:
    """Every pair is an interaction of some split now (a pair deleted earlier, or never seen, is an error)."""
    known = np.zeros(len(pairs), dtype=bool)
    for split in (dataset.train, dataset.valid, dataset.test):
        known |= split.contains(pairs.users, pairs.items)
    if known.all():
        return
    k = int(np.flatnonzero(~known)[0])
    erased = dataset.original_train is not None and dataset.original_train.contains([pairs.users[k]],
                                                                                     [pairs.items[k]])[0]
    why = "it was erased earlier" if erased else "it is not an interaction of this dataset"
    raise DataError(f"{source}: pair (user {_label(dataset.user_ids, pairs.users[k])}, item "
                    f"{_label(dataset.item_ids, pairs.items[k])}) is in no split of {dataset.name!r} ({why}; "
                    f"{int((~known).sum())} such pairs in all); list only current interactions")


def _check_duplicates(users: np.ndarray, items: np.ndarray, dataset: Dataset, source: str, on_duplicate: str) -> None:
    if on_duplicate not in ("error", "drop"):
        raise ValueError(f"on_duplicate must be 'error' or 'drop', not {on_duplicate!r}")
    keys = users * dataset.n_items + items
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    if on_duplicate == "drop" or (counts == 1).all():
        return
    repeated = np.setdiff1d(np.arange(keys.size), first)
    k = int(repeated[0])
    raise DataError(f"{source}: duplicate edge (user {_label(dataset.user_ids, users[k])}, item "
                    f"{_label(dataset.item_ids, items[k])}), pair {k + 1}; {repeated.size} repeated pairs in all; "
                    "pass on_duplicate='drop' to keep one of each")


def _check_training(edges: Interactions, dataset: Dataset, source: str, hint: str) -> None:
    present = dataset.train.contains(edges.users, edges.items)
    if present.all():
        return
    k = int(np.flatnonzero(~present)[0])
    user, item = edges.users[k], edges.items[k]
    where = next((where for where, split in (("it is in the valid split", dataset.valid),
                                             ("it is in the test split", dataset.test),
                                             ("it was deleted from the training set earlier", dataset.original_train))
                  if split is not None and split.contains([user], [item])[0]),
                 "it is not an interaction of this dataset")
    raise DataError(f"{source}: edge (user {_label(dataset.user_ids, user)}, item {_label(dataset.item_ids, item)}) "
                    f"is not a training interaction of {dataset.name!r} ({where}; {int((~present).sum())} such "
                    f"edges in all): requests can only delete training interactions{hint}")


def _check_indices(edges: Interactions, users: list, items: list, source: str) -> None:
    """The stored indices must name the same pairs as the original ids, else the id maps differ."""
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (*users, *items)):
        raise DataError(f"{source}: malformed request file: user_index and item_index must hold whole numbers "
                        "(the indices `recunlearn request make` writes)")
    try:
        stored = Interactions.from_arrays(users, items, edges.n_users, edges.n_items, on_duplicate="drop")
    except DataError as err:
        raise DataError(f"{source}: malformed request file: {err}") from None
    if not np.array_equal(stored.keys, edges.keys):
        raise DataError(f"{source}: the stored indices do not match the original ids under this dataset's id "
                        "maps: the file was made with other id maps")


def _label(ids: IdMap, index: int) -> str:
    return repr(ids.label([index]).tolist()[0])


# ------------------------------------------------------------------------------------------- generators

def subject_request(dataset: Dataset, users: Iterable = (), items: Iterable = ()) -> Request:
    """The erasure of whole users and/or items (original ids): all their training interactions are forgotten
    and their validation and test interactions leave those splits."""
    users, items = list(users), list(items)
    if not users and not items:
        raise DataError("name at least one user or item to erase")
    try:
        user_index = dataset.user_ids.index(users, "user") if users else np.empty(0, dtype=np.int64)
        item_index = dataset.item_ids.index(items, "item") if items else np.empty(0, dtype=np.int64)
    except DataError as err:
        raise DataError(f"{err}; `recunlearn recommend` and the data files show the ids") from None

    def of_subjects(split: Interactions) -> Interactions:
        return split.select(np.isin(split.users, user_index) | np.isin(split.items, item_index))

    edges = of_subjects(dataset.train)
    held_out = of_subjects(dataset.valid).union(of_subjects(dataset.test))
    if len(edges) == 0:
        raise DataError(f"the named {'users' if users else 'items'} have no training interactions left in "
                        f"{dataset.name!r} (erased already?): nothing to forget")
    kind = "user" if not items else "item" if not users else "edges"
    params = {"users": [str(u) for u in users], "items": [str(i) for i in items]}
    return Request.create(dataset, kind, params, None, edges, held_out)


def random_request(dataset: Dataset, rho: float, seed: int) -> Request:
    """A uniformly sampled fraction `rho` of the training interactions (at least one)."""
    train = dataset.train
    rho = _check_rho(rho)
    size = max(1, round(rho * len(train)))
    picked = np.random.default_rng(seed).choice(len(train), size=size, replace=False)
    mask = np.zeros(len(train), dtype=bool)
    mask[picked] = True
    return Request.create(dataset, "random", {"rho": rho}, seed, train.select(mask))


def user_request(dataset: Dataset, rho: float, mode: str = "random", seed: int = 0) -> Request:
    """All training interactions of ceil(rho * users with training data) users: sampled at random, the most
    active ("core") or the least active ("edge"), ties broken by the seed."""
    rho = _check_rho(rho)
    chosen = _sample_by_degree(dataset.train.user_degree(), rho, mode, USER_MODES, seed, "user")
    edges = dataset.train.select(np.isin(dataset.train.users, chosen))
    return Request.create(dataset, "user", {"rho": rho, "mode": mode}, seed, edges)


def item_request(dataset: Dataset, rho: float, mode: str = "random", seed: int = 0) -> Request:
    """All training interactions of ceil(rho * items with training data) items: sampled at random or the most
    popular ("popular"), ties broken by the seed (a licence take-down)."""
    rho = _check_rho(rho)
    chosen = _sample_by_degree(dataset.train.item_degree(), rho, mode, ITEM_MODES, seed, "item")
    edges = dataset.train.select(np.isin(dataset.train.items, chosen))
    return Request.create(dataset, "item", {"rho": rho, "mode": mode}, seed, edges)


def _sample_by_degree(degree: np.ndarray, rho: float, mode: str, modes: tuple[str, ...], seed: int,
                      kind: str) -> np.ndarray:
    if mode not in modes:
        raise ValueError(f"unknown {kind} sampling mode {mode!r}; known modes: {', '.join(modes)}")
    candidates = np.flatnonzero(degree > 0)
    count = _fraction_count(rho, candidates.size)
    tie_break = np.random.default_rng(seed).random(candidates.size)  # random order among equal degrees
    order = np.lexsort((tie_break, _DEGREE_ORDER[mode] * degree[candidates]))
    return np.sort(candidates[order[:count]])


def _fraction_count(rho: float, n: int) -> int:
    # Round first: 0.07 * 100 is 7.000000000000001 in floating point, which must not become 8.
    return min(n, math.ceil(round(rho * n, 9)))


def _check_rho(rho: float, allow_zero: bool = False) -> float:
    if not (0 <= rho <= 1 if allow_zero else 0 < rho <= 1):
        raise ValueError(f"rho must be a fraction in {'[0, 1]' if allow_zero else '(0, 1]'}, not {rho!r}")
    return float(rho)


# ------------------------------------------------------------------------------------- adversarial edges

def adversarial_edges(dataset: Dataset, scorer, rho_users: float = 1.0, rho_items: float = 1.0, seed: int = 0,
                      batch_size: int = 1024) -> Interactions:
    """Least-likely edges to inject (the UnlearnRec protocol), from a model trained on the clean data.

    For a seeded fraction `rho_users` of the users with training data, the item the scorer ranks lowest among
    the items the user has no interaction with (in train, valid or test); likewise for a fraction `rho_items`
    of the items with training data, the user that scores it lowest. rho = 1.0 for both gives one injected
    edge per user and per item. Users are scored in batches of `batch_size`.
    """
    rng = np.random.default_rng(seed)
    users = _sample_fraction(rng, np.flatnonzero(dataset.train.user_degree() > 0), rho_users)
    items = _sample_fraction(rng, np.flatnonzero(dataset.train.item_degree() > 0), rho_items)
    # Item-side minima need every user's scores; the user side alone needs only the sampled users.
    scan = np.arange(dataset.n_users) if items.size else users
    wanted = np.zeros(dataset.n_users, dtype=bool)
    wanted[users] = True
    observed = _observed(dataset).to_csr()
    picked_users, picked_items = [], []
    col_best = torch.full((dataset.n_items,), math.inf)
    col_user = torch.full((dataset.n_items,), -1, dtype=torch.long)
    for start in range(0, scan.size, batch_size):
        batch = scan[start:start + batch_size]
        scores = _masked_scores(scorer, batch, observed)
        row_low, row_item = scores[torch.from_numpy(wanted[batch])].min(dim=1)
        found = torch.isfinite(row_low).numpy()  # a user who interacted with every item gets no edge
        picked_users.append(batch[wanted[batch]][found])
        picked_items.append(row_item.numpy()[found])
        col_low, col_row = scores.min(dim=0)
        better = col_low < col_best  # strict: ties keep the earlier (lower-index) user
        col_best = torch.where(better, col_low, col_best)
        col_user = torch.where(better, torch.from_numpy(batch)[col_row], col_user)
    item_side = col_user.numpy()[items]
    found = item_side >= 0
    all_users = np.concatenate(picked_users + [item_side[found]])
    all_items = np.concatenate(picked_items + [items[found]])
    return Interactions.from_arrays(all_users, all_items, dataset.n_users, dataset.n_items, on_duplicate="drop")


def _sample_fraction(rng: np.random.Generator, candidates: np.ndarray, rho: float) -> np.ndarray:
    count = _fraction_count(_check_rho(rho, allow_zero=True), candidates.size)
    return np.sort(rng.choice(candidates, size=count, replace=False))


def _observed(dataset: Dataset) -> Interactions:
    return dataset.train.union(dataset.valid).union(dataset.test)


def _masked_scores(scorer, batch: np.ndarray, observed) -> torch.Tensor:
    """Scores [len(batch), n_items] on the CPU, +inf where the user already has an interaction."""
    scores = scorer.score_users(torch.from_numpy(batch)).detach().float().cpu()
    rows = observed[batch]
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    mask[torch.from_numpy(np.repeat(np.arange(batch.size), np.diff(rows.indptr))),
         torch.from_numpy(rows.indices.astype(np.int64))] = True
    return scores.masked_fill(mask, math.inf)


def poisoned_dataset(dataset: Dataset, injected: Interactions) -> Dataset:
    """`dataset` with the injected edges added to its training set; they must be new interactions."""
    clash = _observed(dataset).contains(injected.users, injected.items)
    if clash.any():
        k = int(np.flatnonzero(clash)[0])
        raise DataError(f"injected edge (user {_label(dataset.user_ids, injected.users[k])}, item "
                        f"{_label(dataset.item_ids, injected.items[k])}) is already an interaction of "
                        f"{dataset.name!r}: injected edges must be new")
    return dataset.with_train(dataset.train.union(injected))


def adversarial_request(poisoned: Dataset, injected: Interactions, seed: int,
                        params: dict[str, Any] | None = None) -> Request:
    """The request to forget exactly the injected edges, made for the poisoned dataset."""
    if not poisoned.train.contains(injected.users, injected.items).all():
        raise DataError("the injected edges are not all in this dataset's training set: pass the dataset "
                        "returned by poisoned_dataset(dataset, injected)")
    return Request.create(poisoned, "adversarial", params or {}, seed, injected)


def injected_edges(path: str | Path, clean: Dataset) -> Interactions:
    """The edges of an adversarial request file, read against the clean dataset it was made from, so that
    the poisoned dataset can be rebuilt (`poisoned_dataset(clean, edges)`) and its model trained."""
    source = str(path)
    data = _read_json(Path(path))
    if not (isinstance(data, dict) and data.get("format") == FORMAT and data.get("kind") == "adversarial"):
        raise DataError(f"{source}: not an adversarial request file (make one with "
                        "`recunlearn request make --spec adversarial:1.0 --checkpoint CLEAN_MODEL`)")
    if data.get("origin_hash") != clean.hash:
        raise DataError(f"{source} was made from data {data.get('origin_hash')} of {data.get('dataset')!r}, "
                        f"not from {clean.name!r} as loaded now ({clean.hash})")
    columns = _require(data.get("edges", {}), ("user", "item"), f"{source}: edges")
    users = clean.user_ids.index(columns["user"], kind="user")
    items = clean.item_ids.index(columns["item"], kind="item")
    return Interactions.from_arrays(users, items, clean.n_users, clean.n_items)


# ----------------------------------------------------------------------------------------------- specs

def modality_request(dataset: Dataset, modality: str, rho: float, seed: int = 0) -> Request:
    """A modality constraint: the `modality` features of ceil(rho * n_items) random items may no longer be
    used (e.g. a revoked image licence). No interaction is forgotten; the rows leave every model input."""
    _check_modality(dataset, modality)
    rho = _check_rho(rho)
    count = _fraction_count(rho, dataset.n_items)
    items = np.sort(np.random.default_rng(seed).choice(dataset.n_items, size=count, replace=False))
    return Request.create(dataset, "modality", {"modality": modality, "rho": rho}, seed,
                          Interactions.empty(dataset.n_users, dataset.n_items), withdrawn={modality: items})


def _check_modality(dataset: Dataset, modality: str) -> None:
    if modality not in dataset.modalities:
        known = ", ".join(sorted(dataset.modalities))
        hint = f"its modalities are {known}" if known else \
            "it has no item features (MovieLens: add data.modalities=[text]; your own: data.feature_files)"
        raise DataError(f"dataset {dataset.name!r} has no {modality!r} features to withdraw: {hint}")


# Generators by kind, called as GENERATORS[kind](dataset, seed=seed, **params) with parse_spec's params;
# adversarial requests need a trained scorer instead (adversarial_edges).
GENERATORS: dict[str, Callable[..., Request]] = {"random": random_request, "user": user_request,
                                                 "item": item_request, "modality": modality_request}


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """A compact request spec -> (kind, params): `random:0.01`, `user:0.01:core`, `item:0.05:popular`,
    `adversarial:1.0` (rho for users and items), `adversarial:1.0:0.5` (users, items) or `modality:image:0.1`
    (the image features of 10% of the items withdrawn)."""
    kind, *args = text.strip().lower().split(":")
    try:
        params = _spec_params(kind, args)
    except ValueError:
        params = None
    if params is None:
        raise ValueError(f"bad request spec {text!r}; valid forms: {', '.join(SPEC_FORMS)}, with RHO a fraction "
                         "in (0, 1] (e.g. random:0.01, user:0.05:core, adversarial:1.0, modality:image:0.1)")
    return kind, params


def _spec_params(kind: str, args: list[str]) -> dict[str, Any] | None:
    modes = {"user": USER_MODES, "item": ITEM_MODES}
    if kind == "random" and len(args) == 1:
        return {"rho": _check_rho(float(args[0]))}
    if kind in modes and len(args) in (1, 2) and (len(args) == 1 or args[1] in modes[kind]):
        return {"rho": _check_rho(float(args[0])), "mode": args[1] if len(args) == 2 else "random"}
    if kind == "adversarial" and len(args) in (1, 2):
        return {"rho_users": _check_rho(float(args[0])), "rho_items": _check_rho(float(args[-1]))}
    if kind == "modality" and len(args) == 2 and args[0]:
        return {"modality": args[0], "rho": _check_rho(float(args[1]))}
    return None
