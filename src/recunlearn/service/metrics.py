"""Prometheus metrics of one service process: the ledger's state, read at each scrape (erasures by status,
queue depth, newest model version), and the acknowledgement latency of erasure requests."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .ledger import Ledger
from .versions import current_version
from .work_queue import counts_by_status, queue_depth

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LedgerCollector(Collector):
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def collect(self):
        with self.ledger.reading() as session:
            counts, depth, head = counts_by_status(session), queue_depth(session), current_version(session)
        by_status = GaugeMetricFamily("recunlearn_erasures", "Erasures in the ledger, by status", labels=["status"])
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield by_status
        yield GaugeMetricFamily("recunlearn_erasure_queue_depth",
                                "Acknowledged erasures waiting for a published model (pending or in progress)",
                                value=depth)
        yield GaugeMetricFamily("recunlearn_model_version", "Newest published model version (0: none yet)",
                                value=head.version if head is not None else 0)


class ServiceMetrics:
    """The registry this process exposes at /metrics (one per app, so that several apps can coexist)."""

    def __init__(self, ledger: Ledger):
        self.registry = CollectorRegistry()
        self.registry.register(LedgerCollector(ledger))
        self.acknowledgement = Histogram(
            "recunlearn_erasure_acknowledgement_seconds",
            "Seconds from receiving an erasure request to its committed ledger row (new erasures only)",
            buckets=LATENCY_BUCKETS, registry=self.registry)
