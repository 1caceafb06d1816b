"""The inference service against real uvicorn on 127.0.0.1 port 0: the API contract on the tiny twin (ort-int8),
and batching, health gating, back-pressure and failure paths with a scripted backend that sleeps a known time."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from bench.service.app import create_app
from bench.service.cache import LruCache, normalise
from bench.service.cli import main as cli_main
from bench.service.config import ServiceConfig
from bench.service.metrics import ServiceMetrics
from bench.service.server import ThreadedServer
from tests.service_helpers import ScriptedBackend, metric, scripted_server, server_timing, wait_ready


@pytest.fixture(scope="module")
def live(tiny_model, tiny_onnx):
    """The tiny twin behind ort-int8-cpu, exactly as the CLI would build it."""
    config = ServiceConfig(model="twin:tiny", backend="ort-int8-cpu", onnx_dir=str(tiny_onnx[0]), threads=1)
    with ThreadedServer(create_app(config)) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        yield client


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


def test_metrics_carry_the_prefix_read_owners_at_scrape_time_and_describe_the_process():
    depth = [3]
    m = ServiceMetrics(cache_hits=lambda: 2, cache_misses=lambda: 5, queue_depth=lambda: depth[0],
                       failed_batches=lambda: 0)
    m.observe_request('/a"b', 200, 0.004)
    m.observe_batch(3, replica=0), m.observe_batch(1, replica=0)
    depth[0] = 7  # read when scraped, not copied when built
    text = m.render()
    assert 'structbench_requests_total{endpoint="/a\\"b",status="200"} 1.0' in text
    assert 'structbench_batch_size_bucket{le="1.0"} 1.0\nstructbench_batch_size_bucket{le="2.0"} 1.0' in text
    assert "structbench_batch_size_sum 4.0" in text and "structbench_batch_size_count 2.0" in text
    assert "structbench_queue_depth 7.0" in text and "structbench_cache_misses_total 5.0" in text
    assert 'structbench_replica_texts_total{replica="0"} 4.0' in text
    assert "structbench_process_resident_memory_bytes " in text and "_created" not in text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert all(n.startswith("structbench_") for n in names)


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
    assert set(server_timing(resp)) == {"queue", "tokenize", "inference", "model", "total"}


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
        assert f"\nstructbench_{name}" in resp.text  # every name carries the project's prefix
    names = {line.split()[2] for line in resp.text.splitlines() if line.startswith("# TYPE")}
    assert names and all(n.startswith("structbench_") for n in names)


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
