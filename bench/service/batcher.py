"""Dynamic micro-batching: many concurrent requests, one model call per batch, one worker thread per model replica.

The event loop only enqueues and awaits; tokenising and inference run on the worker threads so a slow model call
never blocks the loop. With several replicas (bench.service.replicas) every worker takes its batches from the same
queue, so there is one admission limit and one batching policy however many model instances serve. A worker takes
up to `max_batch` texts, waiting at most `max_wait_ms` after the first for more, drops texts whose queue deadline
has passed, and settles each request's asyncio Future through `loop.call_soon_threadsafe` (Futures are not
thread-safe).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from bench.backends import Backend
from bench.tokenize import MAX_TOKENS, encode, softmax, token_counts

log = logging.getLogger("bench.service")
_STOP = object()


class QueueFull(Exception):
    """The bounded queue has no room (or the batcher is stopping): answer 503 and let the client retry."""


class DeadlineExceeded(Exception):
    """The text waited in the queue past its deadline and was dropped without being computed."""


class InferenceFailed(Exception):
    """The backend raised for the batch this text was in; other batches are unaffected."""


@dataclass(frozen=True)
class Outcome:
    """One text's answer plus the timings of the batch that produced it (milliseconds)."""

    probs: tuple[float, ...]
    truncated: bool
    queue_ms: float
    tokenize_ms: float
    inference_ms: float
    batch_size: int
    replica: int = 0


@dataclass
class _Item:
    text: str
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float
    deadline: float
    abandoned: bool = False  # set by the loop side when the request no longer waits for it


@dataclass
class BatcherStats:
    """Counters the worker updates (read by metrics and tests)."""

    batches: int = 0
    failed_batches: int = 0
    expired: int = 0
    recent_sizes: deque = field(default_factory=lambda: deque(maxlen=1000))  # bounded: the service runs for days


class Batcher:
    """A bounded queue of texts and one worker thread per backend (replica) feeding them to its `infer`."""

    def __init__(self, backends: Backend | Sequence[Backend], tokenizer, *, max_batch: int, max_wait_ms: float,
                 max_queue: int, timeout_s: float, max_padding: float = 0.05,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        self.backends = list(backends) if isinstance(backends, (list, tuple)) else [backends]
        self.tokenizer, self.max_padding = tokenizer, max_padding
        self.max_batch, self.max_wait_s, self.timeout_s = max_batch, max_wait_ms / 1000.0, timeout_s
        self.on_batch = on_batch  # (batch size, replica index) after each model call
        self.stats = BatcherStats()
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._closed = False
        # perf_counter when each replica's current model call began; None while that replica is idle
        self._busy: list[float | None] = [None] * len(self.backends)
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"bench-batcher-{i}", daemon=True)
                         for i in range(len(self.backends))]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def depth(self) -> int:
        return self._queue.qsize()

    def stalled_for(self) -> float:
        """Seconds the longest-running current model call has run (0 when every replica is idle)."""
        started = [t for t in self._busy if t is not None]
        return time.perf_counter() - min(started) if started else 0.0

    def submit(self, texts: Sequence[str]) -> list[asyncio.Future]:
        """Enqueue texts (call on the event loop); all or none are queued, else QueueFull."""
        if self._closed:
            raise QueueFull("the service is shutting down")
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        items = [_Item(t, loop.create_future(), loop, now, now + self.timeout_s) for t in texts]
        for i, item in enumerate(items):
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                for queued in items[:i]:
                    queued.abandoned = True  # the worker skips them: their request is answered 503 now
                raise QueueFull(f"the queue is full ({self._queue.maxsize} texts waiting)") from None
        return [item.future for item in items]

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new texts, finish everything already queued, then end the worker."""
        self._closed = True
        live = [t for t in self._threads if t.is_alive()]
        for _ in live:  # one stop mark per worker; each worker ends after taking one
            self._queue.put(_STOP)  # blocks while full: the workers are draining, so room appears
        end = None if timeout is None else time.monotonic() + timeout
        for thread in live:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))

    def _run(self, replica: int) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._collect()
            if batch:
                self._process(batch, replica)

    def _recover(self, replica: int) -> None:
        """A replica process that died is restarted by the worker that owns it; the others keep serving."""
        recover = getattr(self.backends[replica], "recover", None)
        if recover is None:
            return
        try:
            recover()
        except Exception as exc:  # noqa: BLE001  the next failed batch tries again
            log.error("replica %d could not be restarted: %s", replica, exc)

    def _collect(self) -> tuple[list[_Item], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        items, end = [first], time.perf_counter() + self.max_wait_s
        while len(items) < self.max_batch:
            remaining = end - time.perf_counter()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return items, True
            items.append(item)
        return items, False

    def _process(self, items: list[_Item], replica: int) -> None:
        started = time.perf_counter()
        live = [it for it in items if not it.abandoned]
        for item in (it for it in live if started > it.deadline):
            self.stats.expired += 1
            _settle(item, error=DeadlineExceeded(f"waited {1000 * (started - item.enqueued):.0f} ms in the queue, "
                                                  f"over the {self.timeout_s:g} s deadline"))
        live = [it for it in live if started <= it.deadline]
        if live:
            self._compute(live, replica)

    def _compute(self, items: list[_Item], replica: int) -> None:
        """Run the batch as length groups and answer each group's texts as soon as its model call returns:
        a short text is not held back by a longer group computed after it."""
        try:
            t0 = time.perf_counter()
            counts = token_counts(self.tokenizer, [it.text for it in items])
            count_s = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001  a tokenizer failure fails this batch only
            self._fail(items, exc, replica)
            return
        # Groups run oldest first (items are in arrival order): shortest-first would lower the mean but make a
        # long text wait behind every short one that arrived after it, which is what P95/P99 are made of.
        groups = sorted(length_groups([min(n, MAX_TOKENS) for n in counts], self.max_padding), key=min)
        for group in groups:
            self._compute_group([items[i] for i in group], [counts[i] for i in group], count_s, replica)

    def _compute_group(self, items: list[_Item], counts: list[int], count_s: float, replica: int) -> None:
        try:
            t1 = time.perf_counter()
            inputs = encode(self.tokenizer, [it.text for it in items])
            t2 = self._busy[replica] = time.perf_counter()
            try:
                logits = self.backends[replica].infer(inputs)
            finally:
                self._busy[replica] = None
            t3 = time.perf_counter()
            probs = softmax(np.asarray(logits, dtype=np.float64))
            _check_shape(probs, len(items))
        # Any backend failure (ORT, torch, a bad shape) must fail only this model call; the worker keeps serving.
        except Exception as exc:  # noqa: BLE001
            self._fail(items, exc, replica)
            self._recover(replica)
            return
        self._record(len(items), replica)  # one model call: the batch size /metrics reports
        for row, item, n in zip(probs, items, counts):
            _settle(item, result=Outcome(tuple(float(p) for p in row), n > MAX_TOKENS,
                                         1000 * (t1 - item.enqueued), 1000 * (count_s + t2 - t1), 1000 * (t3 - t2),
                                         len(items), replica))

    def _record(self, size: int, replica: int) -> None:
        self.stats.batches += 1
        self.stats.recent_sizes.append(size)
        if self.on_batch:
            self.on_batch(size, replica)

    def _fail(self, items: list[_Item], exc: Exception, replica: int) -> None:
        log.error("inference failed for a batch of %d on replica %d: %s: %s", len(items), replica,
                  type(exc).__name__, exc, exc_info=exc)
        self.stats.failed_batches += 1
        for item in items:
            _settle(item, error=InferenceFailed(f"{type(exc).__name__}"))


def length_groups(lengths: list[int], max_padding: float) -> list[list[int]]:
    """Indices grouped by token length so each group's padded size is within (1 + max_padding) × its real
    tokens. On a CPU every pad token costs as much as a real one: batching ~80-char texts padded to the
    longest loses throughput (see the harness's batch sweep), so a mixed batch runs as a few tight groups
    (ServiceConfig.effective_max_padding holds the per-device budget and the figures behind it)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if group and lengths[i] * (len(group) + 1) <= (1 + max_padding) * (sum(lengths[j] for j in group) + lengths[i]):
            group.append(i)
        else:
            groups.append([i])
    return groups


def _check_shape(probs: np.ndarray, n: int) -> None:
    if probs.ndim != 2 or probs.shape[0] != n:
        raise ValueError(f"backend returned logits of shape {probs.shape}, expected ({n}, labels)")


def _settle(item: _Item, result: Outcome | None = None, error: Exception | None = None) -> None:
    def apply() -> None:
        if item.future.done():  # the request was cancelled or already answered
            return
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(result)

    try:
        item.loop.call_soon_threadsafe(apply)
    except RuntimeError:  # the loop has closed: nobody is waiting any more
        pass
