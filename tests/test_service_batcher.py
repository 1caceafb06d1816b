"""The service's batching, back-pressure, shutdown and failure paths, against real uvicorn on 127.0.0.1 port 0
with a scripted backend that sleeps a known time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bench.service.config import ServiceConfig
from tests.service_helpers import (
    REPO,
    ScriptedBackend,
    metric,
    posts_under_load,
    scripted_server,
    server_timing,
    wait_ready,
)


def test_concurrent_requests_form_batches(tiny_model):
    backend = ScriptedBackend(tiny_model, delay=0.1)
    responses, text = posts_under_load(tiny_model, backend, [f"并发{i}" for i in range(16)], max_batch=8,
                                       max_wait_ms=20)
    assert all(r.status_code == 200 for r in responses)
    assert max(backend.sizes) > 1 and sum(backend.sizes) == 16
    assert max(int(r.headers["x-batch-size"]) for r in responses) > 1
    assert metric(text, "batch_size_count") < 16 and metric(text, "batch_size_sum") == 16


def test_batching_off_serves_one_at_a_time(tiny_model):
    backend = ScriptedBackend(tiny_model, delay=0.01)
    responses, text = posts_under_load(tiny_model, backend, [f"串行{i}" for i in range(8)], batching=False)
    assert all(r.status_code == 200 for r in responses) and backend.sizes == [1] * 8
    assert metric(text, 'batch_size_bucket{le="1.0"}') == 8


def test_queue_full_answers_503_with_retry_after(tiny_model):
    backend = ScriptedBackend(tiny_model, delay=0.3)
    responses, text = posts_under_load(tiny_model, backend, [f"排队{i}" for i in range(8)], batching=False, max_queue=2,
                                      max_batch_items=2)
    refused = [r for r in responses if r.status_code == 503]
    assert refused and any(r.status_code == 200 for r in responses)
    assert all(r.headers["retry-after"] == "1" and "busy" in r.json()["error"] for r in refused)
    assert metric(text, 'errors_total{kind="queue_full"}') == len(refused)


def test_queue_deadline_drops_without_computing(tiny_model):
    backend = ScriptedBackend(tiny_model, delay=0.4)
    responses, text = posts_under_load(tiny_model, backend, [f"超时{i}" for i in range(3)], batching=False,
                                       request_timeout_s=0.15)
    ok = [r for r in responses if r.status_code == 200]
    dropped = [r for r in responses if r.status_code == 503]
    assert ok and dropped and len(ok) + len(dropped) == 3
    assert all("dropped" in r.json()["error"] and "server-timing" in r.headers for r in dropped)
    assert sum(backend.sizes) == len(ok)  # dropped texts never reached the model
    assert metric(text, 'errors_total{kind="deadline"}') == len(dropped)


def test_backend_exception_fails_only_its_batch(tiny_model):
    backend = ScriptedBackend(tiny_model)
    with scripted_server(tiny_model, backend, cache_size=0) as url, httpx.Client(base_url=url) as c:
        wait_ready(c)
        backend.fail.set()
        resp = c.post("/api/sentiment", json={"text": "会失败"})
        assert resp.status_code == 500 and resp.json()["error"] == "inference failed"
        assert "Traceback" not in resp.text and "total" in server_timing(resp)
        assert c.post("/api/sentiment", json={"text": "会成功"}).status_code == 200
        text = c.get("/metrics").text
    assert metric(text, "failed_batches_total") == 1 and metric(text, 'errors_total{kind="inference"}') == 1


class OverflowingBackend(ScriptedBackend):
    """Answers NaN logits once (an FP16 overflow), then real ones."""

    nan_once = True

    def infer(self, inputs):
        out = super().infer(inputs)
        if self.nan_once:
            self.nan_once = False
            out[:] = float("nan")
        return out


def test_nan_logits_fail_the_call_and_are_never_cached(tiny_model):
    backend = OverflowingBackend(tiny_model)
    with scripted_server(tiny_model, backend) as url, httpx.Client(base_url=url) as c:  # cache on
        wait_ready(c)
        first = c.post("/api/sentiment", json={"text": "溢出的文本"})
        assert first.status_code == 500 and first.json()["error"] == "inference failed"
        again = c.post("/api/sentiment", json={"text": "溢出的文本"})
        assert again.status_code == 200 and not again.json()["cached"]  # computed afresh, not the NaN answer


def test_shutdown_finishes_in_flight_requests(tiny_model):
    backend = ScriptedBackend(tiny_model, delay=0.5)
    server = scripted_server(tiny_model, backend)
    url = server.start()
    with httpx.Client(base_url=url) as client:
        wait_ready(client)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, url + "/api/sentiment", json={"text": "关机前的请求"}, timeout=10)
        assert backend.entered.wait(5)
        server.stop()  # what uvicorn does on SIGTERM: stop accepting, finish in-flight work, then lifespan shutdown
        assert pending.result().status_code == 200
    assert not server.thread.is_alive()


def test_cli_serves_on_port_zero_and_stops_on_sigterm(tiny_onnx, bench_home):
    cmd = [sys.executable, "-m", "bench.service", "--model", "twin:tiny", "--backend", "ort-int8-cpu",
           "--onnx-dir", str(tiny_onnx[0]), "--port", "0", "--log-level", "warning", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "STRUCTBENCH_HOME": str(bench_home)})
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert match and int(match.group(2)) > 0, line + proc.stderr.read()
        with httpx.Client(base_url=match.group(1), timeout=10) as client:
            assert wait_ready(client, timeout=60)["backend"] == "ort-int8-cpu"
            assert client.post("/api/sentiment", json={"text": "命令行启动"}).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0  # a graceful stop is a clean exit, not death by the signal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_length_groups_keep_padding_within_budget():
    from bench.model.buckets import length_groups

    lengths = [80, 20, 82, 300, 21, 79, 81, 22]
    groups = length_groups(lengths, 0.15)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        real = sum(lengths[i] for i in g)
        assert max(lengths[i] for i in g) * len(g) <= 1.15 * real
    assert {frozenset(g) for g in groups} == {frozenset({1, 4, 7}), frozenset({0, 2, 5, 6}), frozenset({3})}
    assert length_groups([50] * 8, 0.0) == [list(range(8))]  # equal lengths: one batch, no padding


def test_each_length_group_is_answered_when_its_model_call_returns(tiny_model):
    """A short text batched with a long one is answered after its own model call, not after the whole batch."""
    import asyncio

    from bench.model.tokenize import load_tokenizer, model_dir_str
    from bench.service.batcher import Batcher

    backend = ScriptedBackend(tiny_model, delay=0.3)
    tokenizer = load_tokenizer(model_dir_str(tiny_model))
    batcher = Batcher(backend, tokenizer, max_batch=8, max_wait_ms=200, max_queue=8, timeout_s=10, max_padding=0.0)

    async def scenario() -> dict:
        done: dict[str, float] = {}
        futures = batcher.submit(["短评", "这是一条长得多的评论，" * 20])
        for name, fut in zip(("short", "long"), futures):
            fut.add_done_callback(lambda f, name=name: done.setdefault(name, time.perf_counter()))
        outcomes = await asyncio.gather(*futures)
        return {"done": done, "outcomes": outcomes}

    batcher.start()
    try:
        got = asyncio.run(scenario())
    finally:
        batcher.stop(timeout=10)
    assert backend.sizes == [1, 1]  # two lengths, no padding allowed: two model calls
    assert got["done"]["long"] - got["done"]["short"] >= 0.25  # the short text did not wait for the long call
    short, long_ = got["outcomes"]
    assert long_.queue_ms - short.queue_ms >= 250  # the long text queued behind the short group's call


def test_padding_budget_defaults_per_device_and_can_be_set():
    from bench.model.buckets import CPU_MAX_PADDING, GPU_MAX_PADDING

    assert ServiceConfig(backend="ort-int8-cpu").effective_max_padding == CPU_MAX_PADDING
    assert ServiceConfig(backend="ort-fp16-cuda").effective_max_padding == GPU_MAX_PADDING > CPU_MAX_PADDING
    assert ServiceConfig(backend="ort-int8-cpu", max_padding=0.3).effective_max_padding == 0.3
    with pytest.raises(ValueError, match="max_padding"):
        ServiceConfig(max_padding=-0.1)


class HangingBackend(ScriptedBackend):
    """Blocks inside infer() until `release` is set, like a wedged native call."""

    def __init__(self, model_dir: Path) -> None:
        super().__init__(model_dir)
        self.release = threading.Event()

    def infer(self, inputs):
        self.entered.set()
        self.release.wait(30)
        return super().infer(inputs)


def test_hung_model_call_answers_504_and_health_says_stalled(tiny_model):
    backend = HangingBackend(tiny_model)
    with scripted_server(tiny_model, backend, cache_size=0, request_timeout_s=0.3, inference_timeout_s=0.5) as url, \
            httpx.Client(base_url=url, timeout=10) as c:
        wait_ready(c)
        start = time.monotonic()
        resp = c.post("/api/sentiment", json={"text": "卡住了"})
        waited = time.monotonic() - start
        assert resp.status_code == 504 and "did not return" in resp.json()["error"]
        assert 0.7 < waited < 3.0 and resp.json()["detail"]["inference_running_s"] >= 0.5
        health = c.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "stalled"
        backend.release.set()  # the call returns: the worker serves again and health recovers
        assert c.post("/api/sentiment", json={"text": "恢复了"}).status_code == 200
        assert c.get("/healthz").status_code == 200
        text = c.get("/metrics").text
    assert metric(text, 'errors_total{kind="timeout"}') == 1


def test_length_groups_run_oldest_first(tiny_model):
    """A long text that arrived first is not overtaken by shorter ones batched with it (FIFO keeps the tail short)."""
    import asyncio

    from bench.model.tokenize import load_tokenizer, model_dir_str
    from bench.service.batcher import Batcher

    class Recording(ScriptedBackend):
        lengths: list[int] = []

        def infer(self, inputs):
            self.lengths.append(int(inputs["input_ids"].shape[1]))
            return super().infer(inputs)

    backend = Recording(tiny_model)
    batcher = Batcher(backend, load_tokenizer(model_dir_str(tiny_model)), max_batch=8, max_wait_ms=200, max_queue=8,
                      timeout_s=10, max_padding=0.0)

    async def scenario():
        return await asyncio.gather(*batcher.submit(["很长的一条评论，" * 10, "短", "中等长度的评论"]))

    batcher.start()
    try:
        asyncio.run(scenario())
    finally:
        batcher.stop(timeout=10)
    assert len(backend.lengths) == 3 and backend.lengths[0] == max(backend.lengths)


def test_bucket_calls_split_on_cpu_pad_rows_on_gpu_and_cap_tokens():
    from bench.model.buckets import Buckets, call_shape, plan_calls

    cpu, gpu = Buckets.for_device("cpu", 8), Buckets.for_device("cuda", 32)
    calls = plan_calls([40] * 7, 0.05, cpu)  # 7 equal texts: bucket sizes, no empty rows on a CPU
    assert sorted(len(c) for c in calls) == [1, 2, 4] and sorted(sum(calls, [])) == list(range(7))
    assert call_shape(cpu, 4, 41) == (4, 48) and call_shape(gpu, 5, 41) == (8, 64)  # GPU pads rows and length
    assert [len(c) for c in plan_calls([40] * 5, 1.0, gpu)] == [5]
    long = plan_calls([500] * 8, 0.05, cpu)  # the CPU's per-call cap is one full-length text: 8 calls
    assert [len(c) for c in long] == [1] * 8
    assert [len(c) for c in plan_calls([100] * 8, 0.05, cpu)] == [4, 4]  # 4 × 104 tokens fit in 512
    assert all(cpu.fits(*call_shape(cpu, len(c), 500)) for c in long)
    assert plan_calls([10, 300], 0.05, None) == [[0], [1]]  # without buckets: the length groups alone


def test_the_front_reports_its_cpu_only_when_the_model_runs_elsewhere(tiny_model):
    """In one process with the model in it, the process's CPU is mostly the model's: /metrics counts the front's
    requests but gives no front CPU figure rather than a misleading one (fronts and replica processes give it)."""
    backend = ScriptedBackend(tiny_model, delay=0.01)
    responses, text = posts_under_load(tiny_model, backend, [f"前端{i}" for i in range(4)])
    assert all(r.status_code == 200 for r in responses)
    assert metric(text, 'front_requests_total{front="0"}') >= 4
    assert 'structbench_front_cpu_seconds{front=' not in text


def test_a_full_queue_refuses_before_reading_the_body(tiny_model):
    """While the queue has no room the 503 comes before routing and parsing: even a body that is not JSON gets the
    busy answer (and is not parsed, which is what a refusal under overload must not spend CPU on)."""
    backend = HangingBackend(tiny_model)
    with scripted_server(tiny_model, backend, cache_size=0, batching=False, max_queue=1, max_batch_items=1) as url, \
            httpx.Client(base_url=url, timeout=30) as c, ThreadPoolExecutor(2) as pool:
        wait_ready(c)
        # one text in the model call first, then one to fill the queue (sent together, the second could find the
        # first still queued and be refused itself)
        held = [pool.submit(c.post, "/api/sentiment", json={"text": "占位0"})]
        assert backend.entered.wait(10)
        held.append(pool.submit(c.post, "/api/sentiment", json={"text": "占位1"}))
        deadline = time.monotonic() + 10
        while metric(c.get("/metrics").text, "queue_depth") < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = c.post("/api/sentiment", content=b"{not json", headers={"content-type": "application/json"})
        backend.release.set()
        assert all(h.result().status_code == 200 for h in held)
        text = c.get("/metrics").text
    assert refused.status_code == 503 and "busy" in refused.json()["error"]
    assert refused.headers["retry-after"] == "1" and "server-timing" in refused.headers
    assert metric(text, 'errors_total{kind="queue_full"}') == 1
    assert metric(text, 'errors_total{kind="bad_request"}') == 0  # the body was never parsed
