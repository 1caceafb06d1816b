"""The service's Prometheus metrics, on prometheus_client: one registry per service, every name prefixed.

Values that already live elsewhere (cache counters, queue depth, restarts) are read when scraped, never copied, so
there is one source of truth for each number. The process's own CPU time, memory and open files come from
prometheus_client's process collector under the same prefix.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
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


def service_cpu_seconds() -> float:
    """User + system CPU seconds of this process and every process below it (replicas, a model process); those
    that ended are not counted (a restarted replica's CPU before its death is lost)."""
    import psutil

    from bench.measure.host import cpu_seconds

    me = psutil.Process()
    return cpu_seconds([me.pid, *(child.pid for child in me.children(recursive=True))])


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
            ("replica_restarts", "Replica processes restarted after they died.", "counter", restarts),
            ("service_cpu_seconds", "CPU time of the whole service: this process and its replica or model "
             "processes (process_cpu_seconds counts this one only).", "counter", service_cpu_seconds)]))
        ProcessCollector(namespace=NAMESPACE, registry=reg)
        # Per shape bucket ("rows x length"): in-service model time against the engine's at that shape (its
        # warm-up median on the serving thread), shapes first met while serving, and padding.
        self.model_seconds = Counter("model_seconds", "Model time of in-service calls, by shape.", ("shape",),
                                     namespace=NAMESPACE, registry=reg)
        self.model_calls = Counter("model_calls", "In-service model calls, by shape.", ("shape",),
                                   namespace=NAMESPACE, registry=reg)
        self.engine_seconds = Gauge("engine_seconds", "Median model time at this shape during warm-up, on the "
                                    "thread that serves it (the engine alone).", ("shape", "replica"),
                                    namespace=NAMESPACE, registry=reg)
        self.new_shapes = Counter("new_shapes", "Model calls at a shape the serving thread had not run before "
                                  "(0 after a full warm-up).", ("shape",), namespace=NAMESPACE, registry=reg)
        self.tokens = Counter("tokens", "Tokens sent to the model: real or padding.", ("kind",),
                              namespace=NAMESPACE, registry=reg)
        # Per HTTP front process: requests and CPU seconds, so CPU per request (and the front's ceiling, 1 / that
        # per core) can be read off. A one-process service reports its CPU only when the model runs elsewhere (a
        # replica or model process: `front_cpu_known`), and it then includes the batcher's tokenising.
        self.front_requests = Counter("front_requests", "HTTP requests answered, by front process.", ("front",),
                                      namespace=NAMESPACE, registry=reg)
        self.front_cpu = Gauge("front_cpu_seconds", "CPU seconds used by each front process so far.", ("front",),
                               namespace=NAMESPACE, registry=reg)
        self.front_cpu_known = False  # set once the model is known to run outside this process

    def observe_batch(self, size: int, replica: int) -> None:
        self.batch_size.observe(size)
        self.replica_batches.labels(str(replica)).inc()
        self.replica_texts.labels(str(replica)).inc(size)

    def observe_call(self, call) -> None:
        """One model call (batcher.CallRecord): its time under its shape, padding, and whether the shape was new."""
        shape = shape_label(call.shape)
        self.model_seconds.labels(shape).inc(call.seconds)
        self.model_calls.labels(shape).inc()
        self.tokens.labels("real").inc(call.tokens)
        self.tokens.labels("padding").inc(max(0, call.shape[0] * call.shape[1] - call.tokens))
        if call.new:
            self.new_shapes.labels(shape).inc()

    def set_warm(self, per_replica: list[dict]) -> None:
        for replica, times in enumerate(per_replica):
            for shape, seconds in times.items():
                self.engine_seconds.labels(shape_label(shape), str(replica)).set(seconds)

    def observe_request(self, endpoint: str, status: int, seconds: float, front: int = 0,
                        cpu_s: float | None = None) -> None:
        """One HTTP request; `cpu_s`: the front process's CPU seconds so far (None: this process's)."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        self.front_requests.labels(str(front)).inc()
        if cpu_s is not None or self.front_cpu_known:
            self.front_cpu.labels(str(front)).set(time.process_time() if cpu_s is None else cpu_s)

    def count_error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def render(self) -> str:
        return prometheus_client.generate_latest(self.registry).decode("utf-8")


def shape_label(shape: tuple[int, int]) -> str:
    """(rows, length) as a metric label: '8x64'."""
    return f"{shape[0]}x{shape[1]}"
