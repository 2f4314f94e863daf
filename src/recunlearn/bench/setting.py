"""A benchmark setting: the original model of one seed and the request it must forget.

For seed s the original is trained with seed s (cached by data hash, run config and code version) and the
request is drawn with seed s. An adversarial request follows the UnlearnRec protocol: the clean model of
seed s (the *selector*) picks each user's and item's least-likely partner, the original is trained with
seed s on the poisoned data, and the request is exactly the injected edges. The Retrain reference is never
the selector (evaluation.md rule 2): it is trained by the Retrain unlearner with another seed.

Membership inference needs non-members of the same kind as the members (rule 5). For a random, user or item
request they are held-out test interactions (the audit's default). For an adversarial request they are the
selector's next least-likely pairs, found by the same procedure on the poisoned data, so that no injected
pair (nor any real interaction) is among them; they are passed to the audit as its `test` set, and the real
held-out pairs as part of its `valid` set, which the audit only uses to keep its random non-edges apart from
known pairs. Utility is always measured on the real test set.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable

from ..data.interactions import Dataset, Interactions
from ..data.requests import GENERATORS, Request, adversarial_edges, adversarial_request, parse_spec, \
    poisoned_dataset
from ..models.base import Recommender
from ..train.cache import run_key, train_cached
from ..train.config import DataConfig, RunConfig
from ..train.inputs import load_data
from ..train.version import TRAINING_PACKAGES
from . import provenance
from .environment import load_average

Loader = Callable[[str, DataConfig], Dataset]


def registry_loader(name: str, data: DataConfig) -> Dataset:
    """A named benchmark dataset, or your own files when the suite's dataset entry has a `path`."""
    return load_data(data.model_copy(update={"name": name}))


@dataclass
class Trained:
    """A model from the training cache, with the timing of the run that made it."""

    model: Recommender
    seconds: float                 # the whole fit, validation passes included
    train_seconds: float           # the epochs alone
    seconds_to_best: float
    best_epoch: int
    reused: bool                   # the cache answered: the timing is the recorded one
    provenance: dict | None        # where the recorded timing was measured (None: unknown)


@dataclass
class Setting:
    dataset: str
    backbone: str
    spec: str
    seed: int
    run: RunConfig                 # the original's run config
    data: Dataset                  # the original's training data (poisoned for an adversarial request)
    request: Request
    residual: Dataset              # `data` without the request
    original: Trained
    audit_test: Interactions       # where the audit draws its membership non-members
    audit_valid: Interactions      # pairs the audit's random non-edges must avoid, besides train and test
    selector: Trained | None = None
    extra: dict = field(default_factory=dict)


def fingerprint(model: Recommender) -> str:
    """A hash of a model's weights: tells two trained models apart, and keys caches of prepared states."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train_recorded(run: RunConfig, data: Dataset, cache_dir=None, progress: bool = True) -> Trained:
    """`train_cached`, recording where the training was timed when it trains (see `provenance`)."""
    key = training_key(run, data)
    before = load_average()
    model, meta, hit = train_cached(run, data, cache_dir, progress)
    metrics = meta["metrics"]
    if not hit:
        record = provenance.here(before, TRAINING_PACKAGES)
        provenance.remember(cache_dir, key, {**record, "seconds": metrics["seconds"]})
    return Trained(model, metrics["seconds"], metrics["train_seconds"], metrics["seconds_to_best"],
                   metrics["best_epoch"], hit, provenance.recall(cache_dir, key))


def training_key(run: RunConfig, data: Dataset) -> str:
    """The provenance key of a model trained from `run` on `data` (as `train_recorded` writes it)."""
    return f"train-{run.model.name}-{run_key(run, data)}"


def build_setting(run: RunConfig, spec: str, seed: int, load: Loader = registry_loader, cache_dir=None,
                  progress: bool = True) -> Setting:
    """The original model of `seed` (trained or from the cache) and the request drawn with `seed`."""
    if run.train.seed != seed:
        raise ValueError(f"the original of seed {seed} must be trained with seed {seed}, not {run.train.seed}")
    clean = load(run.data.name, run.data)
    kind, params = parse_spec(spec)
    if kind != "adversarial":
        request = GENERATORS[kind](clean, seed=seed, **params)
        original = train_recorded(run, clean, cache_dir, progress)
        return Setting(run.data.name, run.model.name, spec, seed, run, clean, request, _without(clean, request),
                       original, clean.test, clean.valid)
    selector = train_recorded(run, clean, cache_dir, progress)
    started = time.perf_counter()
    injected = adversarial_edges(clean, selector.model, params["rho_users"], params["rho_items"], seed)
    poisoned = poisoned_dataset(clean, injected)
    request = adversarial_request(poisoned, injected, seed, params)
    # The poisoned data counts the injected pairs as observed: the next least-likely pairs are never injected.
    non_members = adversarial_edges(poisoned, selector.model, params["rho_users"], params["rho_items"], seed)
    picking = time.perf_counter() - started
    original = train_recorded(run, poisoned, cache_dir, progress)
    return Setting(run.data.name, run.model.name, spec, seed, run, poisoned, request, _without(poisoned, request),
                   original, non_members, clean.valid.union(clean.test), selector,
                   {"injected": len(injected), "non_members": len(non_members), "picking_seconds": picking})


def _without(data: Dataset, request: Request) -> Dataset:
    return request.withdraw(data.with_train(data.train.subtract(request.edges)))
