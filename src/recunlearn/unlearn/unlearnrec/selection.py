"""Choices made in preparation from training and validation data only: how strong the withdraw term starts
(the initial W_η), which pre-training epoch's encoder to keep, and (with `withdraw_scaling: request`) the factor
on W_η for requests of other sizes and shapes.

Each looks at a held-out simulated request, drawn with its own seed: never the request being evaluated, never
the test split. The reference is what a retrained model does with it: a random training edge it no longer
sees is, to that model, a held-out real interaction, so it ranks the request edges against validation edges
at chance: AUC 0.5 (above is under-forgetting, below is over-forgetting). A request of whole users' histories
has its own reference (`ErasedUsersProbe`): a model that never saw those users ranks their held-out items at
chance."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.stats import rankdata

from ...data.interactions import Dataset, Interactions
from ...eval.forgetting import same_user_non_edges
from ...eval.ranking import evaluate
from ...eval.scorer import EmbeddingScorer
from ...models.base import Recommender
from .encoder import InfluenceEncoder
from .training import EncoderInputs, Episode, simulated_request

# Seeds of the held-out requests, apart from the pre-training stream (seed, 0) and fine-tuning's (seed, 3).
SELECTION_STREAM, CALIBRATION_STREAM, ERASED_USERS_STREAM, SCALING_STREAM = 1, 2, 4, 100


@dataclass
class Probe:
    """A held-out simulated request and the validation edges its zero-shot model is compared with."""

    episode: Episode
    valid: Interactions

    @classmethod
    def draw(cls, dataset: Dataset, rho: float, seed: int, stream: int, idm_norm: str = "request") -> "Probe":
        if len(dataset.valid) == 0:
            raise ValueError("UnlearnRec chooses its withdraw strength and pre-training epoch on validation edges; "
                             f"{dataset.name} has none: split off a validation set")
        edges = simulated_request(dataset.train, rho, np.random.default_rng([seed, stream]))
        return cls(Episode.of(edges, dataset.train.subtract(edges), idm_norm), dataset.valid)

    @torch.no_grad()
    def scorer(self, encoder: InfluenceEncoder, backbone: Recommender, inputs: EncoderInputs,
               scale: float = 1.0) -> EmbeddingScorer:
        """The zero-shot model of this request (W_η multiplied by `scale`)."""
        e0 = encoder(inputs.e0, inputs.final, self.episode.idm, scale=scale)
        return EmbeddingScorer(*backbone.embed(self.episode.graph, e0))

    def valid_recall(self, scorer: EmbeddingScorer) -> float:
        """Validation Recall@20, the probe's residual edges masked."""
        return evaluate(scorer, self.valid, self.episode.residual, ks=[20])["Recall@20"]

    def gap(self, scorer: EmbeddingScorer) -> float:
        """AUC − 0.5 of the request edges against the validation edges (0: like a retrained model)."""
        return auc(*self.scores(scorer)) - 0.5

    def scores(self, scorer: EmbeddingScorer) -> tuple[torch.Tensor, torch.Tensor]:
        """(request-edge scores, validation-edge scores)."""
        return tuple(scorer.score_pairs(torch.from_numpy(e.users), torch.from_numpy(e.items))
                     for e in (self.episode.edges, self.valid))

    def check(self, encoder: InfluenceEncoder, backbone: Recommender, inputs: EncoderInputs) -> dict:
        """Validation Recall@20 (residual edges masked) and how the request edges score against validation edges."""
        scorer = self.scorer(encoder, backbone, inputs)
        request, valid = self.scores(scorer)
        return {"valid_recall": self.valid_recall(scorer),
                "request_auc": auc(request, valid),
                "request_mean": request.mean().item(), "valid_mean": valid.mean().item()}


@dataclass
class ErasedUsersProbe(Probe):
    """A held-out request of whole users' training histories. A model that never saw those users ranks their
    validation items at chance against items they never touched: the reference for this probe, in place of the
    request-against-validation comparison, which a retrained model does not put at chance when the users are gone
    (their request edges then score like any unknown pair, far below other users' validation edges)."""

    held_out: Interactions      # the erased users' validation edges
    non_edges: Interactions     # never-touched items of the erased users, one per validation edge

    @classmethod
    def draw(cls, dataset: Dataset, rho: float, seed: int, stream: int, idm_norm: str = "request") -> "ErasedUsersProbe":
        """`rho` of the users that have validation edges (at least one), with all their training edges."""
        rng = np.random.default_rng([seed, stream])
        candidates = np.intersect1d(np.unique(dataset.valid.users), np.unique(dataset.train.users))
        if len(candidates) == 0:
            raise ValueError("UnlearnRec's withdraw scaling needs users with both training and validation edges; "
                             f"{dataset.name} has none")
        users = rng.choice(candidates, size=max(1, round(rho * len(candidates))), replace=False)
        edges = dataset.train.select(np.isin(dataset.train.users, users))
        held_out = dataset.valid.select(np.isin(dataset.valid.users, users))
        # never the test split: preparation does not read it
        non_edges = same_user_non_edges(held_out.users, [dataset.train, dataset.valid], dataset.n_items, rng)
        return cls(Episode.of(edges, dataset.train.subtract(edges), idm_norm), dataset.valid, held_out, non_edges)

    def gap(self, scorer: EmbeddingScorer) -> float:
        """AUC − 0.5 of the erased users' validation edges against their never-touched items."""
        held_out, non_edges = (scorer.score_pairs(torch.from_numpy(e.users), torch.from_numpy(e.items))
                               for e in (self.held_out, self.non_edges))
        return auc(held_out, non_edges) - 0.5


def scale_gap(probe: Probe, encoder: InfluenceEncoder, backbone: Recommender,
              inputs: EncoderInputs) -> Callable[[float], float]:
    """gap(s): the probe's own gap (`Probe.gap`) for its zero-shot model with W_η multiplied by s."""
    def gap(scale: float) -> float:
        return probe.gap(probe.scorer(encoder, backbone, inputs, scale))
    return gap


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a `positive` score > a `negative` score), ties counting half (Mann-Whitney)."""
    ranks = rankdata(np.concatenate([positive.numpy(), negative.numpy()]))
    n_pos, n_neg = positive.numel(), negative.numel()
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def select_check(checks: list[dict], tolerance: float) -> int:
    """The index of the check to keep: among those whose validation Recall@20 is within `tolerance` (a fraction)
    of the best, the one whose held-out request edges are least distinguishable from validation edges
    (|AUC − 0.5| smallest). Forgetting more than a retrained model would is as far off as forgetting less."""
    best_recall = max(check["valid_recall"] for check in checks)
    eligible = [k for k, check in enumerate(checks) if check["valid_recall"] >= (1 - tolerance) * best_recall]
    return min(eligible, key=lambda k: (abs(checks[k]["request_auc"] - 0.5), -checks[k]["valid_recall"]))


class CheckpointKeeper:
    """The checks so far, and the encoder states that can still be selected (those within the recall
    tolerance of the best so far: the best only rises, so a state that falls out never comes back)."""

    def __init__(self, tolerance: float):
        self.tolerance = tolerance
        self.checks: list[dict] = []
        self.states: dict[int, dict] = {}

    def offer(self, check: dict, encoder: InfluenceEncoder) -> None:
        self.checks.append(check)
        self.states[len(self.checks) - 1] = copy.deepcopy(encoder.state_dict())
        floor = (1 - self.tolerance) * max(c["valid_recall"] for c in self.checks)
        self.states = {k: s for k, s in self.states.items() if self.checks[k]["valid_recall"] >= floor}

    def restore_selected(self, encoder: InfluenceEncoder) -> dict:
        """Load the selected state into `encoder`; returns its check."""
        chosen = select_check(self.checks, self.tolerance)
        encoder.load_state_dict(self.states[chosen])
        return self.checks[chosen]


def calibrate(gap: Callable[[float], float], start: float, *, max_doublings: int = 40, refine: int = 16,
              iterations: int = 40, rel_tol: float = 1e-4) -> dict:
    """The smallest withdraw rate w ≥ 0 where `gap(w)` (`withdraw_gap`: AUC − 0.5 of the zero-shot model's
    request edges against validation edges) reaches 0: bracketing from `start` (doubling), then bisection.

    The withdraw term lowers the request scores as w grows, until it overshoots and the gap rises again; a
    doubling step can jump over a narrow dip below 0, so once the gap rises the last step is scanned on a finer
    grid. If no w reaches 0 (a request that touches most of every user's edges, or a withdraw term that does
    not withdraw), or w = 0 is already below it, the closest w seen is kept and `reached` is False."""
    seen: dict[float, float] = {}

    def f(w: float) -> float:
        if w not in seen:
            seen[w] = gap(w)
        return seen[w]

    def closest() -> dict:
        return _calibrated(min(seen, key=lambda w: abs(seen[w])), seen, reached=False)

    if f(0.0) <= 0:
        return _calibrated(0.0, seen, reached=f(0.0) == 0)
    lo, hi = 0.0, max(start, 1e-6)
    for _ in range(max_doublings):
        if f(hi) <= 0:
            break
        if lo > 0 and f(hi) > f(lo):     # past the lowest point of the last two steps
            grid = np.linspace(lo / 2, hi, refine)
            below = [k for k, w in enumerate(grid) if f(float(w)) <= 0]
            if not below:
                return closest()
            lo, hi = float(grid[below[0] - 1]), float(grid[below[0]])
            break
        lo, hi = hi, 2 * hi
    else:
        return closest()
    for _ in range(iterations):
        if hi - lo <= rel_tol * hi:
            break
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return _calibrated(hi, seen, reached=True)


def _calibrated(value: float, seen: dict[float, float], reached: bool) -> dict:
    return {"withdraw_init": value, "gap": seen[value], "gap_without_withdraw": seen[0.0], "reached": reached,
            "evaluations": len(seen)}


def withdraw_gap(probe: Probe, encoder: InfluenceEncoder, backbone: Recommender,
                 inputs: EncoderInputs) -> Callable[[float], float]:
    """gap(w): AUC − 0.5 of the probe's request edges against validation edges, zero-shot, W_η = w everywhere."""
    @torch.no_grad()
    def gap(rate: float) -> float:
        encoder.withdraw.fill_(rate)
        request, valid = probe.scores(probe.scorer(encoder, backbone, inputs))
        return auc(request, valid) - 0.5
    return gap
