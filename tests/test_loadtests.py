"""Load tests against a real service on 127.0.0.1: Locust smoke, open loop, distributed, sweep records."""

import numpy as np
import pytest

from bench.core.records import LoadLevel, ServiceSetup
from loadtests.service_proc import ServiceProcess, ServiceVariant, metrics
from loadtests.shapes import ClientStats, arrival_times, parse_server_timing
from loadtests.sweep import interleaved, run_sweep
from loadtests.windows import SweepConfig, run_locust


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
    a.charge_window("host:1", 0.25, 5.0)
    b.charge_window("host:2", 0.5, 4.0)  # a worker reports its window in pieces, each added to its own process
    a.merge(b.drain())
    b.charge_window("host:2", 0.5, 1.0)
    a.merge(b.drain())
    out = a.summary()
    assert out["server_timing_ms"]["queue"] == 1.0 and out["server_timing_n"] == 2 and out["window_cpu_s"] == 1.25
    cpu = (out["client_cpu_percent"], out["client_max_process_cpu_percent"], out["client_processes"])
    assert cpu == (25.0, 20.0, 2)
    assert ClientStats().summary()["client_cpu_percent"] is None  # no timed window: not measured, not 0
    assert out["open_loop"]["late_send_percent"] == 25.0 and out["open_loop"]["p50_ms"] == 20.0


@pytest.fixture(scope="module")
def service(tiny_onnx):
    proc = ServiceProcess("twin:tiny", ServiceVariant.of("t", cache_size=64))
    url = proc.wait_ready(300)
    yield url
    proc.stop()


def test_a_variant_passes_its_queue_bound_to_the_service_only_when_it_is_not_the_default():
    assert "--max-queue" not in ServiceVariant.of("default").flags()
    deep = ServiceVariant.of("deep", max_queue=256).flags()
    assert deep[deep.index("--max-queue") + 1] == "256"


@pytest.mark.e2e
def test_locust_headless_smoke_run(service, tmp_path):
    cfg = SweepConfig(model="twin:tiny", users=(2,), duration_s=3, ramp_s=1)
    result = run_locust(service, 2, cfg, tmp_path, "smoke")
    assert int(result["row"]["Request Count"]) > 10 and int(result["row"]["Failure Count"]) == 0
    assert set(result["client"]["server_timing_ms"]) == {"queue", "tokenize", "inference", "model", "total"}
    # Locust's own CPU within the 3 s window: some, and less than one core's worth (its start-up is not in it)
    assert result["client"]["invalid_answers"] == 0 and 0 < result["client"]["window_cpu_s"] < 3.0
    assert 0 < result["client_cpu_percent"] == result["client_max_process_cpu_percent"] < 100
    assert result["client_processes"] == 1


@pytest.mark.e2e
def test_open_loop_sends_on_schedule_and_reports_achieved_rate(service, tmp_path):
    cfg = SweepConfig(model="twin:tiny", duration_s=3, open_rates=(20,))
    result = run_locust(service, 1, cfg, tmp_path, "open", rate=20.0)
    loop = result["client"]["open_loop"]
    assert abs(loop["intended"] - 60) <= 25  # Poisson arrivals: 60 expected in 3 s
    assert loop["completed"] == loop["intended"] and loop["late_send_percent"] < 20
    assert loop["p50_ms"] > 0


@pytest.mark.e2e
def test_distributed_run_with_two_workers(service, tmp_path):
    cfg = SweepConfig(model="twin:tiny", users=(4,), duration_s=4, ramp_s=1, workers=2)
    result = run_locust(service, 4, cfg, tmp_path, "dist")
    assert int(result["row"]["Request Count"]) > 10 and int(result["row"]["Failure Count"]) == 0
    assert result["client_processes"] == 3  # master + 2 workers, each charging its own window
    assert result["client"]["server_timing_n"] > 0  # worker figures reached the master


@pytest.mark.e2e
def test_zipf_workload_hits_the_cache(service, tmp_path):
    before = metrics(service)
    cfg = SweepConfig(model="twin:tiny", users=(2,), duration_s=3, ramp_s=1, workload="zipf")
    run_locust(service, 2, cfg, tmp_path, "zipf")
    after = metrics(service)
    hits = after["cache_hits_total"] - before.get("cache_hits_total", 0)
    misses = after["cache_misses_total"] - before.get("cache_misses_total", 0)
    assert hits > misses > 0


@pytest.mark.e2e
def test_sweep_records_levels_and_a_failing_service_config(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the services it starts see no CUDA device, GPU host or not
    cfg = SweepConfig(model="twin:tiny", users=(1, 4), duration_s=2, ramp_s=1, processes=2, window_s=0.5,
                      variants=(ServiceVariant.of("ok", cache_size=0), ServiceVariant.of("nobatch", batching=False),
                                ServiceVariant.of("no gpu", backend="ort-fp32-cuda")))
    levels = run_sweep(cfg, tmp_path)
    ok = [lv for lv in levels if lv.config.label == "ok"]
    assert [lv.users for lv in ok] == [1, 4] and all(isinstance(lv, LoadLevel) for lv in levels)
    for lv in ok:  # pooled over two fresh service processes, CIs across them
        assert lv.repeats == 2 and lv.processes == 2 and lv.failures == 0 and lv.requests > 0
        assert len(lv.process_qps) == len(lv.process_p95_ms) == 2
        assert lv.qps == pytest.approx(sum(lv.process_qps) / 2)  # the mean of the processes' rates
        assert lv.qps_ci[0] <= min(lv.process_qps) and max(lv.process_qps) <= lv.qps_ci[1]
        assert lv.p95_ci_ms[0] <= lv.p95_ms <= lv.p95_ci_ms[1]
        # the service's own CPU per text (from its /metrics) and the energy estimated from it, labelled so
        assert lv.service_cpu_ms_per_text > 0 and lv.energy_per_text_j > 0 and lv.energy_note.startswith("estimated")
        assert lv.pinning.startswith("not pinned") or lv.pinning.startswith("service on cores")
        assert lv.locust_csv["windows_agreeing"] == 1.0  # our raw samples, rounded Locust's way, are Locust's
    assert ok[0].server_timing_ms["total"] > 0 and ok[0].config == ServiceSetup("ok", cache_size=0)
    failed = [lv for lv in levels if lv.config.label == "no gpu"]
    assert failed[0].status == "failed" and "did not become ready" in failed[0].reason
    assert sorted(p.name for p in tmp_path.glob("ok_u4_*_stats.csv")) == ["ok_u4_p0_rep0_stats.csv",
                                                                         "ok_u4_p1_rep0_stats.csv"]


def test_a_gpu_host_adds_the_gpu_service_preset_to_the_defaults_and_a_cpu_host_does_not(monkeypatch):
    """Through the harness's real probe, asked of a fake libcuda (tests/fakes_gpu.py) instead of the machine's."""
    from bench.app.args import sweep_config
    from bench.app.cli import build_parser
    from bench.engine.harness import host_gpu_reason
    from bench.measure.cuda_driver import CudaDriver
    from bench.model.buckets import GPU_MAX_PADDING
    from loadtests import sweep
    from loadtests.windows import PRESETS
    from tests.fakes_gpu import FakeLibcuda

    gpu_host = lambda: (CudaDriver(FakeLibcuda([("NVIDIA L4", bytes(16), "0000:3b:00.0")])), None)  # noqa: E731
    cpu_host = lambda: (None, "no usable CUDA driver (libcuda.so.1: cannot open shared object file)")  # noqa: E731
    with_ort, without_ort = (lambda: True), (lambda: False)  # onnxruntime-gpu installed or not
    assert sweep.default_variant_names(lambda: host_gpu_reason(0, gpu_host), with_ort) == ("batch", "nobatch", "gpu")
    assert sweep.default_variant_names(lambda: host_gpu_reason(0, gpu_host), without_ort) == ("batch", "nobatch",
                                                                                                "gpu-torch")
    assert sweep.default_variant_names(lambda: host_gpu_reason(0, cpu_host), with_ort) == ("batch", "nobatch")
    assert PRESETS["gpu-torch"].config.backend == "torch-fp16-cuda"
    gpu = PRESETS["gpu"].config
    assert (gpu.backend, gpu.batching, gpu.max_batch, gpu.cache_size) == ("ort-fp16-cuda", True, 32, 0)
    assert gpu.effective_max_padding == GPU_MAX_PADDING and PRESETS["gpu"].flags()[-2:] == ["--max-padding",
                                                                                                 str(GPU_MAX_PADDING)]
    monkeypatch.setattr(sweep, "ort_has_cuda", lambda: True)
    for loader, expected in ((gpu_host, ["batch", "nobatch", "gpu"]), (cpu_host, ["batch", "nobatch"])):
        monkeypatch.setattr(sweep, "service_gpu_reason", lambda loader=loader: host_gpu_reason(0, loader))
        labels = [PRESETS[name].label for name in expected]
        assert [v.label for v in SweepConfig().variants] == ["int8 batching", "int8 no batching (article)"]
        args = build_parser(["sweep"]).parse_args(["sweep", "--model", "twin:tiny"])
        assert [v.label for v in sweep_config(args).variants] == labels
        args = build_parser(["sweep"]).parse_args(["sweep", "--variants", "batch"])
        assert [v.label for v in sweep_config(args).variants] == ["int8 batching"]  # asked for: as asked


def test_configurations_alternate_a_b_b_a():
    a, b = ServiceVariant.of("a"), ServiceVariant.of("b")
    assert [(r, v.label) for r, v in interleaved((a, b), 3)] == [(0, "a"), (0, "b"), (1, "b"), (1, "a"),
                                                                 (2, "a"), (2, "b")]


@pytest.mark.e2e
def test_interleaved_plan_runs_repeated_levels_in_one_service(tiny_onnx, tmp_path):
    from loadtests.sweep import sweep_variant

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

        def set_postfix_str(self, text):
            pass

    cfg = SweepConfig(model="twin:tiny", users=(1, 2), duration_s=1.5, ramp_s=0.5)
    bar = Bar()
    plan = [(1, None), (2, None), (2, None), (1, None)]
    records = sweep_variant(ServiceVariant.of("abba"), cfg, tmp_path, bar, plan)
    assert [(r.window, r.users) for r in records] == [(0, 1), (1, 2), (2, 2), (3, 1)] and bar.n == 4
    assert all(r.qps > 0 and r.failures == 0 for r in records)
    assert all((tmp_path / f"abba_u{u}_w{i:02d}_stats.csv").exists() for i, (u, _) in enumerate(plan))


def test_service_check_figures_from_interleaved_windows():
    from bench.app.checks.service import service_figures
    from bench.core.records import CellResult, CellSpec, ProcessRun

    def window(i, batching, users, qps, p50=50.0, mean=52.0, inference=49.0):
        return LoadLevel(ServiceSetup("x", batching=batching), users=users, qps=qps, p50_ms=p50, mean_ms=mean,
                         server_timing_ms={"inference": inference}, client_cpu_percent=9.0, window=i)

    batching = ((1, 18.0), (8, 19.0), (8, 19.4), (1, 18.2), (16, 19.9))
    records = [window(i, True, u, q) for i, (u, q) in enumerate(batching)]
    records += [window(i, False, u, q) for i, (u, q) in enumerate(((1, 18.0), (8, 17.0), (8, 17.2), (1, 18.4)))]
    engine = {b: CellResult(CellSpec("ort-int8-cpu", batch=b), "ok", items_per_batch=b,
                            runs=(ProcessRun(latencies_s=(0.048 * b, 0.050 * b) * 10, window_s=1.0),))
              for b in (1, 4)}
    f = service_figures(records, engine)
    assert f["qps8_over_qps1_batching"] == pytest.approx(np.sqrt(19.0 * 19.4) / np.sqrt(18.0 * 18.2))
    lo, hi = f["qps8_over_qps1_no_batching_ci95"]
    assert lo < f["qps8_over_qps1_no_batching"] < hi and f["qps8_over_qps1_no_batching"] < 1.0
    assert f["engine_best_batch"] == 4 and f["engine_best_throughput"] == 80.0
    assert f["saturated_service_qps"] == 19.9  # the best level's mean over its windows
    assert f["saturated_over_engine"] == pytest.approx(19.9 / f["engine_best_throughput"])
    assert f["service_minus_engine_p50_ms"] == pytest.approx(50.0 - 49.0)
    assert f["service_overhead_same_process_ms"] == {"batching": 3.0, "no batching": 3.0}
    assert f["windows_per_level"] == 2


def test_the_load_generator_is_pinned_apart_only_where_the_host_has_cores_to_spare():
    from loadtests.service_proc import Pinning

    small = Pinning.of([0, 1])
    assert small == Pinning() and small.describe(2).startswith("not pinned: 2 cores")
    big = Pinning.of(list(range(16)))
    assert big.service == tuple(range(14)) and big.client == (14, 15)
    assert big.describe(16) == "service on cores 0–13, Locust on 14–15"
    assert Pinning.of([0, 2, 4, 6]).describe(4) == "service on cores 0,2,4, Locust on 6"


def test_a_pinned_process_runs_only_on_its_cores():
    import os
    import subprocess
    import sys

    from bench.measure.host import available_cores
    from loadtests.service_proc import Pinning

    cores = available_cores()
    pinning = Pinning(service=tuple(cores[:-1]) or tuple(cores), client=(cores[-1],))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        pinning.pin(proc.pid, client=True)
        assert os.sched_getaffinity(proc.pid) == {cores[-1]}
    finally:
        proc.kill()
        proc.wait()
