"""Dynamic micro-batching: many concurrent requests, one model call per batch, one worker thread per model replica.

The event loop only enqueues and awaits; tokenising and inference run on the worker threads so a slow model call
never blocks the loop. With several replicas (bench.service.replicas) every worker takes its batches from the same
queue, so there is one admission limit and one batching policy however many model instances serve. A worker takes
its batch by Triton's rule (bench.service.admission: a preferred size at once, a full batch at once, else after the
oldest text's `max_wait_ms`), drops texts whose queue deadline has passed, and settles each request's asyncio Future
through `loop.call_soon_threadsafe` (Futures are not thread-safe). A replica process is kept one call ahead: while
it computes, its worker sends it the next batch from what is already queued (only when no other replica is idle), so
its core never waits on the front.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from bench.backends import Backend
from bench.model.buckets import Buckets, call_shape, plan_calls
from bench.model.tokenize import counted, pack
from bench.service.admission import AdmissionQueue, Full
from bench.service.config import ServiceConfig

log = logging.getLogger("bench.service")


class QueueFull(Exception):
    """The bounded queue has no room (or the batcher is stopping): answer 503 and let the client retry."""


class DeadlineExceeded(Exception):
    """The text waited in the queue past its deadline and was dropped without being computed."""


class InferenceFailed(Exception):
    """The backend raised for the batch this text was in; other batches are unaffected."""


class ReplicaLost(RuntimeError):
    """The replica process died holding this call (it was sent, and is never answered)."""


@dataclass(frozen=True)
class Outcome:
    """One text's answer plus the timings of the batch that produced it (milliseconds)."""

    values: tuple[float, ...]  # a classifier's label probabilities, or an embedding model's vector
    truncated: bool
    queue_ms: float
    tokenize_ms: float
    inference_ms: float
    batch_size: int
    replica: int = 0
    model_ms: float = 0.0  # the call's own time where the model runs (a replica process: without the front's waits)


@dataclass
class _Item:
    text: str
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float
    deadline: float
    retried: bool = False  # sent once to a replica that died holding it: requeued once, then failed


@dataclass
class _Call:
    """One model call in flight: its texts and token counts, its shape, and when it was encoded and sent."""

    items: list[_Item]
    counts: list[int]
    count_s: float
    encoded: float
    sent: float = 0.0
    shape: tuple[int, int] = (0, 0)  # (rows, length) as sent
    tokens: int = 0  # real tokens in it (the rest of rows × length is padding)
    new: bool = False  # a shape this replica's serving thread had not run before


@dataclass(frozen=True)
class CallRecord:
    """What /metrics learns of one model call: its shape, real tokens, time, and whether the shape was new."""

    shape: tuple[int, int]
    tokens: int
    seconds: float
    new: bool
    replica: int


class _InProcess:
    """A backend in this process as a link of depth 1: the call runs when its answer is read, on this thread."""

    depth = 1

    def __init__(self, backend: Backend) -> None:
        self.backend, self._pending = backend, deque()

    def send(self, inputs) -> None:
        self._pending.append(inputs)

    def receive(self):
        return self.backend.infer(self._pending.popleft())


def _link(backend: Backend):
    """How a worker thread talks to its replica: a replica process is its own link (send, receive, depth)."""
    return backend if hasattr(backend, "send") and hasattr(backend, "receive") else _InProcess(backend)


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
                 max_queue: int, timeout_s: float, max_padding: float = 0.05, buckets: Buckets | None = None,
                 preferred_batches: Sequence[int] = (),
                 warmup_runs: int = 0, warm_max_length: int | None = None,
                 on_batch: Callable[[int, int], None] | None = None,
                 on_call: Callable[[CallRecord], None] | None = None) -> None:
        self.backends = list(backends) if isinstance(backends, (list, tuple)) else [backends]
        self.tokenizer, self.max_padding, self.buckets = tokenizer, max_padding, buckets
        self.max_batch, self.max_wait_s, self.timeout_s = max_batch, max_wait_ms / 1000.0, timeout_s
        self.warmup_runs, self.warm_max_length = warmup_runs, warm_max_length
        self.on_batch = on_batch  # (batch size, replica index) after each model call
        self.on_call = on_call  # each model call's shape, tokens and time
        self.stats = BatcherStats()
        # Per replica: the shapes its serving thread has run, and each warmed shape's median call time (seconds).
        self.seen: list[set] = [set() for _ in self.backends]
        self.warm_s: list[dict] = [{} for _ in self.backends]
        self._warm = [threading.Event() for _ in self.backends]
        self.warm_error: str | None = None
        self._queue: AdmissionQueue[_Item] = AdmissionQueue(max_queue, max_batch, self.max_wait_s, preferred_batches)
        # perf_counter when each replica's current model call began; None while that replica is idle
        self._busy: list[float | None] = [None] * len(self.backends)
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"bench-batcher-{i}", daemon=True)
                         for i in range(len(self.backends))]

    @classmethod
    def for_service(cls, config: ServiceConfig, backends: Sequence[Backend], tokenizer,
                    **hooks: Callable) -> "Batcher":
        """The batcher a service with this configuration runs (the service and `check gpu`'s service check)."""
        return cls(backends, tokenizer, max_batch=config.effective_max_batch, max_wait_ms=config.effective_max_wait_ms,
                   max_queue=config.max_queue, timeout_s=config.request_timeout_s,
                   max_padding=config.effective_max_padding, buckets=config.buckets,
                   preferred_batches=config.preferred_batch_sizes, warmup_runs=config.effective_warmup_runs,
                   warm_max_length=config.effective_warm_max_length, **hooks)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Block until every worker has warmed its replica on its own thread (False on timeout); a failed warm-up
        is in `warm_error`."""
        end = None if timeout is None else time.monotonic() + timeout
        return all(e.wait(None if end is None else max(0.0, end - time.monotonic())) for e in self._warm)

    def warm_shapes(self) -> list[tuple[int, int]]:
        """What each worker warms: every bucket shape up to `warm_max_length` tokens, or without buckets batch 1 and
        the max batch at 32 tokens."""
        if self.buckets is not None:
            return self.buckets.warmed(self.warm_max_length)
        return [(b, 32) for b in sorted({1, self.max_batch})]

    def depth(self) -> int:
        return len(self._queue)

    def no_room(self) -> str | None:
        """Why a text would be refused now (None: it would be queued)."""
        return self._queue.no_room()

    def stalled_for(self) -> float:
        """Seconds the longest-running current model call has run (0 when every replica is idle)."""
        started = [t for t in self._busy if t is not None]
        return time.perf_counter() - min(started) if started else 0.0

    def submit(self, texts: Sequence[str]) -> list[asyncio.Future]:
        """Enqueue texts (call on the event loop); all or none are queued, else QueueFull."""
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        items = [_Item(t, loop.create_future(), loop, now, now + self.timeout_s) for t in texts]
        try:
            self._queue.put_all(items)
        except Full as exc:
            raise QueueFull(str(exc)) from None
        return [item.future for item in items]

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new texts, finish everything already queued, then end the worker."""
        self._queue.close()
        live = [t for t in self._threads if t.is_alive()]
        end = None if timeout is None else time.monotonic() + timeout
        for thread in live:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))

    def _run(self, replica: int) -> None:
        """Collect, dispatch, answer. A replica process takes its next model call while this thread still reads
        the current one's answer (link depth 2): at saturation the next batch is already in its pipe when it
        finishes, so the replica never waits for this thread's tokenising, settling and GIL turns (measured:
        docs/measurements.md)."""
        link, inflight, stopping = _link(self.backends[replica]), deque(), False
        try:
            self._warm_up(replica, link)
        except Exception as exc:  # noqa: BLE001  the service reports it and does not become ready
            self.warm_error = f"{type(exc).__name__}: {exc}"
            log.error("warm-up failed on replica %d: %s", replica, self.warm_error)
        finally:
            self._warm[replica].set()
        while not (stopping and not inflight):
            if not inflight:
                batch, stopping = self._queue.take()
                self._dispatch(batch, replica, link, inflight)
                continue
            if len(inflight) < link.depth and not stopping and self._ahead(replica):
                batch, stopping = self._queue.take(block=False)
                self._dispatch(batch, replica, link, inflight)
            self._finish(replica, link, inflight)

    def _warm_up(self, replica: int, link) -> None:
        """Run every shape this replica will serve, on the thread that will serve it (engines such as cuDNN cache a
        graph per shape and per thread), and keep each shape's median time: the engine's time at that bucket, for
        /metrics to set the in-service calls against."""
        token = max(len(self.tokenizer) - 1, 1)
        for rows, length in self.warm_shapes() if self.warmup_runs else ():
            inputs = self.tokenizer.signature.dummy(rows, length, token)
            times = []
            for _ in range(self.warmup_runs):
                t0 = time.perf_counter()
                link.send(inputs)
                link.receive()
                times.append(time.perf_counter() - t0)
            self.seen[replica].add((rows, length))
            if len(times) > 1:  # the first call paid for the shape: only later ones time the engine at it
                self.warm_s[replica][(rows, length)] = float(np.median(times[1:]))

    def _ahead(self, replica: int) -> bool:
        """Send this replica its next call now? Only with texts already waiting and no other replica idle: an idle
        replica should take them at once rather than they wait behind this replica's current call."""
        others = (b for j, b in enumerate(self._busy) if j != replica)
        return len(self._queue) > 0 and all(b is not None for b in others)

    def _recover(self, replica: int) -> None:
        """A replica process that died is restarted by the worker that owns it; the others keep serving."""
        recover = getattr(self.backends[replica], "recover", None)
        if recover is None:
            return
        try:
            recover()
        except Exception as exc:  # noqa: BLE001  the next failed batch tries again
            log.error("replica %d could not be restarted: %s", replica, exc)

    def _live(self, items: list[_Item]) -> list[_Item]:
        """The batch less the texts past their queue deadline (answered as expired)."""
        now = time.perf_counter()
        for item in (it for it in items if now > it.deadline):
            self.stats.expired += 1
            _settle(item, error=DeadlineExceeded(f"waited {1000 * (now - item.enqueued):.0f} ms in the queue, "
                                                  f"over the {self.timeout_s:g} s deadline"))
        return [it for it in items if now <= it.deadline]

    def _dispatch(self, items: list[_Item], replica: int, link, inflight: deque) -> None:
        """Send the batch as length groups, oldest first (items are in arrival order: shortest-first would lower the
        mean but make a long text wait behind every short one that arrived after it, which is what P95/P99 are
        made of); each group's texts are answered as soon as its own call returns."""
        items = self._live(items)
        if not items:
            return
        try:
            t0 = time.perf_counter()
            counts, encodings = counted(self.tokenizer, [it.text for it in items])
            count_s = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001  a tokenizer failure fails this batch only
            self._fail(items, exc, replica)
            return
        for group in plan_calls([len(e.ids) for e in encodings], self.max_padding, self.buckets):
            call = _Call([items[i] for i in group], [counts[i] for i in group], count_s, time.perf_counter())
            try:
                call.tokens = sum(len(encodings[i].ids) for i in group)
                longest = max(len(encodings[i].ids) for i in group)
                call.shape = call_shape(self.buckets, len(group), longest)
                inputs = pack(self.tokenizer, [encodings[i] for i in group], *reversed(call.shape))
            except Exception as exc:  # noqa: BLE001  fails this group only
                self._fail(call.items, exc, replica)
                continue
            call.new = call.shape not in self.seen[replica]
            self.seen[replica].add(call.shape)
            call.sent = time.perf_counter()
            try:
                link.send(inputs)
            except Exception as exc:  # noqa: BLE001  a dead replica: its calls in flight go to another
                self._retry(call.items, exc, replica)
                self._lost(replica, inflight)
                return
            if not inflight:
                self._busy[replica] = call.sent
            inflight.append(call)

    def _finish(self, replica: int, link, inflight: deque) -> None:
        """Read the oldest call's answer and settle its texts; the next call in flight begins now."""
        call = inflight.popleft()
        began = self._busy[replica] or call.sent
        try:
            logits = link.receive()
            done = time.perf_counter()
            compute = getattr(link, "last_compute_s", None) or done - began
            values = self.tokenizer.signature.scores(np.asarray(logits, dtype=np.float64))
            _check_output(values, call.shape[0] or len(call.items))
            values = values[:len(call.items)]  # rows padded up to a bucket carry no text
        # Any backend failure (ORT, torch, a bad shape) must fail only this model call; the worker keeps serving.
        except Exception as exc:  # noqa: BLE001
            dead = not getattr(self.backends[replica], "alive", True)
            (self._retry if dead else self._fail)(call.items, exc, replica)
            self._busy[replica] = time.perf_counter() if inflight else None
            if dead:
                self._lost(replica, inflight)
            return
        self._busy[replica] = done if inflight else None
        self._record(len(call.items), replica)  # one model call: the batch size /metrics reports
        if self.on_call:
            self.on_call(CallRecord(call.shape, call.tokens, done - began, call.new, replica))
        limit = self.tokenizer.max_tokens
        _settle_all([(item, Outcome(tuple(float(p) for p in row), n > limit,
                                    1000 * (call.encoded - item.enqueued + began - call.sent),
                                    1000 * (call.count_s + call.sent - call.encoded), 1000 * (done - began),
                                    len(call.items), replica, 1000 * compute))
                     for row, item, n in zip(values, call.items, call.counts)])

    def _lost(self, replica: int, inflight: deque) -> None:
        """The replica is gone: the calls it held will never be answered. Requeue them, then restart it."""
        while inflight:
            self._retry(inflight.popleft().items, ReplicaLost("the replica died"), replica)
        self._busy[replica] = None
        self._recover(replica)

    def _retry(self, items: list[_Item], exc: Exception, replica: int) -> None:
        """Texts whose replica died holding them go back to the queue's head once (inference has no side effects;
        another replica, or this one restarted, answers them within their deadline); a text that was already
        retried — it may be what kills replicas — fails."""
        again = [it for it in items if not it.retried and time.perf_counter() <= it.deadline]
        if again:
            log.warning("replica %d died holding %d texts: requeued (%s)", replica, len(again), exc)
            for item in again:
                item.retried = True
            self._queue.requeue(again)
        kept = {id(it) for it in again}
        failed = [it for it in items if id(it) not in kept]
        if failed:
            self._fail(failed, exc, replica)

    def _record(self, size: int, replica: int) -> None:
        self.stats.batches += 1
        self.stats.recent_sizes.append(size)
        if self.on_batch:
            self.on_batch(size, replica)

    def _fail(self, items: list[_Item], exc: Exception, replica: int) -> None:
        log.error("inference failed for a batch of %d on replica %d: %s: %s", len(items), replica,
                  type(exc).__name__, exc, exc_info=exc)
        self.stats.failed_batches += 1
        _settle_all([(item, InferenceFailed(f"{type(exc).__name__}")) for item in items])


def _check_output(values: np.ndarray, n: int) -> None:
    """One row per text, and finite: a NaN (an FP16 overflow) fails the call rather than being answered and
    cached as that text's answer."""
    if values.ndim != 2 or values.shape[0] != n:
        raise ValueError(f"backend returned an output of shape {values.shape}, expected ({n}, …)")
    if not np.isfinite(values).all():
        raise ValueError("backend returned non-finite values (NaN or inf: an overflow in the model)")


def _settle(item: _Item, result: Outcome | None = None, error: Exception | None = None) -> None:
    _settle_all([(item, error if error is not None else result)])


def _settle_all(answers: list[tuple[_Item, Outcome | Exception]]) -> None:
    """Answer each text's Future on its event loop: one call_soon_threadsafe per loop for a whole model call, as
    each wakes the loop through its self-pipe (a system call and a thread switch per text otherwise)."""
    by_loop: dict = {}
    for item, answer in answers:
        by_loop.setdefault(item.loop, []).append((item.future, answer))

    def apply(settled: list) -> None:
        for future, answer in settled:
            if future.done():  # the request was cancelled or already answered
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(apply, settled)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass
