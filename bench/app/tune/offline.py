"""The offline half of the serving-config search: R engine processes × T intra-op threads, pinned exactly like the
service's replicas (bench.service.replicas), fed the model calls the service's batcher would make at max batch B,
for a fixed time. No HTTP, no tokenising in the timed loop: the engine's ceiling, which the service should reach.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from bench.backends import BackendConfig
from bench.core.search_records import TuneCandidate
from bench.core.stats import percentile, window_rate_ci
from bench.model.buckets import Buckets, ServiceCall, service_calls
from bench.service.replicas import start_replicas

WARMUP_CALLS = 3


@dataclass(frozen=True)
class Trial:
    replicas: int
    threads: int
    max_batch: int
    backend: str = ""

    @property
    def label(self) -> str:
        shape = f"{self.replicas}×{self.threads}t b{self.max_batch}"
        return f"{self.backend} {shape}" if self.backend else shape


def for_backend(grid: list[Trial], backend: str) -> list[Trial]:
    return [replace(c, backend=backend) for c in grid]


def candidates(cores: int, batches: Sequence[int], max_replicas: int = 16,
               oversubscribed: bool = True) -> list[Trial]:
    """Every way to split the cores into R replicas × T threads with R × T = cores (R ≤ max_replicas: each replica
    holds its own model in memory), at each max batch; plus (unless told not to) one oversubscribed point — two
    replicas that each want every core — to show what oversubscription costs (it is never recommended)."""
    pairs = [(r, cores // r) for r in range(1, min(cores, max_replicas) + 1) if cores % r == 0]
    grid = [Trial(r, t, b) for r, t in pairs for b in sorted(set(batches))]
    return grid + ([Trial(2, cores, min(batches))] if oversubscribed else [])


def gpu_candidates(cores: int, batches: Sequence[int], instances: Sequence[int] = (1, 2, 4)) -> list[Trial]:
    """On a GPU the dimension is instances per GPU (Triton's instance count): R model copies share the device and
    overlap one's host work (tokenised input copies, the Python glue) with another's kernels; each gets an equal
    share of the host's cores for that host work. Nothing is oversubscribed on purpose here: the GPU is shared by
    design."""
    return [Trial(r, max(1, cores // r), b) for r in instances for b in sorted(set(batches))]


def model_calls(tokenizer, texts: Sequence[str], max_batch: int, max_padding: float,
                buckets: Buckets | None = None) -> list[ServiceCall]:
    """The calls the service's batcher makes when `max_batch` texts are queued (buckets.service_calls)."""
    return service_calls(tokenizer, texts, max_batch, max_padding, buckets)


def drive(member, calls: list[ServiceCall], offset: int, start: float, end: float, out: list) -> None:
    """One replica's closed loop from `start` until `end`, its next call always waiting in its pipe as the
    service's batcher keeps it (a replica's link depth): (began, finished, items) per call, in seconds from
    `start`, a call beginning when the one before it finished (the last may finish after `end`)."""
    sent: deque = deque()  # items of each call sent and not yet answered, oldest first

    def send(i: int) -> None:
        call = calls[i % len(calls)]
        member.send(call.inputs)
        sent.append(call.items)

    time.sleep(max(0.0, start - time.perf_counter()))
    began = time.perf_counter()
    for i in range(offset, offset + member.depth):
        send(i)
    i = offset + member.depth
    while sent:
        member.receive()
        finished = time.perf_counter()
        out.append((began - start, finished - start, sent.popleft()))
        began = finished
        if finished < end:
            send(i)
            i += 1


def warm(members: list, calls: list[ServiceCall]) -> float:
    """A few calls on every replica (first calls allocate); the slowest warm call's seconds after the first."""
    slowest = 0.0
    for member in members:
        for j, call in enumerate(calls[:WARMUP_CALLS]):
            t0 = time.perf_counter()
            member.infer(call.inputs)
            if j > 0:  # the first call allocates: not a steady call's time
                slowest = max(slowest, time.perf_counter() - t0)
    return slowest


def timed(members: list, calls: list[ServiceCall], seconds: float) -> list[tuple]:
    """Every replica driven at once for `seconds`, each starting at a different call."""
    start = time.perf_counter() + 0.05
    records: list[list] = [[] for _ in members]
    errors: list[Exception] = []

    def run(i: int, member) -> None:  # a replica that fails (or is stopped under a signal) is this call's error
        try:
            drive(member, calls, i * len(calls) // len(members), start, start + seconds, records[i])
        except Exception as exc:  # noqa: BLE001  raised on the calling thread below, not printed by this one
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, m), daemon=True) for i, m in enumerate(members)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [r for rs in records for r in rs]


def figures(records: list[tuple], seconds: float, windows: int = 8) -> dict:
    """Throughput with a t interval across equal windows, P95 per call. A call's items are credited to the
    windows in proportion to the part of the call inside each (a batch of 8 finishing at one instant would
    otherwise make the window counts lumpy), so the windows sum to the work done within [0, seconds)."""
    window_s = seconds / windows
    edges = np.arange(windows + 1) * window_s
    counts = np.zeros(windows)
    for began, finished, items in records:
        overlap = np.clip(np.minimum(edges[1:], finished) - np.maximum(edges[:-1], began), 0.0, None)
        counts += items * overlap / max(finished - began, 1e-9)
    rate, low, high = window_rate_ci(counts, window_s)
    calls_ms = [1000 * (finished - began) for began, finished, _ in records]
    return {"items_per_s": round(rate, 3), "items_ci": (round(low, 3), round(high, 3)),
            "p95_ms": round(percentile(calls_ms, 95), 2) if calls_ms else None}


def warmed(members: list, calls: list[ServiceCall], seconds: float) -> float:
    """Warm every replica; the seconds a timed run then takes: `seconds` or 6 of its slowest warm calls, whichever
    is longer (a batch of 8 full-size texts is slow on a 2-core host, slower still on a slow one: fewer calls
    than that would make the windows mostly edge; docs/measurements.md)."""
    return max(seconds, 6 * warm(members, calls))


def run_for(members: list, calls: list[ServiceCall], seconds: float) -> dict:
    """Every replica driven at once for `seconds`: the figures of that run."""
    return figures(timed(members, calls, seconds), seconds)


def rss_mb(members: list) -> float | None:
    import psutil

    try:
        return round(sum(psutil.Process(m.pid).memory_info().rss for m in members) / 2**20, 1)
    except (psutil.Error, TypeError):
        return None


def measure_trial(cand: Trial, config: BackendConfig, calls: list[ServiceCall], seconds: float) -> TuneCandidate:
    """One candidate, offline: its replicas started and placed as the service would, warmed, then driven
    together (see warmed for how long)."""
    members, placement = start_replicas(config, cand.replicas, cand.threads, call_timeout_s=120.0)
    record = TuneCandidate(cand.replicas, cand.threads, cand.max_batch, placement.oversubscribed,
                           tuple(placement.describe()), backend=cand.backend)
    try:
        found = run_for(members, calls, warmed(members, calls, seconds))
        return replace(record, rss_mb=rss_mb(members), **found)
    finally:
        for member in members:
            member.close()
