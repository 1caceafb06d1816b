"""Raw per-request samples: the file format, level statistics on known samples, Locust's rounding replayed,
and real Locust runs (one process, --processes 2, open loop) whose samples must reproduce Locust's CSV."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.core.stats import window_rate_ci
from loadtests.samples import (
    Samples,
    SampleWriter,
    crosscheck,
    level_stats,
    locust_bucket,
    locust_percentile,
    read_samples,
    sample_paths,
    samples_path,
)
from loadtests.service_proc import ServiceProcess, ServiceVariant
from loadtests.windows import SweepConfig, run_locust


def _samples(completed_s, latency_ms=10.0, timed_from_s=1000.0, ok=None, intended_s=None) -> Samples:
    completed = np.asarray(completed_s, dtype=float)
    latency = np.broadcast_to(np.asarray(latency_ms, dtype=float), completed.shape).copy()
    n = completed.size
    return Samples(completed - latency / 1000.0, latency, np.ones(n, bool) if ok is None else np.asarray(ok),
                   np.full(n, np.nan) if intended_s is None else np.asarray(intended_s, dtype=float),
                   np.zeros(n, int), (timed_from_s,), (timed_from_s,), ("p0",))


def _spread(counts, t0=1000.0, window_s=2.0) -> list[float]:
    """`counts[i]` completion times spread evenly inside window i."""
    return [t0 + window_s * (i + (j + 0.5) / c) for i, c in enumerate(counts) for j in range(c)]


def test_windows_count_completions_from_the_timed_start():
    counts = [10, 20, 30, 40, 50]
    done = _spread(counts) + [999.2, 999.9] + [1010.1, 1010.2, 1011.0]  # 2 before the window start, 3 after its end
    stats = level_stats(_samples(done), window_s=2.0, duration_s=10.0, n_boot=200)
    assert stats["window_counts"] == counts and stats["windows"] == 5 and stats["n"] == 155
    assert stats["qps"] == pytest.approx(15.0)
    assert stats["qps_ci95"] == pytest.approx(list(window_rate_ci(counts, 2.0)[1:]))
    assert stats["timed_from_s"] == 1000.0 and stats["latency_from"] == "send"


def test_without_a_duration_only_whole_windows_count():
    done = _spread([8, 8, 8], window_s=4.0)[:-3]  # the last completion lands at ~1011.2 s: 2 whole windows of 4 s
    stats = level_stats(_samples(done), window_s=4.0, n_boot=100)
    assert stats["windows"] == 2 and stats["window_counts"] == [8, 8] and stats["qps"] == 2.0
    one = level_stats(_samples(done), window_s=8.0, n_boot=100)
    assert one["windows"] == 1 and one["qps"] == 2.0 and one["qps_ci95"] is None  # no spread from one window
    none = level_stats(_samples(done), window_s=20.0, n_boot=100)
    assert none["windows"] == 0 and none["qps"] is None and none["window_counts"] == []


def test_latency_percentiles_and_their_cis_come_from_the_raw_samples():
    latency = np.arange(1.0, 201.0)  # 1..200 ms
    stats = level_stats(_samples(_spread([200]), latency_ms=latency), n_boot=300)
    assert stats["p50_ms"] == pytest.approx(100.5) and stats["p99_ms"] == pytest.approx(198.01)
    assert stats["mean_ms"] == pytest.approx(100.5)
    for q in (50, 95, 99):
        lo, hi = stats[f"p{q}_ms_ci95"]
        assert lo <= stats[f"p{q}_ms"] <= hi and hi - lo > 0
    assert stats["locust_rule_ms"] == {"50%": 100, "95%": 190, "99%": 200}  # Locust's ranks of rounded values


def test_open_loop_latency_counts_from_the_intended_send_and_ok_only_drops_failures():
    done = np.array(_spread([4]))
    intended = done - 0.010 - 0.050  # each request went out 50 ms late and took 10 ms
    ok = np.array([True, True, True, False])
    s = _samples(done, latency_ms=[10.0, 10.0, 10.0, 1.0], ok=ok, intended_s=intended)
    stats = level_stats(s, n_boot=100)
    assert stats["latency_from"] == "intended" and stats["failures"] == 1
    assert stats["p50_ms"] == pytest.approx(60.0) and stats["locust_rule_ms"]["50%"] == 10
    assert level_stats(s, ok_only=True, n_boot=100)["p99_ms"] == pytest.approx(60.0)


def test_writer_round_trips_bit_for_bit_and_restarts_at_a_reset(tmp_path):
    path = samples_path(tmp_path / "lvl_client.json", 4242)
    assert path.name == "lvl_samples_4242.csv" and samples_path(tmp_path / "x.json", 1).name == "x_samples_1.csv"
    w = SampleWriter(path)
    w.start_test(1.0)
    w.add(0.5, 99.0, True)  # ramp-up: dropped by the reset below
    w.start_window(1732537200.1234567)
    w.add(1732537200.2, 0.1 + 0.2, True)
    w.flush()
    w.add(1732537201.3, np.float64(2.5), False, np.float64(1732537201.25))  # numpy floats, as the open loop has
    w.flush()
    w.flush()
    s = read_samples([path])
    assert s.latency_ms.tolist() == [0.1 + 0.2, 2.5] and s.ok.tolist() == [True, False]
    assert s.timed_from_s == 1732537200.1234567 and s.process_started_s == (1.0,)
    assert np.isnan(s.intended_s[0]) and s.intended_s[1] == 1732537201.25


def test_read_samples_merges_processes_and_refuses_strangers(tmp_path):
    out = tmp_path / "x_client.json"
    for pid, t0, n in ((11, 100.0, 3), (12, 100.5, 2)):
        w = SampleWriter(samples_path(out, pid))
        w.start_window(t0)
        for i in range(n):
            w.add(t0 + i, 5.0, True)
        w.flush()
    (tmp_path / "x_samples_old.csv").write_text("not ours")
    paths = sample_paths(out)
    assert [p.name for p in paths] == ["x_samples_11.csv", "x_samples_12.csv"]
    s = read_samples(paths)
    assert s.n == 5 and s.process.tolist() == [0, 0, 0, 1, 1] and s.timed_from_s == 100.5
    assert s.process_timed_from_s == (100.0, 100.5) and np.isnan(s.process_started_s).all()  # no start_test
    with pytest.raises(BenchError, match="version"):
        read_samples([tmp_path / "x_samples_old.csv"])
    with pytest.raises(BenchError, match="no samples files"):
        read_samples([])


def test_locust_bucket_and_percentile_are_locusts_own():
    rng = np.random.default_rng(0)
    edges = [0.4, 0.5, 1.5, 2.5, 3.5, 12.3456789, 99.4, 99.5, 99.6, 145.0, 147.0, 155.0, 994.9, 995.0, 999.5,
             3432.0, 9950.0, 9999.9, 10500.0, 58760.0]
    values = edges + rng.lognormal(np.log(40.0), 1.2, size=3000).tolist()
    # Locust's own code, in its own process: importing locust monkey-patches the interpreter with gevent.
    script = ("import json, sys\nfrom locust.stats import RequestStats, bucket_response_time\n"
              "values = json.load(sys.stdin)\nstats = RequestStats()\n"
              "for v in values: stats.log_request('POST', 'x', v, 0)\n"
              "print(json.dumps({'buckets': [bucket_response_time(v) for v in values],\n"
              "  'pct': [stats.total.get_response_time_percentile(f) for f in (0.5, 0.95, 0.99, 0.999, 1.0)],\n"
              "  'pct_edges': [RequestStats().total.get_response_time_percentile(0.5)]}))\n")
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(values), capture_output=True, text=True,
                          timeout=120, check=True)
    theirs = json.loads(done.stdout)
    assert [locust_bucket(v) for v in values] == theirs["buckets"]
    assert [locust_percentile(values, f) for f in (0.5, 0.95, 0.99, 0.999, 1.0)] == theirs["pct"]
    assert locust_percentile([], 0.5) == theirs["pct_edges"][0] == 0
    assert [locust_bucket(v) for v in (147, 3432, 58760, 2.5, 3.5, 145.0)] == [150, 3400, 59000, 2, 4, 140]


def _row(latency, failures=0) -> dict:
    """Locust's CSV Aggregated row for these send latencies, by Locust's rule."""
    return {"Request Count": str(len(latency)), "Failure Count": str(failures), "Min Response Time": str(min(latency)),
            "Max Response Time": str(max(latency)), "Average Response Time": str(np.mean(latency)),
            **{c: str(locust_percentile(latency, f)) for c, f in (("50%", 0.5), ("95%", 0.95), ("99%", 0.99))}}


def test_crosscheck_agrees_only_with_the_same_requests_and_numbers():
    latency = np.random.default_rng(1).lognormal(np.log(20.0), 0.5, size=500)
    samples = _samples(_spread([500]), latency_ms=latency)
    stats = level_stats(samples, n_boot=100)
    row = _row(latency)
    check = crosscheck(stats, row)
    assert check["agree"] and check["95%"]["step_ms"] == 1 and check["95%"]["locust_ms"] == float(row["95%"])
    assert abs(check["50%"]["diff_ms"]) <= 1.0 and check["requests"]["csv_lag"] == 0
    assert not crosscheck(stats, {**row, "Request Count": "501"})["agree"]
    bad = crosscheck(stats, {**row, "99%": str(int(row["99%"]) + 1)})
    assert not bad["agree"] and not bad["99%"]["agree"] and bad["50%"]["agree"]


def test_crosscheck_replays_locusts_stale_csv_from_the_first_requests():
    # Locust's _stats.csv was last written when 400 of the 500 requests had completed.
    latency = np.r_[np.full(400, 10.0), np.full(100, 90.0)]
    samples = _samples(_spread([500]), latency_ms=latency, ok=np.r_[np.ones(399, bool), False, np.ones(100, bool)])
    stats, row = level_stats(samples, n_boot=100), _row(latency[:400], failures=1)
    check = crosscheck(stats, row, samples)
    assert check["agree"] and check["requests"]["csv_lag"] == 100 and check["compared"] == "first requests"
    assert check["max_ms"] == {"ours": 10.0, "locust": 10.0, "agree": True}
    assert check["99%"]["replayed_ms"] == 10 and stats["locust_rule_ms"]["99%"] == 90
    assert not crosscheck(stats, row)["agree"]  # all 500 requests are not what Locust's row saw
    assert not crosscheck(stats, {**row, "95%": "11"}, samples)["agree"]
    shifted = crosscheck(stats, {**row, "Average Response Time": "10.0000001"}, samples)  # not the same requests
    assert not shifted["agree"] and not shifted["mean_ms"]["agree"] and shifted["99%"]["agree"]


@pytest.fixture(scope="module")
def service(tiny_onnx):
    """The real service on the tiny twin, as tests/test_loadtests.py starts it."""
    proc = ServiceProcess("twin:tiny", ServiceVariant.of("samples", cache_size=0))
    yield proc.wait_ready(300)
    proc.stop()


def _run(service_url, tmp_path, tag, rate=None, **cfg_kw) -> tuple[dict, dict, list]:
    cfg = SweepConfig(model="twin:tiny", **cfg_kw)
    users = cfg.users[0] if rate is None else 1
    result = run_locust(service_url, users, cfg, tmp_path, tag, rate)
    paths = sample_paths(tmp_path / f"{tag}_client.json")
    return result, level_stats(read_samples(paths), window_s=1.0, duration_s=cfg.duration_s), paths


@pytest.mark.e2e
def test_one_process_samples_reproduce_locusts_csv(service, tmp_path):
    # 1 user/s: the second user starts after a second of requests that the reset after ramp-up must drop.
    result, stats, paths = _run(service, tmp_path, "one", users=(2,), duration_s=3, ramp_s=2)
    assert len(paths) == 1 and stats["n"] > 10 and stats["failures"] == 0
    samples = read_samples(paths)
    # the window begins the ramp after the start, by the clock (Locust's spawning_complete can come at once)
    assert 1.9 < samples.timed_from_s - samples.process_started_s[0] < 2.5
    assert samples.start_s.min() < samples.timed_from_s  # the requests in flight at the reset are counted
    check = crosscheck(stats, result["row"], samples)
    # Same process, same events from the reset after ramp-up on: Locust's row is exactly our first requests (it
    # may lack the last second's, see crosscheck), percentiles replayed and min/max/mean equal.
    assert check["agree"] and check["requests"]["csv_lag"] >= 0, check
    assert stats["windows"] == 3 and stats["qps_ci95"][0] <= stats["qps"] <= stats["qps_ci95"][1]


@pytest.mark.e2e
def test_each_worker_process_writes_its_samples(service, tmp_path):
    # 2 users/s: one user per worker at once, one more each a second later, then the master resets and tells the
    # workers to reset too.
    result, stats, paths = _run(service, tmp_path, "dist", users=(4,), duration_s=3, ramp_s=2, workers=2)
    assert len(paths) == 2  # two workers; the master sends nothing and writes no samples file
    samples = read_samples(paths)
    assert all((samples.process == i).sum() > 5 for i in range(2))
    # the master starts the window the 2 s ramp after its own start and tells the workers (a little after theirs)
    assert all(1.4 < t - s < 2.5 for s, t in zip(samples.process_started_s, samples.process_timed_from_s))
    assert np.ptp(samples.process_timed_from_s) < 0.5  # both workers reset on the master's one message
    check = crosscheck(stats, result["row"], samples)
    # The master resets its totals, then tells the workers to reset theirs: a worker report crossing that message
    # (one every 3 s, a window of milliseconds) would give Locust a few requests we dropped. Its CSV may also lack
    # the workers' last report. When the counts match, the requests are the same: every percentile must replay.
    assert -0.05 * stats["n"] <= check["requests"]["csv_lag"] <= 0.5 * stats["n"], check
    if check["requests"]["csv_lag"] == 0:
        assert check["agree"], check


@pytest.mark.e2e
def test_open_loop_samples_keep_the_intended_send_time(service, tmp_path):
    result, stats, paths = _run(service, tmp_path, "open", rate=20.0, duration_s=2, open_rates=(20,))
    samples = read_samples(paths)
    assert len(paths) == 1 and samples.open_loop and np.isfinite(samples.intended_s).all()
    assert (samples.latency_from_intended_ms >= samples.latency_ms - 1e-3).all()  # sent at or after its time
    check = crosscheck(stats, result["row"], samples)
    assert stats["latency_from"] == "intended" and check["agree"], check
    # The locustfile's own figure stops its clock after validating the answer, ours when the response is read.
    client_p50 = result["client"]["open_loop"]["p50_ms"]
    assert 0 < stats["p50_ms"] <= client_p50 + 0.5
