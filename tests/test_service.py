"""The inference service against real uvicorn on 127.0.0.1 port 0: the API contract on the tiny twin (ort-int8),
and batching, health gating, back-pressure and failure paths with a scripted backend that sleeps a known time."""

from __future__ import annotations

import json
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
import numpy as np
import pytest

from bench.backends import Backend, BackendConfig, BackendSpec
from bench.service.app import create_app
from bench.service.cache import LruCache, normalise
from bench.service.cli import main as cli_main
from bench.service.config import ServiceConfig
from bench.service.metrics import Counter, Histogram, Registry
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
    """The value of one exposition line, e.g. name='cache_hits_total' or 'errors_total{kind="deadline"}'."""
    for line in text.splitlines():
        if line.startswith(name + " "):
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


@pytest.fixture(scope="module")
def live(tiny_model, tiny_onnx):
    """The tiny twin behind ort-int8-cpu, exactly as the CLI would build it."""
    config = ServiceConfig(model="twin:tiny", backend="ort-int8-cpu", onnx_dir=str(tiny_onnx[0]), threads=1)
    with ThreadedServer(create_app(config)) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        yield client


def scripted_server(tiny_model: Path, backend: ScriptedBackend, **overrides) -> ThreadedServer:
    config = ServiceConfig(model=str(tiny_model), backend="fake-fp32-cpu", warmup_runs=0, **overrides)
    return ThreadedServer(create_app(config, backend=backend))


# --- units ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [{"port": 70000}, {"max_batch": 0}, {"max_wait_ms": -1}, {"cache_size": -1},
                                 {"max_queue": 0}, {"request_timeout_s": 0}, {"threads": 0},
                                 {"backend": "nope-fp32-cpu"}, {"max_text_chars": 0}, {"max_batch": True}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        ServiceConfig(**bad)


def test_config_batching_off_means_one_at_a_time():
    assert ServiceConfig(batching=False, max_batch=8).effective_max_batch == 1
    assert ServiceConfig(batching=True, max_batch=8).effective_max_batch == 8


def test_cli_refuses_bad_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--max-batch", "0"])
    assert exc.value.code == 2 and "max_batch must be > 0" in capsys.readouterr().err


def test_cache_normalises_and_evicts_least_recent():
    assert normalise("  ＡＢＣ\u3000 好\t\n評 ") == "ABC 好 評"
    cache: LruCache[int] = LruCache(2)
    cache.put("a", 1), cache.put("b", 2), cache.get("a"), cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert (cache.hits, cache.misses) == (3, 1)
    off: LruCache[int] = LruCache(0)
    off.put("a", 1)
    assert off.get("a") is None and (off.hits, off.misses, len(off)) == (0, 0, 0)


def test_metrics_exposition_format():
    reg = Registry()
    c = reg.add(Counter("requests_total", "Requests.", ("endpoint", "status")))
    h = reg.add(Histogram("batch_size", "Sizes.", (1, 4)))
    c.inc('/a"b', "200")
    h.observe(3), h.observe(1)
    text = reg.render()
    assert '# TYPE requests_total counter\nrequests_total{endpoint="/a\\"b",status="200"} 1\n' in text
    assert 'batch_size_bucket{le="1"} 1\nbatch_size_bucket{le="4"} 2\nbatch_size_bucket{le="+Inf"} 2' in text
    assert "batch_size_sum 4\nbatch_size_count 2\n" in text


# --- the contract on the real tiny twin -------------------------------------------------------------------------

def test_sentiment_contract(live, tiny_model):
    labels = json.loads((tiny_model / "config.json").read_text(encoding="utf-8"))["id2label"]
    resp = live.post("/api/sentiment", json={"text": "这部电影太烂了，完全不值得一看"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) >= {"text", "label", "score", "inference_time_ms", "truncated", "cached"}
    assert body["text"] == "这部电影太烂了，完全不值得一看"
    assert body["label"] == labels[str(body["label_id"])] and body["label"] in {"负面", "正面"}
    assert 0.0 <= body["score"] <= 1.0 and round(body["score"], 4) == body["score"] and body["score"] >= 0.5
    assert body["inference_time_ms"] > 0 and body["truncated"] is False
    assert set(server_timing(resp)) == {"queue", "tokenize", "inference", "total"}


def test_long_text_is_truncated_and_flagged(live):
    body = live.post("/api/sentiment", json={"text": "好" * 600}).json()
    short = live.post("/api/sentiment", json={"text": "好" * 100}).json()
    assert body["truncated"] is True and short["truncated"] is False


def test_batch_endpoint_keeps_order(live):
    texts = ["质量很好，物流也快", "太差了，再也不买", "一般般"]
    resp = live.post("/api/sentiment/batch", json={"texts": texts})
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert [r["text"] for r in results] == texts
    assert all(0 <= r["score"] <= 1 and r["label"] in {"负面", "正面"} for r in results)
    assert "inference" in server_timing(resp)


def test_cache_hit_on_repeat_and_counted(live):
    before = metric(live.get("/metrics").text, "cache_hits_total")
    first = live.post("/api/sentiment", json={"text": "缓存测试：服务态度非常好"}).json()
    second = live.post("/api/sentiment", json={"text": "  缓存测试：服务态度非常好 "}).json()
    assert first["cached"] is False and second["cached"] is True
    assert (second["label"], second["score"]) == (first["label"], first["score"])
    assert metric(live.get("/metrics").text, "cache_hits_total") == before + 1


def test_metrics_move(live):
    key = 'requests_total{endpoint="/api/sentiment",status="200"}'
    bad = 'errors_total{kind="invalid_input"}'
    before = live.get("/metrics").text
    live.post("/api/sentiment", json={"text": "指标测试"})
    live.post("/api/sentiment", json={"text": ""})
    resp = live.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert metric(resp.text, key) == metric(before, key) + 1 and metric(resp.text, bad) == metric(before, bad) + 1
    for name in ("cache_misses_total", "queue_depth", "batch_size_count", "request_latency_seconds_bucket"):
        assert name in resp.text


def test_healthz_describes_the_model(live):
    health = live.get("/healthz").json()
    assert health["status"] == "ready" and health["synthetic"] is True and health["backend"] == "ort-int8-cpu"


def test_webui_is_self_contained(live):
    resp = live.get("/")
    html = resp.text
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    for needle in ('id="text"', 'id="analyse"', 'id="history"', "开始分析", "😊", "😠", "/api/sentiment",
                   "synthetic twin weights: labels are meaningless"):
        assert needle in html
    assert "http://" not in html and "https://" not in html and "<script src" not in html


def test_openapi_documents_the_routes(live):
    paths = live.get("/openapi.json").json()["paths"]
    assert {"/api/sentiment", "/api/sentiment/batch", "/healthz", "/metrics"} <= set(paths)


# --- batching, gating, back-pressure, failures (scripted backend) -----------------------------------------------

def test_health_gated_until_loaded(tiny_model):
    gate = threading.Event()
    with scripted_server(tiny_model, ScriptedBackend(tiny_model, gate=gate)) as url, httpx.Client(base_url=url) as c:
        assert c.get("/healthz").status_code == 503 and c.get("/healthz").json()["status"] == "loading"
        early = c.post("/api/sentiment", json={"text": "好"})
        assert early.status_code == 503 and early.headers["retry-after"] == "1" and "loading" in early.json()["error"]
        gate.set()
        assert wait_ready(c)["status"] == "ready"
        assert c.post("/api/sentiment", json={"text": "好"}).json()["label"] == "正面"


def test_failed_load_reported_not_served(tiny_model):
    backend = ScriptedBackend(tiny_model, load_error=FileNotFoundError("model-int8.onnx is missing"))
    with scripted_server(tiny_model, backend) as url, httpx.Client(base_url=url) as c:
        end = time.monotonic() + 10
        while c.get("/healthz").json()["status"] == "loading" and time.monotonic() < end:
            time.sleep(0.02)
        health = c.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        assert "model-int8.onnx is missing" in health.json()["error"]
        resp = c.post("/api/sentiment", json={"text": "好"})
        assert resp.status_code == 503 and "failed" in resp.json()["error"]


def test_concurrent_requests_form_batches(tiny_model):
    backend = ScriptedBackend(tiny_model, delay=0.1)
    responses, text = posts_under_load(tiny_model, backend, [f"并发{i}" for i in range(16)], max_batch=8, max_wait_ms=20)
    assert all(r.status_code == 200 for r in responses)
    assert max(backend.sizes) > 1 and sum(backend.sizes) == 16
    assert max(int(r.headers["x-batch-size"]) for r in responses) > 1
    assert metric(text, "batch_size_count") < 16 and metric(text, "batch_size_sum") == 16


def test_batching_off_serves_one_at_a_time(tiny_model):
    backend = ScriptedBackend(tiny_model, delay=0.01)
    responses, text = posts_under_load(tiny_model, backend, [f"串行{i}" for i in range(8)], batching=False)
    assert all(r.status_code == 200 for r in responses) and backend.sizes == [1] * 8
    assert metric(text, 'batch_size_bucket{le="1"}') == 8


def test_queue_full_answers_503_with_retry_after(tiny_model):
    backend = ScriptedBackend(tiny_model, delay=0.3)
    responses, text = posts_under_load(tiny_model, backend, [f"排队{i}" for i in range(8)], batching=False, max_queue=2)
    refused = [r for r in responses if r.status_code == 503]
    assert refused and any(r.status_code == 200 for r in responses)
    assert all(r.headers["retry-after"] == "1" and "busy" in r.json()["error"] for r in refused)
    assert metric(text, 'errors_total{kind="queue_full"}') == len(refused)


def test_queue_deadline_drops_without_computing(tiny_model):
    backend = ScriptedBackend(tiny_model, delay=0.4)
    responses, text = posts_under_load(tiny_model, backend, [f"超时{i}" for i in range(3)], batching=False, request_timeout_s=0.15)
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
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_length_groups_keep_padding_within_budget():
    from bench.service.batcher import length_groups

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

    from bench.service.batcher import Batcher
    from bench.tokenize import load_tokenizer, model_dir_str

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
    from bench.service.config import CPU_MAX_PADDING, GPU_MAX_PADDING

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

    from bench.service.batcher import Batcher
    from bench.tokenize import load_tokenizer, model_dir_str

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
