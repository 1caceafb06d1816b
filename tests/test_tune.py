"""The serving-config search: the grid it tries, the calls it times, how it ranks, and one short real run on the
tiny twin through the CLI (offline replicas + real services + results.json + report)."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from bench.app.tune.offline import candidates, gpu_candidates, model_calls
from bench.app.tune.search import (
    DEFAULT_LABEL,
    TuneConfig,
    command_line,
    pareto,
    recommend,
    tuned_variant,
    verify_users,
)
from bench.core.errors import ConfigError
from bench.core.results import load_run
from bench.core.search_records import TuneCandidate, TuneRecord
from bench.model.buckets import Buckets
from bench.model.tokenize import load_tokenizer, model_dir_str
from reports.render import render_html


def test_the_grid_splits_the_cores_every_way_plus_one_oversubscribed_point():
    grid = candidates(2, (8, 1))
    assert [(c.replicas, c.threads, c.max_batch) for c in grid] == [(1, 2, 1), (1, 2, 8), (2, 1, 1), (2, 1, 8),
                                                                    (2, 2, 1)]
    big = candidates(16, (1,), max_replicas=8)
    assert {(c.replicas, c.threads) for c in big[:-1]} == {(1, 16), (2, 8), (4, 4), (8, 2)}
    assert all(c.replicas * c.threads == 16 for c in big[:-1]) and big[-1].replicas * big[-1].threads > 16


def test_model_calls_are_the_batchers_length_groups(tiny_model):
    tok = load_tokenizer(model_dir_str(tiny_model))
    texts = ["好"] * 5 + ["这部电影的剧情非常精彩，演员的表演也很到位，值得一看"] * 5 + ["差"] * 6
    calls = model_calls(tok, texts, 8, max_padding=0.05)
    assert sum(c.items for c in calls) == 16  # two full batches of 8
    assert all(len(c.inputs["input_ids"]) <= 8 for c in calls) and len(calls) >= 3  # short and long split apart
    assert len(model_calls(tok, texts, 1, 0.05)) == 16
    bucketed = model_calls(tok, texts, 8, 0.05, Buckets.for_device("cpu", 8))
    assert sum(c.items for c in bucketed) == 16
    assert all(c.inputs["input_ids"].shape in Buckets.for_device("cpu", 8).shapes() for c in bucketed)


def cand(r, qps, ci, p95=10.0, rss=100.0, items=None):
    return TuneCandidate(r, 1, 8, items_per_s=items or qps, p95_ms=p95, rss_mb=rss, service_qps=qps,
                         service_qps_ci=ci)


class Level:
    status, qps = "ok", 10.0

    def __init__(self, ci):
        self.qps_ci = ci


def test_recommendation_is_the_best_service_and_names_what_it_ties_with():
    label, command, tied = recommend([cand(2, 20.0, (19.0, 21.0)), cand(1, 15.0, (14.0, 16.0))], Level((9.0, 11.0)),
                                     "ort-int8-cpu")
    assert label == "2×1t b8" and "--replicas 2" in command and tied == ()
    label, _, tied = recommend([cand(2, 20.0, (17.0, 23.0)), cand(1, 19.0, (16.0, 22.0))], Level((9.0, 11.0)), "x")
    assert label == "2×1t b8" and tied == ("1×1t b8",)
    assert recommend([], None, "x") == (None, None, ())


def test_the_default_service_is_recommended_when_no_tuned_one_beats_it():
    label, command, tied = recommend([cand(2, 9.5, (9.0, 10.5))], Level((9.0, 11.0)), "ort-int8-cpu")
    assert label == DEFAULT_LABEL and command == "python -m bench.service --backend ort-int8-cpu"
    assert tied == ("2×1t b8",)


def test_pareto_keeps_what_nothing_beats_on_every_axis():
    a, b, c = cand(1, 10.0, (), p95=5.0, rss=100), cand(2, 20.0, (), p95=9.0, rss=200), cand(3, 9.0, (), p95=9.5,
                                                                                               rss=300)
    assert set(pareto([a, b, c])) == {a.label, b.label}


def test_command_line_starts_the_service_that_way():
    line = command_line("ort-int8-cpu", TuneCandidate(2, 1, 1))
    assert line.endswith("--replicas 2 --threads 1 --max-batch 1 --no-batching")


def test_services_are_verified_at_users_that_keep_every_replica_of_each_busy():
    assert verify_users(TuneConfig(users=4), []) == 8  # the default service: one in-process call of 8 texts
    two_processes = TuneCandidate(2, 1, 8)  # each replica process: its call and the next in its pipe
    assert verify_users(TuneConfig(users=4), [two_processes, TuneCandidate(1, 2, 8)]) == 32
    assert verify_users(TuneConfig(users=4), [TuneCandidate(4, 1, 1)]) == 8
    assert verify_users(TuneConfig(users=48), [two_processes]) == 48


def test_offline_ties_with_the_best_are_verified_too_up_to_the_limit():
    from bench.app.tune.search import to_verify

    def offline(r, b, rate, half):
        return TuneCandidate(r, 2 // r, b, items_per_s=rate, items_ci=(rate - half, rate + half))

    best, close, closer, far = offline(2, 1, 51.3, 3.0), offline(1, 1, 48.8, 1.6), offline(2, 8, 49.2, 1.8), \
        offline(1, 8, 40.0, 1.0)
    found = [close, far, best, closer, replace(offline(2, 8, 99.0, 1.0), oversubscribed=True)]
    assert [c.label for c in to_verify(found, 1)] == [best.label]
    assert [c.label for c in to_verify(found, 1, ties=1)] == [best.label, closer.label]
    assert [c.label for c in to_verify(found, 1, ties=5)] == [best.label, closer.label, close.label]
    with pytest.raises(ConfigError):
        TuneConfig(ties=-1)


def test_bad_settings_fail_before_any_work():
    with pytest.raises(ConfigError):
        TuneConfig(batches=(0,))
    with pytest.raises(ConfigError):
        TuneConfig(seconds=1)
    out = subprocess.run([sys.executable, "-m", "bench", "tune", "--tune-backend", "nope-fp32-cpu"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "unknown engine" in out.stderr


@pytest.mark.e2e
def test_a_short_tune_runs_end_to_end_and_reaches_the_results_and_report(bench_home, tiny_onnx):
    out = subprocess.run([sys.executable, "-m", "bench", "tune", "--model", "twin:tiny", "--tune-seconds", "2",
                          "--tune-duration", "4", "--tune-repeats", "1", "--tune-users", "4", "--run-id", "tuned",
                          "--tune-backend", "ort-int8-cpu,ov-int8-cpu"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    run = load_run(bench_home / "results" / "tuned")
    t = run.tune
    # runtime × precision is a dimension of the search: every shape for each backend, labelled with it
    assert t.backends == ("ort-int8-cpu", "ov-int8-cpu")
    assert len(t.candidates) == 10 and all(c.status == "ok" and c.items_per_s > 0 for c in t.candidates)
    assert sorted(c.backend for c in t.candidates) == ["ort-int8-cpu"] * 5 + ["ov-int8-cpu"] * 5
    assert all(c.label.startswith(c.backend + " ") for c in t.candidates)
    assert list([c for c in t.candidates if c.oversubscribed][0].cores) == ["any", "any"]
    verified = [c for c in t.candidates if c.service_qps is not None]
    assert len(verified) == 1 and verified[0].label == max(
        (c for c in t.candidates if not c.oversubscribed), key=lambda c: c.items_per_s).label
    assert t.recommended in (verified[0].label, t.default_label) and t.default_qps > 0 and t.command
    if t.recommended == verified[0].label:  # the command starts the recommended backend
        assert f"--backend {verified[0].backend}" in t.command and t.backend == verified[0].backend
    assert t.users == verify_users(TuneConfig(users=4), verified) >= 8  # what the services ran at, recorded
    assert {lv.config.label for lv in run.loadtests} == {verified[0].service_label, t.default_label}
    assert f"start it:    {t.command}" in out.stdout
    html = render_html(run)
    assert "Serving configuration (bench tune" in html and t.command.split(" --")[0] in html
    assert json.loads((bench_home / "results" / "tuned" / "results.json").read_text())["tune"]["recommended"]


def test_on_a_gpu_the_dimension_is_instances_per_gpu():
    grid = gpu_candidates(16, (8, 32))
    assert [(c.replicas, c.threads, c.max_batch) for c in grid] == [(1, 16, 8), (1, 16, 32), (2, 8, 8), (2, 8, 32),
                                                                    (4, 4, 8), (4, 4, 32)]


def test_the_sweep_gets_the_tuned_configuration_unless_it_already_runs_it():
    from loadtests.windows import DEFAULT_VARIANTS

    def record(c):
        return TuneRecord("ort-int8-cpu", 2, (c,), recommended=c.label)

    two = TuneCandidate(2, 1, 1)
    extra = tuned_variant(record(two), DEFAULT_VARIANTS)
    assert extra.label == "tuned 2×1t b1" and (extra.config.replicas, extra.config.threads) == (2, 1)
    assert not extra.config.batching
    assert tuned_variant(record(TuneCandidate(1, 2, 1)), DEFAULT_VARIANTS) is None  # = "int8 no batching"
    assert tuned_variant(record(TuneCandidate(1, 2, 8)), DEFAULT_VARIANTS) is None  # = "int8 batching"
    assert tuned_variant(TuneRecord("ort-int8-cpu", 2, (two,), recommended=DEFAULT_LABEL), DEFAULT_VARIANTS) is None


@pytest.mark.e2e
def test_the_check_measures_in_rounds_each_service_window_between_two_offline_ones(tiny_onnx, tmp_path,
                                                                                    monkeypatch):
    """check tune judges on figures that did not choose the configuration, in rounds of fresh processes: offline,
    the services (order alternating), offline, … so a host that drifts in speed lands on both sides alike, and the
    ratios' intervals are across processes. Two offline configurations tied in the tune are both measured, and the
    better in the rounds is the denominator."""
    import loadtests.sweep
    from bench.app.checks.tune import fresh_figures, rate_of

    started, start = [], loadtests.sweep.start_services

    def start_and_note(model, variants):  # the real start, and the pids of the services it started
        running, failed = start(model, variants)
        started.append([service.proc.pid for _, service, _ in running.values()])
        return running, failed

    monkeypatch.setattr(loadtests.sweep, "start_services", start_and_note)
    best = TuneCandidate(2, 1, 8, items_per_s=1e9, items_ci=(9e8, 1.1e9))
    tied = TuneCandidate(1, 2, 8, items_per_s=9.5e8, items_ci=(9e8, 1e9))
    record = TuneRecord("ort-int8-cpu", 2, (best, tied, TuneCandidate(1, 2, 1, items_per_s=1.0)),
                        recommended=best.label)
    fresh = fresh_figures(TuneConfig(model="twin:tiny", seconds=2.0, duration_s=4.0, repeats=2), record, tmp_path)
    assert set(fresh.offline_all) == {"2×1t b8", "1×2t b8"}  # not 1×2t b1: its interval is not the best's
    for per_round in fresh.offline_all.values():  # two rounds, two figures in each (before and after)
        assert [len(rs) for rs in per_round] == [2, 2] and all(0 < r < 1e9 for rs in per_round for r in rs)
    means = fresh.rounds["offline"]
    assert means[fresh.engine] == [round(sum(rs) / 2, 3) for rs in fresh.offline_all[fresh.engine]]
    assert fresh.engine == max(means, key=lambda label: sum(means[label])) and fresh.own == "2×1t b8"
    assert fresh.engine_rate[0] == pytest.approx(rate_of(means[fresh.engine])[0], rel=1e-5)  # means rounded
    assert fresh.users == 32  # two replica processes × two calls × 8 texts
    service, default = fresh.service, fresh.default
    assert service.config.label == "tuned 2×1t b8" and service.config.replicas == 2 and service.qps > 0
    assert default.config.label == DEFAULT_LABEL and service.repeats == default.repeats == 2 and default.users == 32
    tuned_rounds, default_rounds = fresh.rounds["tuned"], fresh.rounds["default"]
    assert len(tuned_rounds) == len(default_rounds) == 2 and min(tuned_rounds + default_rounds) > 0
    assert service.qps == pytest.approx(sum(tuned_rounds) / 2)  # the pool: two fixed 2 s windows in each round
    assert len(started) == 2 and not set(started[0]) & set(started[1])  # each round its own service processes
    rate, (low, high) = rate_of([10.0, 12.0, 11.0])
    assert rate == 11.0 and low < 11.0 < high
    assert_cores_accounted(fresh, seconds=4.0 * 2)


def assert_cores_accounted(fresh, seconds: float) -> None:
    """Where the cores went: the replica processes' CPU per text, the front's and Locust's, the engine's offline."""
    from bench.app.checks.tune import cpu_budget

    service = fresh.service
    offline, served = fresh.cpu["offline"].ms_per_text(), fresh.cpu["service"].ms_per_text()
    assert fresh.cpu["service"].texts >= service.qps * seconds * 0.8  # every text of the windows counted
    assert offline["engine"] > 0 and served["engine"] > 0 and served["front"] > 0 and served["client"] > 0
    assert offline["front"] == 0.0 and offline["client"] is None  # offline: the engine alone, no load generator
    budget = cpu_budget(fresh.cpu, fresh.cores, service.qps, fresh.engine_rate[0])
    assert budget["percent_of_a_core"]["engine"] > 0 and "front" in budget["lines"][0]


def test_the_check_measures_fresh_every_offline_configuration_tied_with_the_best_and_the_tuned_one():
    from bench.app.checks.tune import offline_contenders

    def cand(r, t, b, rate, ci, status="ok"):
        return TuneCandidate(r, t, b, status=status, items_per_s=rate, items_ci=ci)

    grid = (cand(1, 2, 1, 30.0, (29.0, 31.0)), cand(1, 2, 8, 34.4, (33.6, 35.1)), cand(2, 1, 8, 34.0, (32.9, 35.2)),
            cand(2, 1, 1, 32.7, (32.0, 33.5)), cand(2, 2, 1, 36.0, (35.0, 37.0), "failed"))
    record = TuneRecord("ort-int8-cpu", 2, grid)
    labels = [c.label for c in offline_contenders(record)]
    assert labels == ["1×2t b8", "2×1t b8"]  # 2×1t b1's 33.5 is under the best's 33.6; a failed one never counts
    assert [c.label for c in offline_contenders(record, limit=1)] == ["1×2t b8"]
    assert [c.label for c in offline_contenders(record, grid[0], limit=1)] == ["1×2t b8", "1×2t b1"]  # its own too
    assert [c.label for c in offline_contenders(record, grid[2])] == labels  # already among them: not twice
    assert offline_contenders(TuneRecord("ort-int8-cpu", 2, grid[4:])) == []


def test_cpu_budget_says_when_the_model_runs_in_the_front():
    from bench.app.checks.tune import CpuUse, cpu_budget

    budget = cpu_budget({"offline": CpuUse(100, 3.0), "service": CpuUse(50, 0.0, 2.0, 0.1, 50)}, 2, 40.0, 33.0)
    assert budget["service_ms_per_text"] == {"engine": 0.0, "front": 40.0, "client": 2.0}
    assert budget["percent_of_a_core"]["front"] == 160.0 and budget["percent_of_a_core"]["offline engine"] == 99.0
    assert "not split" in budget["lines"][0]


def test_cpu_budget_predicts_the_ratio_from_where_the_cores_went():
    """2 cores: the engine had 200 % offline at 30 ms a text; in the service the front took 6 % and Locust 3.8 %,
    so the replicas can have at most 190.2 %: a ceiling of 0.951, and at the same CPU per text a ratio of 0.951."""
    from bench.app.checks.tune import CpuUse, cpu_budget

    budget = cpu_budget({"offline": CpuUse(1000, 30.0), "service": CpuUse(1000, 30.0, 1.0, 0.5, 800)}, 2, 60.0,
                        2000 / 30)
    assert budget["percent_of_a_core"] == {"engine": 180.0, "front": 6.0, "client": 3.8, "offline engine": 200.0}
    assert budget["ceiling"] == 0.951 and budget["predicted_ratio"] == 0.951
    assert "at most 0.951" in budget["lines"][2] and "measured 0.900" in budget["lines"][2]


def test_check_tune_says_not_applicable_when_the_default_service_wins(tmp_path, monkeypatch, capsys):
    """When the tune recommends the default service, tuned and default are one service and their ratio is 1.000 by
    construction: the check says "not applicable" and judges only the service against the engine."""
    from bench.app.checks.tune import CpuUse, FreshFigures, tune_verdict
    from bench.core.records import LoadLevel, ServiceSetup

    monkeypatch.setenv("STRUCTBENCH_HOME", str(tmp_path))
    level = LoadLevel(ServiceSetup(DEFAULT_LABEL), users=16, qps=9.8, qps_ci=(9.5, 10.1))
    fresh = FreshFigures(rounds={"offline": {"1×2t b8": [10.0, 10.1]}, "tuned": [9.8, 9.9], "default": [9.8, 9.9]},
                         engine="1×2t b8", engine_rate=(10.05, (9.9, 10.2)), offline_all={"1×2t b8": [[10.0], [10.1]]},
                         own=None, service=level, default=level, users=16, cores=2, default_won=True,
                         cpu={"offline": CpuUse(), "service": CpuUse()})
    record = TuneRecord(backend="ort-int8-cpu", cores=2, recommended=DEFAULT_LABEL)
    code = tune_verdict(fresh, record, {"model": "twin:tiny"})
    out = capsys.readouterr().out
    assert "tuned / default service QPS: not applicable (the tune recommends the default service itself)" in out
    assert "tuned / default service 1.000" not in out and code == 0  # 9.85 / 10.05 ≥ 0.97: the one real target
    saved = json.loads(next(tmp_path.rglob("check.json")).read_text())
    assert saved["figures"]["tuned_vs_default"] == "not applicable: the default won"


def test_a_short_tune_recommends_the_offline_best_and_starts_no_service(monkeypatch, tmp_path):
    """make bench's tune (verify off): the best offline configuration, its offline ties named, no service run —
    the run's sweep serves it beside the default configurations instead."""
    import bench.app.tune.search as search

    fast = TuneCandidate(2, 1, 8, items_per_s=30.0, items_ci=(28.0, 32.0), p95_ms=90.0, backend="ov-int8-cpu")
    close = TuneCandidate(1, 2, 8, items_per_s=29.0, items_ci=(27.0, 31.0), p95_ms=80.0, backend="ov-int8-cpu")
    slow = TuneCandidate(1, 2, 1, items_per_s=20.0, items_ci=(19.0, 21.0), p95_ms=50.0, backend="ort-int8-cpu")
    over = TuneCandidate(2, 2, 8, items_per_s=40.0, items_ci=(39.0, 41.0), oversubscribed=True, p95_ms=99.0,
                         backend="ov-int8-cpu")
    monkeypatch.setattr(search, "run_offline", lambda cfg, cores: ([slow, close, fast, over], "done"))
    monkeypatch.setattr(search, "verify", lambda *a: pytest.fail("a short tune must not start services"))
    record, levels = search.run_tune(TuneConfig(model="twin:tiny", verify=False), tmp_path, cores=2)
    assert levels == [] and record.basis == "offline" and record.default_label is None
    assert record.recommended == fast.label and record.tied_with == (close.label,)  # never the oversubscribed one
    assert record.command == command_line("ov-int8-cpu", fast) and record.backend == "ov-int8-cpu"
    assert "ranked offline" in render_html(run_with(record))


def run_with(record):
    from bench.core.results import HostRecord, ModelRecord, RunResult

    return RunResult(run_id="t", created="2026-12-04T00:00:00+0000", host=HostRecord(),
                     model=ModelRecord(spec="twin:tiny"), config={}, tune=record)
