"""Locust's own distribution on loopback: a real master and two real workers against a real service (fake
backend), the merge of their samples files, and a worker that never connects."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import BenchError
from loadtests.distributed import LocalCluster, merge_samples, merged_figures, run_distributed, samples_files
from loadtests.levels import pooled_level
from loadtests.samples import SampleWriter, crosscheck, level_stats, read_samples, sample_paths
from loadtests.service_proc import ServiceProcess, ServiceVariant, metrics
from loadtests.sweep import run_window
from loadtests.windows import SweepConfig

REPO = Path(__file__).resolve().parent.parent
VARIANT = ServiceVariant.of("fake", backend="fake-fp32-cpu", cache_size=0)


@pytest.fixture(scope="module")
def service(tiny_model):
    """The real service (uvicorn) on the fake backend: 10 ms per model call, no ONNX needed."""
    proc = ServiceProcess("twin:tiny", VARIANT)
    yield proc.wait_ready(120)
    proc.stop()


def _answered(url: str) -> float:
    return sum(v for k, v in metrics(url).items() if k.startswith("requests_total") and "/api/sentiment" in k)


@pytest.mark.e2e
def test_closed_loop_master_and_two_workers_merge_to_one_level(service, tmp_path):
    cfg = SweepConfig(model="twin:tiny", duration_s=1.5, ramp_s=0.5, variants=(VARIANT,))
    before = _answered(service)
    result = run_distributed(service, 4, cfg, tmp_path, "closed", workers=2, connect_timeout_s=20)
    served = _answered(service) - before
    paths = sample_paths(tmp_path / "closed_client.json")
    samples = merge_samples([tmp_path])
    assert len(paths) == 2 and list(samples.paths) == [str(p.resolve()) for p in paths]  # one file per worker
    assert all((samples.process == i).sum() > 5 for i in range(2)) and samples.ok.all()
    # the stats reset after the ramp-up may drop a few early requests that the service did answer
    assert 0.7 * served <= samples.n <= served
    assert result["client_processes"] == 3 and result["client"]["server_timing_n"] > 0  # workers reported
    assert np.ptp(samples.process_timed_from_s) < 0.5  # both workers reset on the master's one message
    stats = level_stats(samples, window_s=0.5, duration_s=cfg.duration_s, n_boot=200)
    assert stats["failures"] == 0 and stats["processes"] == 2 and stats["windows"] == 3 and stats["qps"] > 0
    assert stats["p50_ms_ci95"][0] <= stats["p50_ms"] <= stats["p50_ms_ci95"][1]
    # The master's CSV may miss the workers' last report; a worker report crossing the reset message (a window of
    # milliseconds) would give it a few requests the worker dropped (as in test_loadtest_samples).
    check = crosscheck(stats, result["row"], samples)
    assert int(result["row"]["Failure Count"]) == 0, result["row"]
    assert -0.05 * stats["n"] <= check["requests"]["csv_lag"] <= 0.5 * stats["n"], check


@pytest.mark.e2e
def test_open_loop_rate_is_split_over_the_workers(service, tmp_path):
    """Through the sweep's own window: open loop with --workers 2 runs a master and two workers, each at half the
    rate with its own arrivals; every request sent is answered, recorded once and pooled into the level."""
    cfg = SweepConfig(model="twin:tiny", duration_s=1.5, open_rates=(40.0,), workers=2, variants=(VARIANT,))
    before = _answered(service)
    window = run_window(service, 1, 40.0, cfg, tmp_path, "open")
    served = _answered(service) - before
    samples = read_samples(window.samples)
    loop = window.client["open_loop"]
    assert len(window.samples) == 2 and samples.open_loop and samples.ok.all()
    assert samples.n == served == loop["intended"] == loop["accepted"]  # all requests, counted once
    per_worker = [int((samples.process == i).sum()) for i in range(2)]
    assert all(10 <= k <= 55 for k in per_worker), per_worker  # ~30 each at 20 req/s for 1.5 s (Poisson)
    first = [samples.intended_s[samples.process == i][:5] - samples.process_started_s[i] for i in range(2)]
    assert not np.allclose(first[0], first[1], atol=1e-3)  # independent schedules, not one schedule twice
    level = pooled_level(VARIANT, cfg, [window])
    assert level.workers == 2 and level.requests == samples.n and level.failures == 0 and level.mode == "open"
    assert 20 <= level.achieved_rps <= 60 and window.cpu["client_processes"] == 3


def _write(path, started, rows):
    writer = SampleWriter(path)
    writer.start_test(started)
    for row in rows:
        writer.add(*row)
    writer.flush()


def test_merge_reads_every_workers_file_once_in_path_order(tmp_path):
    a, b = tmp_path / "hostA", tmp_path / "hostB"
    a.mkdir(), b.mkdir()
    _write(a / "w_samples_7.csv", 1000.0, [(1000.1, 10.0, True), (1000.2, 30.0, True)])
    _write(b / "w_samples_7.csv", 1000.3, [(1000.4, 20.0, True), (1000.5, 40.0, False), (1001.9, 50.0, True)])
    (b / "w_client.json").write_text("{}")  # not a samples file
    samples = merge_samples([b, a, a / "w_samples_7.csv"])  # same pid on two machines; a file named twice
    assert samples.n == 5 and list(samples.paths) == [str((d / "w_samples_7.csv").resolve()) for d in (a, b)]
    assert samples.latency_ms.tolist() == [10.0, 30.0, 20.0, 40.0, 50.0]  # file by file, each in its own order
    assert samples.process.tolist() == [0, 0, 1, 1, 1] and samples.timed_from_s == 1000.3  # the latest start
    figures = merged_figures(samples, window_s=0.5)
    assert figures["requests_per_file"] == [2, 3] and figures["failures"] == 1
    assert figures["timed_from_spread_s"] == pytest.approx(0.3) and figures["window_counts"] == [2, 0, 0]
    with pytest.raises(BenchError, match="no samples files"):
        merge_samples([tmp_path])  # the files lie one level down
    with pytest.raises(BenchError, match="no such file"):
        samples_files([tmp_path / "missing"])


def test_merge_command_prints_the_level_or_one_error_line(tmp_path):
    _write(tmp_path / "m_samples_1.csv", 1000.0, [(1000.0 + i / 10, 10.0 + i, True) for i in range(30)])
    _write(tmp_path / "m_samples_2.csv", 1000.0, [(1000.05 + i / 10, 20.0 + i, True) for i in range(30)])

    def merge(*args):
        return subprocess.run([sys.executable, "-m", "loadtests.distributed", "merge", *map(str, args)],
                              cwd=REPO, capture_output=True, text=True, timeout=60)

    ok = merge(tmp_path, "--window-s", "1")
    assert ok.returncode == 0 and "files: 2 (requests 30 / 30)" in ok.stdout and "QPS: 20.00 req/s" in ok.stdout
    assert "requests: 60, failures: 0" in ok.stdout and "warning" not in ok.stdout, ok.stdout
    (tmp_path / "empty").mkdir()
    empty = merge(tmp_path / "empty")
    assert empty.returncode == 2 and empty.stderr.startswith("error: ") and "no samples files" in empty.stderr


@pytest.mark.e2e
def test_a_worker_that_never_connects_is_one_clear_error(service, tmp_path):
    cfg = SweepConfig(model="twin:tiny", duration_s=1.0, ramp_s=0.0, variants=(VARIANT,))
    cluster = LocalCluster(service, 2, cfg, tmp_path, "lost", workers=2, connect_timeout_s=2)
    started = time.monotonic()
    try:
        cluster.start_worker()  # the second never starts, as a load machine that cannot reach the master
        with pytest.raises(BenchError, match=r"did not connect: .* waited 2 s .* for 2 workers, 1 started"):
            cluster.wait()
    finally:
        cluster.close()
    assert time.monotonic() - started < 20 and all(p.poll() is not None for p in [cluster.master, *cluster.procs])
