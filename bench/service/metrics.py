"""The service's Prometheus metrics, on prometheus_client: one registry per service, every name prefixed.

Values that already live elsewhere (cache counters, queue depth, restarts) are read when scraped, never copied, so
there is one source of truth for each number. The process's own CPU time, memory and open files come from
prometheus_client's process collector under the same prefix.
"""

from __future__ import annotations

from typing import Callable, Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

prometheus_client.disable_created_metrics()  # no *_created series: counters here start with the service

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_PLAIN_0_0_4
NAMESPACE = "structbench"
PREFIX = NAMESPACE + "_"  # every metric's name starts with it, so none clashes in a shared Prometheus
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ReadAtScrape(Collector):
    """Counters and gauges whose values their owners hold: (name, help, kind, read) each."""

    def __init__(self, values: list[tuple[str, str, str, Callable[[], float]]]) -> None:
        self.values = values

    def collect(self) -> Iterable:
        for name, doc, kind, read in self.values:
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(PREFIX + name, doc, value=float(read()))


class ServiceMetrics:
    """The service's metrics; cache, queue and restart figures are read from their owners through callbacks."""

    def __init__(self, *, cache_hits: Callable[[], float], cache_misses: Callable[[], float],
                 queue_depth: Callable[[], float], failed_batches: Callable[[], float],
                 restarts: Callable[[], float] = lambda: 0) -> None:
        reg = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("requests", "HTTP requests by endpoint and status code.", ("endpoint", "status"),
                                namespace=NAMESPACE, registry=reg)
        self.errors = Counter("errors", "Error responses by kind.", ("kind",), namespace=NAMESPACE, registry=reg)
        self.latency = Histogram("request_latency_seconds", "Time from request to response, by endpoint.",
                                 ("endpoint",), namespace=NAMESPACE, registry=reg, buckets=LATENCY_BUCKETS)
        self.batch_size = Histogram("batch_size", "Texts per model call.", namespace=NAMESPACE, registry=reg,
                                    buckets=BATCH_BUCKETS)
        self.replica_batches = Counter("replica_batches", "Model calls by replica.", ("replica",),
                                       namespace=NAMESPACE, registry=reg)
        self.replica_texts = Counter("replica_texts", "Texts computed by replica.", ("replica",),
                                     namespace=NAMESPACE, registry=reg)
        reg.register(ReadAtScrape([
            ("cache_hits", "Answers served from the cache.", "counter", cache_hits),
            ("cache_misses", "Cache look-ups that found nothing.", "counter", cache_misses),
            ("queue_depth", "Texts waiting for the model.", "gauge", queue_depth),
            ("failed_batches", "Model calls that raised (each fails only its own batch).", "counter", failed_batches),
            ("replica_restarts", "Replica processes restarted after they died.", "counter", restarts)]))
        ProcessCollector(namespace=NAMESPACE, registry=reg)

    def observe_batch(self, size: int, replica: int) -> None:
        self.batch_size.observe(size)
        self.replica_batches.labels(str(replica)).inc()
        self.replica_texts.labels(str(replica)).inc(size)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def count_error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def render(self) -> str:
        return prometheus_client.generate_latest(self.registry).decode("utf-8")
