"""Prometheus text exposition (format 0.0.4), hand-written: three small metric types, no external dependency.

Values that already live elsewhere (cache counters, queue depth) are read when scraped, never copied, so there is
one source of truth for each number.
"""

from __future__ import annotations

import math
import threading
from typing import Callable, Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "structbench_"  # every service metric's name starts with it, so none clashes in a shared Prometheus
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    """A monotonically increasing count per label combination."""

    kind = "counter"

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        self._values: dict[LabelValues, float] = {}
        self._lock = threading.Lock()

    def inc(self, *labelvalues: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labelvalues] = self._values.get(labelvalues, 0.0) + amount

    def value(self, *labelvalues: str) -> float:
        with self._lock:
            return self._values.get(labelvalues, 0.0)

    def samples(self) -> Iterable[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]
        for values, count in items:
            yield f"{self.name}{_labels(self.labelnames, values)} {_number(count)}"


class CallbackValue:
    """A counter or gauge whose value is read from its owner at scrape time."""

    def __init__(self, name: str, doc: str, read: Callable[[], float], kind: str = "gauge") -> None:
        self.name, self.doc, self.read, self.kind = name, doc, read, kind

    def samples(self) -> Iterable[str]:
        yield f"{self.name} {_number(self.read())}"


class Histogram:
    """Cumulative buckets plus _sum and _count per label combination."""

    kind = "histogram"

    def __init__(self, name: str, doc: str, buckets: Sequence[float], labelnames: Sequence[str] = ()) -> None:
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._series: dict[LabelValues, list[float]] = {}  # per-bucket counts, then sum, then count
        self._lock = threading.Lock()

    def observe(self, value: float, *labelvalues: str) -> None:
        with self._lock:
            series = self._series.setdefault(labelvalues, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += value
            series[-1] += 1

    def samples(self) -> Iterable[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for values, series in items:
            for bound, count in zip(self.buckets, series):
                le = f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{_labels(self.labelnames, values, le)} {_number(count)}"
            yield f"{self.name}_sum{_labels(self.labelnames, values)} {_number(series[-2])}"
            yield f"{self.name}_count{_labels(self.labelnames, values)} {_number(series[-1])}"


class Registry:
    """An ordered set of metrics rendered together."""

    def __init__(self) -> None:
        self.metrics: list = []

    def add(self, metric):
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics:
            lines.append(f"# HELP {metric.name} {metric.doc}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"


class ServiceMetrics:
    """The service's metrics; cache and queue figures are read from their owners through callbacks."""

    def __init__(self, *, cache_hits: Callable[[], float], cache_misses: Callable[[], float],
                 queue_depth: Callable[[], float], failed_batches: Callable[[], float],
                 restarts: Callable[[], float] = lambda: 0) -> None:
        reg = self.registry = Registry()
        self.requests = reg.add(Counter(PREFIX + "requests_total", "HTTP requests by endpoint and status code.",
                                        ("endpoint", "status")))
        self.errors = reg.add(Counter(PREFIX + "errors_total", "Error responses by kind.", ("kind",)))
        reg.add(CallbackValue(PREFIX + "cache_hits_total", "Answers served from the cache.", cache_hits, "counter"))
        reg.add(CallbackValue(PREFIX + "cache_misses_total", "Cache look-ups that found nothing.", cache_misses, "counter"))
        self.latency = reg.add(Histogram(PREFIX + "request_latency_seconds", "Time from request to response, by endpoint.",
                                         LATENCY_BUCKETS, ("endpoint",)))
        self.batch_size = reg.add(Histogram(PREFIX + "batch_size", "Texts per model call.", BATCH_BUCKETS))
        reg.add(CallbackValue(PREFIX + "queue_depth", "Texts waiting for the model.", queue_depth))
        reg.add(CallbackValue(PREFIX + "failed_batches_total", "Model calls that raised (each fails only its own batch).",
                              failed_batches, "counter"))
        self.replica_batches = reg.add(Counter(PREFIX + "replica_batches_total", "Model calls by replica.", ("replica",)))
        self.replica_texts = reg.add(Counter(PREFIX + "replica_texts_total", "Texts computed by replica.", ("replica",)))
        reg.add(CallbackValue(PREFIX + "replica_restarts_total", "Replica processes restarted after they died.", restarts,
                              "counter"))

    def observe_batch(self, size: int, replica: int) -> None:
        self.batch_size.observe(size)
        self.replica_batches.inc(str(replica))
        self.replica_texts.inc(str(replica), amount=size)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.inc(endpoint, str(status))
        self.latency.observe(seconds, endpoint)

    def count_error(self, kind: str) -> None:
        self.errors.inc(kind)

    def render(self) -> str:
        return self.registry.render()
