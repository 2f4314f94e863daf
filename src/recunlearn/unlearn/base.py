"""The Unlearner contract: `prepare(model, dataset)` once, then `unlearn(request)` per deletion.

Every method, exact or approximate, answers the same calls, so that the CLI, the benchmark harness and the
service drive any registered method without knowing its internals:

- `prepare(model, dataset) -> self`: the one-off cost (encoder pre-training, shard training, ...), timed
  into `prepare_seconds`. It never reads the test split.
- `unlearn(request) -> UnlearnResult`: forget a set of current training edges. The result holds a Scorer
  that answers queries for the residual data (plus the new model state when the method has one), the
  residual dataset, the cumulative forgotten set and `seconds["total"]`, timed the same way for every
  method: from receiving the request to a scorer that has answered its first query (readout included);
  a method that trains from scratch reports its training epochs, without validation or evaluation passes.
  Requests compose: each starts from the previous result. Forgotten edges are never fed back as training
  positives.
- `save(dir)` / `load(dir, model, dataset)`: the method's private working state (it may hold what the
  method needs to continue, such as the forgotten edges; it is not a deliverable to ship).

An item take-down may also take items out of the catalogue (`UnlearnResult.removed_items`); whoever answers
queries for such a state scores them with `RemovedItemsScorer` (`without_removed`), so that no list holds them.
"""
from __future__ import annotations

import json
import pickle
import time
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import ValidationError

from ..config import StrictConfig
from ..data.interactions import Dataset, Interactions
from ..data.requests import Request
from ..eval.scorer import Scorer
from ..models.base import Recommender
from ..train.checkpoint import error_reason
from ..train.config import RunConfig

Kind = Literal["exact", "approximate", "control"]
STATE_FILE, FORGOTTEN_FILE, WEIGHTS_FILE = "unlearner.json", "forgotten.npz", "weights.pt"
# where a checkpoint keeps its prepared states: CHECKPOINT/unlearners/METHOD/DATA_HASH (see recunlearn.erasure)
UNLEARNERS_DIR = "unlearners"
WITHDRAWN_FILE = "withdrawn.npz"
# What an item out of the catalogue scores: below any real score, but finite, so that attacks and AUCs stay defined.
REMOVED_SCORE = -1e4


# How a damaged or foreign file of a saved state fails to load (JSON, numpy archives, torch files); plain
# ValueErrors are left alone: a method's own refusals (e.g. an encoder of other weights) say what to do.
_UNREADABLE = (OSError, EOFError, KeyError, IndexError, RuntimeError, UnicodeDecodeError, json.JSONDecodeError,
               pickle.UnpicklingError, zipfile.BadZipFile)


class PreparedStateError(ValueError):
    """A saved unlearner state is damaged, or of an older format: it has to be prepared again."""


class NoConfig(StrictConfig):
    """A method without settings of its own."""


@dataclass
class UnlearnResult:
    """The state after a request: what answers queries now, over which data, and what it cost."""

    scorer: Scorer                        # scores for the residual data (the model itself for embedding methods)
    dataset: Dataset                      # `train` is the residual training set
    forgotten: Interactions               # cumulative forgotten pairs since `prepare`
    seconds: dict[str, float]             # "total" always; a method may add its parts ("zero_shot", ...)
    kind: Kind
    model: Recommender | None = None      # the new model state, for methods that have one
    report: dict = field(default_factory=dict)
    # items out of the catalogue since `prepare` (a take-down), which `scorer` never recommends
    removed_items: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


class RemovedItemsScorer:
    """`model`'s scores with the `removed` items at REMOVED_SCORE for every user."""

    def __init__(self, model: Scorer, removed: np.ndarray):
        self.model, self.removed = model, torch.as_tensor(np.asarray(removed, np.int64), dtype=torch.long)
        self.n_users, self.n_items = model.n_users, model.n_items
        self._mask = torch.zeros(model.n_items, dtype=torch.bool)
        self._mask[self.removed] = True

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.model.score_users(users).masked_fill(self._mask, REMOVED_SCORE)

    @torch.no_grad()
    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.model.score_pairs(users, items).masked_fill(self._mask[items], REMOVED_SCORE)


def without_removed(scorer: Scorer, removed: np.ndarray) -> Scorer:
    """`scorer` with the `removed` items out of the catalogue (scorer itself when there are none)."""
    return RemovedItemsScorer(scorer, removed) if len(removed) else scorer


class Unlearner(ABC):
    """Base of every unlearning method; subclasses implement `_unlearn` (and `_prepare` when they have one)."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    config_class: ClassVar[type[StrictConfig]] = NoConfig
    needs_run: ClassVar[bool] = False     # the method trains the backbone: it needs the original run config
    # Whether a result carries one model (an embedding state to write as a checkpoint); an ensemble or a
    # serving-time filter answers through its scorer only.
    has_model: ClassVar[bool] = True
    # Whether the method adapts the model to a modality constraint (a request that withdraws item features and
    # forgets no edge); a method that only forgets edges has nothing to do with one.
    adapts_to_withdrawals: ClassVar[bool] = False
    # Config fields read only when a request arrives: two configs that differ only here prepare identically,
    # so one prepared state serves both (e.g. zero-shot and fine-tuned UnlearnRec).
    request_time_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: StrictConfig | dict | None = None, *, run: RunConfig | None = None,
                 progress: bool = True, cache_dir: str | Path | None = None):
        self.config = config if isinstance(config, self.config_class) else self.config_class.model_validate(config or {})
        if self.needs_run and run is None:
            raise ValueError(f"{self.name} trains the backbone: pass run=<the original model's RunConfig>")
        self.run, self.progress, self.cache_dir = run, progress, cache_dir
        self.prepare_seconds = 0.0
        self.state: UnlearnResult | None = None

    @classmethod
    def has_preparation(cls) -> bool:
        """Whether the method has a one-off step worth preparing ahead of requests (it overrides `_prepare`)."""
        return cls._prepare is not Unlearner._prepare

    def preparation_config(self) -> dict:
        """The settings `prepare` depends on (the config without the request-time fields)."""
        return self.config.model_dump(mode="json", exclude=set(self.request_time_fields))

    def preparation_report(self) -> dict:
        """What preparation decided (plain values for benchmark rows, e.g. a selected epoch); none by default."""
        return {}

    def with_request_settings(self, config: StrictConfig) -> None:
        """Take the request-time fields of `config` (e.g. after loading a state prepared with other ones)."""
        self.config = self.config.model_copy(update={f: getattr(config, f) for f in self.request_time_fields})

    # --- the contract ------------------------------------------------------------------------------
    def prepare(self, model: Recommender, dataset: Dataset) -> "Unlearner":
        """One-off set-up before any request, timed into `prepare_seconds`."""
        start = time.perf_counter()
        model.eval()
        self.original, self.original_data = model, dataset
        self._prepare(model, dataset)
        self.state = UnlearnResult(model, dataset, Interactions.empty(dataset.n_users, dataset.n_items), {},
                                   self.kind, model=model)
        self.prepare_seconds = time.perf_counter() - start
        return self

    def unlearn(self, request: Request | Interactions) -> UnlearnResult:
        """Forget `request` (current training edges); timed up to the first answered query."""
        edges = request.edges if isinstance(request, Request) else request
        start = time.perf_counter()
        residual = self._residual(edges, request if isinstance(request, Request) else None)
        result = self._unlearn(edges, residual)
        result.scorer.score_users(torch.zeros(1, dtype=torch.long))   # a queryable model: readout done
        result.seconds["wall"] = time.perf_counter() - start
        # A method that trains (Retrain) reports its epochs alone: validation and evaluation passes are not
        # part of unlearning, and a cached reference reports the epochs recorded when it was trained.
        result.seconds.setdefault("total", result.seconds["wall"])
        self.state = result
        return result

    def _prepare(self, model: Recommender, dataset: Dataset) -> None:
        """The method's one-off set-up (none by default)."""

    @abstractmethod
    def _unlearn(self, edges: Interactions, residual: Dataset) -> UnlearnResult:
        """The new state for `residual` (the current data without `edges`); `self.state` is the current one."""

    def _result(self, scorer: Scorer, residual: Dataset, edges: Interactions, model: Recommender | None = None,
                **report) -> UnlearnResult:
        return UnlearnResult(scorer, residual, self.state.forgotten.union(edges), {}, self.kind, model, report)

    # --- requests ----------------------------------------------------------------------------------
    def _residual(self, edges: Interactions, request: Request | None = None) -> Dataset:
        """The current data without `edges`, after checking that they are current training edges; a modality
        constraint (a request with withdrawn feature rows, and possibly no edge) also withdraws those rows."""
        withdraws = request is not None and bool(request.withdrawn)
        self._check_request(edges, empty_ok=withdraws)
        residual = self.state.dataset.with_train(self.state.dataset.train.subtract(edges))
        return request.withdraw(residual) if withdraws else residual

    def _check_request(self, edges: Interactions, empty_ok: bool = False) -> None:
        if self.state is None:
            raise RuntimeError(f"{self.name}: call prepare(model, dataset) before unlearn()")
        train = self.state.dataset.train
        if (edges.n_users, edges.n_items) != (train.n_users, train.n_items):
            raise ValueError(f"the request spans {edges.n_users} users x {edges.n_items} items, the data "
                             f"{train.n_users} x {train.n_items}: it was made for another dataset")
        if len(edges) == 0 and not empty_ok:
            raise ValueError("the request is empty: nothing to forget")
        present = train.contains(edges.users, edges.items)
        if not present.all():
            k = int(present.argmin())
            raise ValueError(f"request edge (user {edges.users[k]}, item {edges.items[k]}) is not in the current "
                             f"training set (never trained on, or already forgotten; {int((~present).sum())} such "
                             "edges): only current training edges can be forgotten")

    # --- persistence of the working state ----------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """The method's working state: config, preparation time, forgotten edges, current weights."""
        if self.state is None:
            raise RuntimeError(f"{self.name}: nothing to save before prepare()")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        forgotten = self.state.forgotten
        np.savez(path / FORGOTTEN_FILE, users=forgotten.users, items=forgotten.items)
        if self.state.model is not None and self.state.model is not self.original:
            torch.save(self.state.model.state_dict(), path / WEIGHTS_FILE)
        # modality constraints applied since `prepare`: the current data is the original one without the
        # forgotten edges and with these feature rows withdrawn
        withdrawn = {name: np.setdiff1d(items, self.original_data.withdrawn.get(name, []))
                     for name, items in self.state.dataset.withdrawn.items()}
        if any(len(items) for items in withdrawn.values()):
            np.savez(path / WITHDRAWN_FILE, **withdrawn)
        meta = {"method": self.name, "config": self.config.model_dump(mode="json"),
                "prepare_seconds": self.prepare_seconds, "forgotten_hash": forgotten.hash,
                "original_train_hash": self.original_data.train.hash}
        (path / STATE_FILE).write_text(json.dumps(meta, indent=2))
        self._save_extra(path)
        return path

    @classmethod
    def load(cls, path: str | Path, model: Recommender, dataset: Dataset, *, run: RunConfig | None = None,
             progress: bool = True, cache_dir: str | Path | None = None) -> "Unlearner":
        """The state saved by `save`, for the original `model` and `dataset` it was prepared with. A damaged
        state, or one of an older format, gives a PreparedStateError naming the file and how to prepare again."""
        path = Path(path)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"no saved {cls.name} state in {path}: run `recunlearn prepare --method "
                                    f"{cls.name}` first")
        meta = _read_state(path, cls.name)
        if meta["method"] != cls.name:
            raise ValueError(f"{path} holds the state of method {meta['method']!r}, not {cls.name!r}")
        if meta["original_train_hash"] != dataset.train.hash:
            raise ValueError(f"{path} was prepared for training data {meta['original_train_hash']}, not this "
                             f"model's {dataset.train.hash}: prepare it again")
        try:
            self = cls(meta["config"], run=run, progress=progress, cache_dir=cache_dir)
        except ValidationError as err:   # a setting renamed or removed since the state was saved
            raise damaged_state(path, cls.name, err, path / STATE_FILE) from None
        self.original, self.original_data = model, dataset
        self.prepare_seconds = meta["prepare_seconds"]
        try:
            pairs = _read_arrays(path / FORGOTTEN_FILE, cls.name, keys=("users", "items"))
            forgotten = Interactions.from_arrays(pairs["users"], pairs["items"], dataset.n_users, dataset.n_items)
            residual = dataset.with_train(dataset.train.subtract(forgotten))
            if (path / WITHDRAWN_FILE).is_file():
                for name, items in _read_arrays(path / WITHDRAWN_FILE, cls.name).items():
                    residual = residual.with_withdrawn(name, items)
            current = None
            if (path / WEIGHTS_FILE).is_file():
                from ..data.graph import build_graph
                current = model.clone()
                current.load_state_dict(torch.load(path / WEIGHTS_FILE, weights_only=True))
                current.attach(build_graph(residual.train)).eval()
            self._load_extra(path, model, dataset)
        except PermissionError:   # an access problem, not damage: deleting the state would not help
            raise
        except _UNREADABLE as err:
            raise damaged_state(path, cls.name, err) from None
        self.state = self._restore(model, current, residual, forgotten)
        return self

    def _restore(self, original: Recommender, current: Recommender | None, residual: Dataset,
                 forgotten: Interactions) -> UnlearnResult:
        """The state after loading: by default the saved model (or the original when nothing was forgotten)."""
        model = current if current is not None else original
        return UnlearnResult(model, residual, forgotten, {}, self.kind, model)

    def _save_extra(self, path: Path) -> None:
        """Method-specific files (e.g. an encoder)."""

    def _load_extra(self, path: Path, model: Recommender, dataset: Dataset) -> None:
        """Read what `_save_extra` wrote."""


def damaged_state(path: Path, method: str, problem: Exception | str, file: Path | None = None) -> PreparedStateError:
    """The error for a saved state (folder `path`) that cannot be loaded because of `problem` (an error, or what
    is wrong), naming the damaged `file` when it is known or can be found, and how to prepare the state again."""
    if file is None:
        own = isinstance(problem, OSError) and problem.filename
        file = Path(problem.filename) if own else _broken_archive(path) or path
    if isinstance(problem, str):
        reason = problem
    elif isinstance(problem, pickle.UnpicklingError):   # torch's own message would suggest an unsafe load
        reason = "it does not load as plain tensors"
    elif isinstance(problem, ValidationError):
        first = problem.errors()[0]
        reason = f"{first['msg']} at {'.'.join(map(str, first['loc']))}"
    elif isinstance(problem, KeyError):
        reason = f"missing key: {error_reason(problem)}"
    else:
        reason = error_reason(problem)
    return PreparedStateError(f"{file}: unreadable ({reason}); the saved {method} state is damaged or of an older "
                              f"format: {_prepare_again(path, method)}")


def _prepare_again(path: Path, method: str) -> str:
    """How to replace a saved state: a checkpoint's (CHECKPOINT/unlearners/METHOD/DATA_HASH) is prepared again
    by the CLI; another keeper's (the benchmark's cache) is prepared again once it is gone."""
    if path.parent.name == method and path.parent.parent.name == UNLEARNERS_DIR:
        return f"delete {path} and run `recunlearn prepare --checkpoint {path.parents[2]} --method {method}` again"
    return f"delete {path} and prepare it again"


def _broken_archive(path: Path) -> Path | None:
    """The first of the state's tensor and array files that is not a whole zip archive (torch.save and np.savez
    both write one; a truncated or overwritten file is not)."""
    files = sorted(path.glob("*.pt")) + sorted(path.glob("*.npz"))
    return next((file for file in files if not zipfile.is_zipfile(file)), None)


def _read_state(path: Path, method: str) -> dict:
    """The state's unlearner.json, checked for the keys `load` reads."""
    file = path / STATE_FILE
    try:
        meta = json.loads(file.read_text())
    except PermissionError:   # an access problem, not damage: deleting the state would not help
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise damaged_state(path, method, err, file) from None
    keys = ("method", "config", "prepare_seconds", "original_train_hash")
    missing = [key for key in keys if key not in meta] if isinstance(meta, dict) else list(keys)
    if missing:
        raise damaged_state(path, method, f"no {', '.join(missing)}", file)
    return meta


def _read_arrays(file: Path, method: str, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays of one of the state's .npz files, which must hold `keys`."""
    try:
        with np.load(file) as z:
            arrays = {key: z[key] for key in z.files}
    except PermissionError:   # an access problem, not damage: deleting the state would not help
        raise
    except (*_UNREADABLE, ValueError) as err:   # ValueError: numpy refusing a file that is no archive
        raise damaged_state(file.parent, method, err, file) from None
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise damaged_state(file.parent, method, f"no array {', '.join(missing)}", file)
    return arrays


def forget_isolated_nodes(model: Recommender, before: Dataset, after: Dataset, seed: int) -> dict[str, int]:
    """Users and items that had interactions in `before` and have none left in any split of `after` (a full
    erasure of a person or an item) get their 0-layer rows drawn afresh, as a model trained without them
    would hold: no row learned from their data survives the erasure, whatever the method left there."""
    def degree(data: Dataset) -> np.ndarray:
        splits = (data.train, data.valid, data.test)
        return (sum(np.bincount(s.users, minlength=data.n_users) for s in splits),
                sum(np.bincount(s.items, minlength=data.n_items) for s in splits))

    (users_before, items_before), (users_after, items_after) = degree(before), degree(after)
    users = np.flatnonzero((users_before > 0) & (users_after == 0))
    items = np.flatnonzero((items_before > 0) & (items_after == 0))
    if len(users) or len(items):
        nodes = torch.from_numpy(np.concatenate([users, items + before.n_users]))
        model.reinitialise(nodes, torch.Generator().manual_seed(seed))
    return {"users": int(len(users)), "items": int(len(items))}
