"""Shared parts of the service tests: a scripted backend that sleeps a known time, a real uvicorn server on
127.0.0.1 port 0 around it, and small readers of its answers."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from bench.backends import Backend, BackendConfig, BackendSpec
from bench.service.app import create_app
from bench.service.config import ServiceConfig
from bench.service.metrics import PREFIX
from bench.service.server import ThreadedServer

REPO = Path(__file__).resolve().parent.parent
TIMING = re.compile(r"(\w+);dur=([0-9.]+)")


class ScriptedBackend(Backend):
    """Sleeps `delay` per call, records batch sizes, raises once when `fail` is set, loads only once `gate` opens."""

    def __init__(self, model_dir: Path, delay: float = 0.0, gate: threading.Event | None = None,
                 load_error: Exception | None = None) -> None:
        super().__init__(BackendConfig(BackendSpec("fake", "fp32"), model_dir))
        self.delay, self.gate, self.load_error = delay, gate, load_error
        self.fail, self.entered = threading.Event(), threading.Event()
        self.sizes: list[int] = []

    def load(self) -> None:
        if self.gate is not None:
            self.gate.wait(30)
        if self.load_error is not None:
            raise self.load_error

    def infer(self, inputs):
        n = inputs["input_ids"].shape[0]
        self.entered.set()
        time.sleep(self.delay)
        if self.fail.is_set():
            self.fail.clear()
            raise RuntimeError("scripted backend failure")
        self.sizes.append(n)
        return np.tile(np.array([[0.0, 2.0]], dtype=np.float32), (n, 1))


def wait_ready(client: httpx.Client, timeout: float = 30.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        resp = client.get("/healthz")
        if resp.status_code == 200:
            return resp.json()
        time.sleep(0.02)
    raise TimeoutError("service did not become ready")


def metric(text: str, name: str) -> float:
    """The value of one exposition line, e.g. name='cache_hits_total' or 'errors_total{kind="deadline"}' (the
    service's prefix, structbench_, is added here)."""
    for line in text.splitlines():
        if line.startswith(PREFIX + name + " "):
            return float(line.split()[-1])
    return 0.0


def server_timing(resp: httpx.Response) -> dict[str, float]:
    return {k: float(v) for k, v in TIMING.findall(resp.headers.get("server-timing", ""))}


def concurrent_posts(url: str, texts: list[str]) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=64)) as client:
        with ThreadPoolExecutor(len(texts)) as pool:
            return list(pool.map(lambda t: client.post("/api/sentiment", json={"text": t}), texts))


def posts_under_load(tiny_model: Path, backend: ScriptedBackend, texts: list[str], **overrides):
    """Post `texts` at once to a scripted server (no cache); the answers and /metrics afterwards."""
    with scripted_server(tiny_model, backend, cache_size=0, **overrides) as url:
        responses = concurrent_posts(url, texts)
        return responses, httpx.get(url + "/metrics").text


def scripted_server(tiny_model: Path, backend: ScriptedBackend, **overrides) -> ThreadedServer:
    config = ServiceConfig(model=str(tiny_model), backend="fake-fp32-cpu", warmup_runs=0, **overrides)
    return ThreadedServer(create_app(config, backend=backend))
