"""SIGTERM to the real service process while batch requests are in flight: every one of them is answered in full
(200, one valid result per text, in order), and then the process exits with code 0."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from loadtests.service_proc import ServiceProcess, ServiceVariant, metrics

pytestmark = pytest.mark.e2e  # the slow tier: real processes (make test runs it, make test-fast does not)

CLIENTS, TEXTS_PER_REQUEST = 4, 64
TOTAL = CLIENTS * TEXTS_PER_REQUEST
# No batching, no cache: one 512-token model call per text, so the 256 texts take seconds and SIGTERM lands
# mid-work. Flags given after the variant's own win (argparse keeps the last).
SLOW = ["--no-batching", "--cache-size", "0", "--threads", "1", "--max-queue", "1024", "--request-timeout-s", "120",
        "--max-body-bytes", "4000000"]


def long_texts(client: int) -> list[str]:
    """Distinct texts of 600 characters (cut to 512 tokens by the service)."""
    review = "这家店的服务很好，菜也好吃，下次还会再来。"
    return [f"第{client}组第{i}条：" + review * 30 for i in range(TEXTS_PER_REQUEST)]


def post_batch(url: str, texts: list[str]) -> tuple[httpx.Response, float]:
    with httpx.Client(base_url=url, timeout=120) as client:
        resp = client.post("/api/sentiment/batch", json={"texts": texts})
    return resp, time.monotonic()


def wait_until_all_queued(url: str, timeout_s: float = 60.0) -> dict:
    """/metrics once the model has started and every request's texts are queued or done (so all four are in)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        m = metrics(url)
        done = m.get("batch_size_sum", 0.0)
        if done >= 1 and done + m.get("queue_depth", 0.0) > TOTAL - TEXTS_PER_REQUEST:
            return m
        time.sleep(0.02)
    raise TimeoutError("the batch requests never all reached the model queue")


def test_sigterm_finishes_in_flight_requests_then_exits_zero(tiny_onnx):
    service = ServiceProcess("twin:tiny", ServiceVariant("sigterm"), ["--onnx-dir", str(tiny_onnx[0]), *SLOW])
    try:
        url = service.wait_ready(300)
        batches = [long_texts(c) for c in range(CLIENTS)]
        with ThreadPoolExecutor(CLIENTS) as pool:
            pending = [pool.submit(post_batch, url, texts) for texts in batches]
            seen = wait_until_all_queued(url)
            signalled = time.monotonic()
            service.proc.send_signal(signal.SIGTERM)
            answers = [p.result(timeout=180) for p in pending]
        code = service.proc.wait(timeout=60)
    finally:
        service.stop()
    assert seen["batch_size_sum"] < TOTAL, "all work was done before SIGTERM: the test proved nothing"
    for texts, (resp, finished) in zip(batches, answers):
        assert finished > signalled  # this request was still in flight when SIGTERM arrived
        assert resp.status_code == 200, resp.text[:300]
        results = resp.json()["results"]
        assert [r["text"] for r in results] == texts
        assert all(r["label"] in {"负面", "正面"} and 0.5 <= r["score"] <= 1 and r["truncated"] for r in results)
    assert code == 0, f"exit code {code} after a graceful SIGTERM; log: {service.log[-5:]}"
