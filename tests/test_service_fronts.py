"""Several HTTP front processes feeding one model scheduler (bench.service.fronts), as real processes: every
request answered, texts from both fronts batched together, request metrics and each front's CPU counted in one
place, a killed front started again, SIGTERM ending everything with exit code 0."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from loadtests.service_proc import ServiceProcess, ServiceVariant, metrics

pytestmark = pytest.mark.e2e

# A model call takes 50 ms whatever its size: concurrent texts queue behind it and batch.
FLAGS = ["--fronts", "2", "--cache-size", "0", "--backend-option", "sleep_s=0.05", "--warm-max-length", "16"]


def post(url: str, i: int) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as c:
        return c.post("/api/sentiment", json={"text": f"第{i}条评论，服务很好"})


def front_counts(url: str) -> dict[str, float]:
    return {k: v for k, v in metrics(url).items() if k.startswith("front_requests_total")}


def test_two_fronts_share_one_batcher_and_one_set_of_metrics(tiny_model):
    service = ServiceProcess(str(tiny_model), ServiceVariant.of("fronts", backend="fake-fp32-cpu"), FLAGS)
    try:
        url = service.wait_ready(120)
        before = sum(front_counts(url).values())
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: post(url, i), range(64)))
        assert all(r.status_code == 200 and r.json()["label"] in ("正面", "负面") for r in answers)
        m = metrics(url)
        assert m["batch_size_sum"] >= 64 and m["batch_size_sum"] / m["batch_size_count"] > 2  # batched
        counts = front_counts(url)
        assert set(counts) == {'front_requests_total{front="0"}', 'front_requests_total{front="1"}'}
        assert sum(counts.values()) - before >= 64  # every request counted once, whichever front answered it
        assert all(m[f'front_cpu_seconds{{front="{i}"}}'] > 0 for i in (0, 1))

        fronts = {}
        for _ in range(50):  # the kernel hands connections to either front: collect both pids
            health = httpx.get(url + "/healthz", timeout=10).json()
            fronts[health["front"]] = health["front_pid"]
            if len(fronts) == 2:
                break
        assert health["status"] == "ready" and set(fronts) == {0, 1}
        os.kill(fronts[0], signal.SIGKILL)  # a front dies: the other serves, the scheduler starts it again
        assert all(post(url, i).status_code == 200 for i in range(8))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            health = httpx.get(url + "/healthz", timeout=10).json()
            if health["front"] == 0 and health["front_pid"] != fronts[0]:
                break
            time.sleep(0.1)
        assert health["front"] == 0 and health["front_pid"] != fronts[0]

        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(timeout=60) == 0
    finally:
        service.stop()
