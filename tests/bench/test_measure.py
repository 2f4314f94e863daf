"""The harness's clock: from the `unlearn` call to the first query the returned scorer answers, with what a
method's own clock leaves out (validation passes) subtracted and recorded."""
from __future__ import annotations

import time

import numpy as np
import torch

from recunlearn.bench.measure import break_even, timed_unlearn
from recunlearn.unlearn.base import Unlearner
from bench.tiny import tiny_dataset

FIRST_QUERY_DELAY = 0.3
EPOCHS, VALIDATION = 0.1, 0.3


class LazyScorer:
    """Defers its work to the first query, as a method with a lazy readout would."""

    n_users, n_items = 48, 36

    def __init__(self, delay: float = FIRST_QUERY_DELAY):
        self.ready, self.delay = False, delay

    def score_users(self, users):
        if not self.ready:
            time.sleep(self.delay)
            self.ready = True
        return torch.zeros(len(users), self.n_items)

    def score_pairs(self, users, items):
        return torch.zeros(len(users))


class ClaimsNoTime(Unlearner):
    """An approximate method whose scorer defers its work to the first query, and which reports no time."""

    name, kind = "claims-no-time", "approximate"

    def _unlearn(self, edges, residual):
        result = self._result(LazyScorer(), residual, edges)
        result.seconds["total"] = 0.0
        return result


class Validates(Unlearner):
    """An exact method that reports its training epochs alone, as Retrain does with early stopping."""

    name, kind = "validates", "exact"

    def _unlearn(self, edges, residual):
        start = time.perf_counter()
        time.sleep(EPOCHS)
        epochs = time.perf_counter() - start
        time.sleep(VALIDATION)
        result = self._result(LazyScorer(delay=0.0), residual, edges)
        result.seconds["total"] = epochs
        return result


class DummyModel(torch.nn.Module):
    n_users, n_items = 48, 36


def one_edge(data):
    return data.train.select(np.arange(len(data.train)) == 0)


def test_an_approximate_method_is_timed_until_its_scorer_answers_whatever_it_reports():
    data = tiny_dataset()
    method = ClaimsNoTime().prepare(DummyModel(), data)
    _, timings = timed_unlearn(method, one_edge(data))
    assert timings["method_total"] == 0.0 and timings["clock"] == "harness"
    assert timings["unlearn"] == timings["unlearn_wall"] >= FIRST_QUERY_DELAY


def test_an_exact_method_is_counted_without_its_validation_passes_which_are_recorded():
    data = tiny_dataset()
    method = Validates().prepare(DummyModel(), data)
    _, timings = timed_unlearn(method, one_edge(data))
    assert timings["clock"] == "training epochs"
    assert EPOCHS <= timings["unlearn"] < EPOCHS + VALIDATION / 2
    assert timings["excluded"] >= VALIDATION * 0.9
    assert timings["unlearn"] + timings["excluded"] == timings["unlearn_wall"]


def test_break_even_is_preparation_over_the_time_saved_per_request():
    assert break_even(100.0, 30.0, 5.0) == 4.0
    assert break_even(0.0, 30.0, 5.0) == 0.0
    assert break_even(10.0, 5.0, 5.0) == float("inf")      # never pays off
