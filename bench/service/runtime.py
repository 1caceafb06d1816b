"""What one running service holds (model, batcher, cache, metrics, readiness) and how a text becomes an answer."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from bench.backends import Backend
from bench.core.signature import ModelSignature
from bench.service.backend_setup import backend_config, build_backend
from bench.service.batcher import Batcher, DeadlineExceeded, InferenceFailed, Outcome, QueueFull
from bench.service.cache import LruCache, normalise
from bench.service.config import ServiceConfig
from bench.service.http import ApiError, RequestTiming, unavailable, with_timeout
from bench.service.metrics import ServiceMetrics

log = logging.getLogger("bench.service")


def as_label_map(labels: Mapping[int, str] | Sequence[str]) -> dict[int, str]:
    if isinstance(labels, Mapping):
        return {int(k): str(v) for k, v in labels.items()}
    return dict(enumerate(str(v) for v in labels))


class Service:
    """The model behind the routes. `load()` runs on a background thread; routes answer 503 until it is ready."""

    def __init__(self, config: ServiceConfig, backend: Backend | None = None, tokenizer=None,
                 labels: Mapping[int, str] | Sequence[str] | None = None) -> None:
        self.config = config
        self.status, self.error = "loading", None
        self.info: dict = {}
        self.on_failure: Callable[[], None] | None = None  # serve() sets this to stop the server
        self._tokenizer = tokenizer
        self._labels = as_label_map(labels) if labels is not None else None
        self.backend: Backend | None = backend
        self.signature: ModelSignature | None = None  # the model's, once loaded (bench.core.signature)
        self.replicas: list[Backend] = []
        self.batcher: Batcher | None = None
        self.cache: LruCache[Outcome] = LruCache(config.cache_size)
        self.metrics = ServiceMetrics(cache_hits=lambda: self.cache.hits, cache_misses=lambda: self.cache.misses,
                                      queue_depth=lambda: self.batcher.depth() if self.batcher else 0,
                                      failed_batches=lambda: self.batcher.stats.failed_batches if self.batcher else 0,
                                      restarts=lambda: sum(getattr(r, "restarts", 0) for r in self.replicas))
        self._stopped = False
        self._lock = threading.Lock()  # orders "start the worker" against "stop" when both race at shutdown

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def stalled(self) -> bool:
        """The model call in progress has run past inference_timeout_s: the worker is stuck."""
        return self.batcher is not None and self.batcher.stalled_for() > self.config.inference_timeout_s

    async def open(self) -> None:
        """At the app's start-up: load in the background (routes answer 503 until ready)."""
        self.start_loading()

    async def close(self) -> None:
        await asyncio.to_thread(self.stop)

    async def health(self) -> tuple[dict, int, dict]:
        """/healthz: (body, status, headers). 200 with model details once loaded and warmed up; 503 before that,
        if loading failed, or while a model call has run past `inference_timeout_s`."""
        if self.ready and self.stalled:
            running = round(self.batcher.stalled_for(), 1)
            return {"status": "stalled", "error": f"a model call has been running for {running} s"}, 503, \
                {"Retry-After": "5"}
        if self.ready:  # a replica being restarted leaves the service ready: the others serve meanwhile
            return {"status": "ready", **self.info, **self.replica_state()}, 200, {}
        return {"status": self.status, **({"error": self.error} if self.error else {})}, 503, {"Retry-After": "1"}

    async def metrics_text(self) -> str:
        return self.metrics.render()

    def queue_full(self) -> str | None:
        """Why a new text cannot be queued now (None: it can), checked before a request's body is read."""
        return self.batcher.no_room() if self.ready and self.batcher is not None else None

    def start_loading(self) -> threading.Thread:
        # A plain daemon thread, not the loop's executor: asyncio.run() joins executor threads at exit, so a
        # shutdown during a long export would hang.
        thread = threading.Thread(target=self._load_safely, name="bench-service-load", daemon=True)
        thread.start()
        return thread

    def _load_safely(self) -> None:
        try:
            self.load()
        # Whatever the cause (missing model, failed export, backend Unavailable), report it and stop cleanly.
        except Exception as exc:  # noqa: BLE001
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("the model could not be loaded: %s", self.error)
            if self.on_failure:
                self.on_failure()

    def load(self) -> None:
        """Create and load the backend, warm it up, start the batcher, then mark the service ready."""
        from bench.model.sources import read_source_meta
        from bench.model.tokenize import load_tokenizer, model_dir_str

        placement = self._load_backends()
        from bench.service.replicas import ReplicaBackend

        # this process's CPU is the front's only when the model runs in replica processes
        self.metrics.front_cpu_known = all(isinstance(r, ReplicaBackend) for r in self.replicas)
        backend = self.backend
        model_dir = Path(backend.config.model_dir)
        tokenizer = self._tokenizer or load_tokenizer(model_dir_str(model_dir))
        self.signature = tokenizer.signature
        self._labels = self._labels or dict(enumerate(self.signature.labels))
        self.info = {**self._describe(backend, read_source_meta(model_dir)), **placement}
        self.batcher = Batcher.for_service(self.config, self.replicas, tokenizer,
                                           on_batch=self.metrics.observe_batch, on_call=self.metrics.observe_call)
        with self._lock:
            if self._stopped:  # shut down while loading: start no worker that nobody would stop
                return
            self.batcher.start()
        # Ready means every replica ran every shape it will serve, on the thread that will serve it.
        t0 = time.perf_counter()
        self.batcher.wait_warm()
        if self.batcher.warm_error:
            raise RuntimeError(f"warm-up failed: {self.batcher.warm_error}")
        self.metrics.set_warm(self.batcher.warm_s)
        self.info["warmup"] = {"seconds": round(time.perf_counter() - t0, 2),
                               "shapes": len(self.batcher.warm_shapes()), "buckets": self.config.shape_buckets}
        self.info.update(self._serving_info())
        if not self._stopped:
            self.status = "ready"

    def _load_backends(self) -> dict:
        """One backend in this process (as given, or built), or R replica processes pinned to their own cores."""
        replicas = self.config.effective_replicas
        if self.backend is not None or (replicas == 1 and not self.config.effective_model_process):
            self.backend = self.backend or build_backend(self.config)
            self.backend.load()
            self.replicas = [self.backend]
            return {"replicas": 1, "threads": self.backend.config.threads}
        from bench.service.replicas import start_replicas

        self.replicas, placement = start_replicas(backend_config(self.config), replicas,
                                                  self.config.replica_threads, self.config.inference_timeout_s)
        self.backend = self.replicas[0]
        return {"replicas": replicas, "threads": self.config.replica_threads,
                "cores": placement.describe(), "oversubscribed": placement.oversubscribed}

    def _serving_info(self) -> dict:
        """After warm-up: how each replica serves (CUDA graphs captured, shapes left eager with the reason); shapes
        whose graph failed are logged as they fail, in the replica's own log."""
        infos = [r.serving_info() for r in self.replicas]
        if not any(infos):
            return {}
        return {"serving": infos[0] if len(infos) == 1 else {f"replica {i}": v for i, v in enumerate(infos)}}

    def replica_state(self) -> dict:
        """Live figures for /healthz: replicas serving now and their process ids (they change on a restart)."""
        pids = [getattr(r, "pid", None) or os.getpid() for r in self.replicas]
        return {"replicas_up": sum(1 for r in self.replicas if getattr(r, "alive", True)), "replica_pids": pids}

    def _describe(self, backend: Backend, meta: dict) -> dict:
        task = {"task": self.signature.task, "what": self.signature.what} if self.signature else {}
        return {"model": str(meta.get("source", self.config.model)), "synthetic": bool(meta.get("synthetic")),
                **task, "backend": backend.name, "labels": {str(k): v for k, v in sorted(self._labels.items())},
                "batching": self.config.batching, "max_batch": self.config.effective_max_batch,
                "cache_size": self.config.cache_size}

    def stop(self) -> None:
        """Refuse new work, finish what is queued, end the worker and release the model."""
        with self._lock:
            self._stopped = True
        if self.batcher:
            self.batcher.stop(timeout=self.config.request_timeout_s + 30)
        for backend in self.replicas or ([self.backend] if self.backend is not None else []):
            backend.close()

    async def analyse(self, texts: Sequence[str], timing: RequestTiming, task: str = "classification") -> list[dict]:
        """Answers for `texts` in order: cached ones at once, the rest through the batcher. `task`: what the route
        asks for; a model of the other task answers 404 with the route it serves."""
        if not self.ready:
            raise unavailable(f"the model is not ready ({self.status})", "not_ready", {"status": self.status})
        self.check_task(task)
        keys = [normalise(t) for t in texts]
        outcomes: list[Outcome | None] = [self.cache.get(k) for k in keys]
        missing = [i for i, o in enumerate(outcomes) if o is None]
        computed = await self._compute([keys[i] for i in missing]) if missing else []
        for i, outcome in zip(missing, computed):
            outcomes[i] = outcome
            self.cache.put(keys[i], outcome)
        fill_timing(timing, computed)
        fresh = set(missing)
        return [self._answer(t, o, i not in fresh) for i, (t, o) in enumerate(zip(texts, outcomes))]

    async def _compute(self, keys: list[str]) -> list[Outcome]:
        try:
            futures = self.batcher.submit(keys)
        except QueueFull as exc:
            raise unavailable(f"the server is busy: {exc}", "queue_full") from None
        # Bounded wait: a text may queue for request_timeout_s and its model call may run for inference_timeout_s;
        # past both, a hung backend answers 504 instead of holding the connection open for ever.
        limit = self.config.request_timeout_s + self.config.inference_timeout_s
        try:
            results = await with_timeout(asyncio.gather(*futures, return_exceptions=True), limit)
        except asyncio.TimeoutError:
            raise ApiError(504, f"no answer within {limit:g} s: the model call did not return",
                           {"inference_running_s": round(self.batcher.stalled_for(), 1)}, "timeout") from None
        for result in results:
            if isinstance(result, DeadlineExceeded):
                raise unavailable(f"request dropped: {result}", "deadline")
            if isinstance(result, InferenceFailed):
                raise ApiError(500, "inference failed", {"exception": str(result)}, "inference")
            if isinstance(result, BaseException):
                raise result
        return results

    def check_task(self, task: str) -> None:
        served = self.signature.task if self.signature else "classification"
        if task != served:
            route = "/api/embed" if served == "embedding" else "/api/sentiment"
            raise ApiError(404, f"this model is a {served} model ({self.signature.what if self.signature else ''})"
                                f": it answers {route}", {"task": served, "route": route}, "wrong_task")

    def _answer(self, text: str, outcome: Outcome, cached: bool) -> dict:
        inference_ms = round(0.0 if cached else outcome.tokenize_ms + outcome.inference_ms, 3)
        if self.signature is not None and self.signature.is_embedding:
            return {"text": text, "embedding": [round(v, 6) for v in outcome.values], "dim": len(outcome.values),
                    "inference_time_ms": inference_ms, "truncated": outcome.truncated, "cached": cached}
        label_id = int(np.argmax(outcome.values))
        return {"text": text, "label": self._labels.get(label_id, str(label_id)), "label_id": label_id,
                "score": round(outcome.values[label_id], 4), "inference_time_ms": inference_ms,
                "truncated": outcome.truncated, "cached": cached}


def fill_timing(timing: RequestTiming, outcomes: Sequence[Outcome]) -> None:
    """Server-Timing for the request: for several texts, the slowest batch's figures."""
    if not outcomes:
        return
    timing.queue_ms = max(o.queue_ms for o in outcomes)
    timing.tokenize_ms = max(o.tokenize_ms for o in outcomes)
    timing.inference_ms = max(o.inference_ms for o in outcomes)
    timing.model_ms = max(o.model_ms for o in outcomes)
    timing.batch_size = max(o.batch_size for o in outcomes)
    timing.replica = max(outcomes, key=lambda o: o.inference_ms).replica
