"""Load tests against a real service on 127.0.0.1: Locust smoke, open loop, distributed, sweep records."""

import numpy as np
import pytest

from bench.results import RunResult, load_run, save_run
from loadtests.service_proc import ServiceProcess, ServiceVariant, metrics
from loadtests.shapes import ClientStats, arrival_times, parse_server_timing
from loadtests.sweep import SweepConfig, run_locust, sweep_into_run


def test_constant_arrivals_are_evenly_spaced():
    times = arrival_times(10, 2.0, poisson=False)
    assert len(times) == 20 and np.allclose(np.diff(times), 0.1)


def test_poisson_arrivals_have_the_offered_rate_and_are_seeded():
    times = arrival_times(50, 200.0, poisson=True, seed=3)
    assert abs(len(times) / 200.0 - 50) < 2.5 and (times < 200).all()
    assert np.array_equal(times, arrival_times(50, 200.0, poisson=True, seed=3))
    cv = np.std(np.diff(times)) / np.mean(np.diff(times))
    assert 0.9 < cv < 1.1  # exponential gaps


def test_server_timing_parse_and_client_stats_merge():
    parts = parse_server_timing("queue;dur=1.5, tokenize;dur=0.5, inference;dur=10, total;dur=12.25")
    assert parts == {"queue": 1.5, "tokenize": 0.5, "inference": 10.0, "total": 12.25}
    a, b = ClientStats(), ClientStats()
    a.add_timing(parts)
    b.add_timing({"queue": 0.5, "total": 2.0})
    b.intended, b.late_sends, b.open_latencies_ms = 4, 1, [10.0, 20.0, 30.0]
    a.merge(b.drain())
    out = a.summary()
    assert out["server_timing_ms"]["queue"] == 1.0 and out["server_timing_n"] == 2
    assert out["open_loop"]["late_send_percent"] == 25.0 and out["open_loop"]["p50_ms"] == 20.0


@pytest.fixture(scope="module")
def service(tiny_onnx):
    proc = ServiceProcess("twin:tiny", ServiceVariant("t", cache_size=64))
    url = proc.wait_ready(300)
    yield url
    proc.stop()


def test_locust_headless_smoke_run(service, tmp_path):
    cfg = SweepConfig(model="twin:tiny", users=(2,), duration_s=3, ramp_s=1)
    result = run_locust(service, 2, cfg, tmp_path, "smoke")
    assert int(result["row"]["Request Count"]) > 10 and int(result["row"]["Failure Count"]) == 0
    assert set(result["client"]["server_timing_ms"]) == {"queue", "tokenize", "inference", "total"}
    assert result["client"]["invalid_answers"] == 0 and result["client_cpu_percent"] > 0


def test_open_loop_sends_on_schedule_and_reports_achieved_rate(service, tmp_path):
    cfg = SweepConfig(model="twin:tiny", duration_s=3, open_rates=(20,))
    result = run_locust(service, 1, cfg, tmp_path, "open", rate=20.0)
    loop = result["client"]["open_loop"]
    assert abs(loop["intended"] - 60) <= 25  # Poisson arrivals: 60 expected in 3 s
    assert loop["completed"] == loop["intended"] and loop["late_send_percent"] < 20
    assert loop["p50_ms"] > 0


def test_distributed_run_with_two_workers(service, tmp_path):
    cfg = SweepConfig(model="twin:tiny", users=(4,), duration_s=4, ramp_s=1, workers=2)
    result = run_locust(service, 4, cfg, tmp_path, "dist")
    assert int(result["row"]["Request Count"]) > 10 and int(result["row"]["Failure Count"]) == 0
    assert result["client_processes"] >= 3  # master + 2 workers
    assert result["client"]["server_timing_n"] > 0  # worker figures reached the master


def test_zipf_workload_hits_the_cache(service, tmp_path):
    before = metrics(service)
    cfg = SweepConfig(model="twin:tiny", users=(2,), duration_s=3, ramp_s=1, workload="zipf")
    run_locust(service, 2, cfg, tmp_path, "zipf")
    after = metrics(service)
    hits = after["cache_hits_total"] - before.get("cache_hits_total", 0)
    misses = after["cache_misses_total"] - before.get("cache_misses_total", 0)
    assert hits > misses > 0


def test_sweep_records_levels_and_a_failing_service_config(tiny_onnx, tmp_path):
    save_run(RunResult("s", "now", {}, {"spec": "twin:tiny"}, {}), tmp_path)
    cfg = SweepConfig(model="twin:tiny", users=(1, 4), duration_s=2, ramp_s=1,
                      variants=(ServiceVariant("ok"), ServiceVariant("no gpu", backend="ort-fp32-cuda")))
    run = load_run(sweep_into_run(cfg, tmp_path))
    ok = [r for r in run.loadtests if r["config"]["label"] == "ok"]
    assert [r["users"] for r in ok] == [1, 4] and all(r["qps"] > 0 and r["failures"] == 0 for r in ok)
    assert ok[1]["mean_batch_size"] >= 1.0 and ok[0]["server_timing_ms"]["total"] > 0
    failed = [r for r in run.loadtests if r["config"]["label"] == "no gpu"]
    assert failed[0]["status"] == "failed" and "did not become ready" in failed[0]["reason"]
    assert (tmp_path / "loadtests" / "ok_u4_stats.csv").exists()
