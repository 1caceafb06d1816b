"""Run comparison: ratios, Welch's test across worker processes (Holm-corrected) for cells, CI-based significance
for load-test levels, thresholds and exit codes, host refusal. The simulated error rates are in
test_compare_power.py."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.core.records import CellResult, CellSpec, LoadLevel, ProcessRun, ServiceSetup
from bench.core.results import load_run, run_to_dict
from reports.cli import add_compare_args, cmd_compare
from reports.compare import Threshold, compare_runs, parse_threshold, render_comparison_html, render_comparison_text

RUN_FILE = Path(__file__).parent / "data" / "report_run.json"
LOADTEST_FILE = Path(__file__).parent / "data" / "report_run_loadtests.json"


@pytest.fixture(scope="module")
def base():
    return load_run(RUN_FILE)


def as_processes(cell, offsets=(1.0, 1.05, 0.95)):
    """`cell`'s samples dealt into fresh processes whose levels differ by the offsets (±5 %, as on this host)."""
    lat = np.asarray(cell.latencies_s)
    parts = np.array_split(lat, len(offsets))
    return replace(cell, runs=tuple(ProcessRun(latencies_s=tuple(float(x) for x in part * k),
                                               window_s=float(part.sum() * k)) for part, k in zip(parts, offsets)))


@pytest.fixture(scope="module")
def multi(base):
    """The sample run with every measured cell in three processes."""
    return replace(base, cells=tuple(as_processes(c) if c.status == "ok" and c.latencies_s else c
                                     for c in base.cells))


def scaled_cell(cell, factor: float):
    """`cell` with every process's latencies (and so its window) `factor` times longer."""
    return replace(cell, runs=tuple(replace(r, latencies_s=tuple(x * factor for x in r.latencies_s),
                                            window_s=r.window_s * factor) for r in cell.runs))


def scaled(run, factor: float, run_id: str):
    """A copy of `run` whose every latency (and so every window) is `factor` times longer."""
    return replace(run, run_id=run_id, cells=tuple(scaled_cell(c, factor) for c in run.cells))


def save(run, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(run_to_dict(run)))
    return folder


def compare_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_compare_args(parser)
    return cmd_compare(parser.parse_args(list(argv)))


def test_identical_runs_show_no_significant_change(base):
    cmp = compare_runs(base, base, thresholds=["p95:+5%", "p50:+10%", "qps:-5%"])
    ok_keys = [c.spec.key for c in base.cells if c.status == "ok"]
    assert [c.key for c in cmp.cells] == ok_keys  # skipped cells are not compared
    assert all(ch.ratio == pytest.approx(1.0) and not ch.significant for c in cmp.cells for ch in c.changes)
    assert cmp.failed == () and cmp.exit_code == 0
    assert "PASSED" in render_comparison_text(cmp)


def test_slower_run_is_flagged_and_fails_the_threshold(multi, tmp_path, capsys):
    base = multi
    a, b = save(base, tmp_path / "a"), save(scaled(base, 1.3, "slower"), tmp_path / "b")
    assert compare_cli(str(a), str(b), "--fail-on", "p95:+5%", "--html", str(tmp_path / "cmp.html")) == 1
    out = capsys.readouterr().out
    assert "FAILED:" in out and "ort-int8-cpu|b1|corpus|tall: p95 +30.0 % (limit p95:+5%)" in out
    assert "<table>" in (tmp_path / "cmp.html").read_text()
    cmp = compare_runs(base, scaled(base, 1.3, "slower"))
    change = cmp.cells[0].get("p50")
    assert change.ratio == pytest.approx(1.3) and change.significant and change.ci[0] > 1.0
    qps = cmp.cells[0].get("qps")
    assert qps.ratio == pytest.approx(1 / 1.3) and qps.significant and qps.ci[1] < 1.0
    assert cmp.exit_code == 0  # no thresholds, no verdict


def test_threshold_needs_a_significant_change(multi):
    base = multi
    # +0.1 % on every sample breaks a +0.05 % limit, but processes differ by 5 %: not past it with confidence.
    cmp = compare_runs(base, scaled(base, 1.001, "noise"), thresholds=["p95:+0.05%"])
    assert cmp.failed == () and cmp.exit_code == 0
    # A large limit is not broken by a significant 30 % change either.
    assert compare_runs(base, scaled(base, 1.3, "slower"), thresholds=["p95:+50%"]).exit_code == 0


def test_faster_run_fails_only_a_negative_threshold(multi):
    base = multi
    faster = scaled(base, 0.7, "faster")
    assert compare_runs(base, faster, thresholds=["p95:+5%", "qps:-5%"]).exit_code == 0
    assert compare_runs(base, faster, thresholds=["p50:-10%"]).exit_code == 1


def test_different_hosts_are_refused_unless_forced(base):
    other = replace(base, run_id="other", host=replace(base.host, cpu_model="Intel Xeon E5-2680 v4"))
    with pytest.raises(BenchError,
                       match=r"different hosts \(cpu_model: 'AMD EPYC' vs 'Intel Xeon E5-2680 v4'\).*--force"):
        compare_runs(base, other)
    cmp = compare_runs(base, other, force=True)
    assert cmp.host_differences and cmp.exit_code == 0
    assert "FORCED across different hosts" in render_comparison_text(cmp)
    assert "Forced across different hosts" in render_comparison_html(cmp)


def test_refusal_through_the_command(base, tmp_path):
    other = replace(base, host=replace(base.host, logical_cores=64))
    a, b = save(base, tmp_path / "a"), save(other, tmp_path / "b")
    with pytest.raises(BenchError, match="logical_cores: 2 vs 64"):
        compare_cli(str(a), str(b))
    assert compare_cli(str(a), str(b), "--force") == 0


@pytest.mark.parametrize("text, expected", [("p95:+5%", Threshold("p95", 0.05, "p95:+5%")),
                                            ("qps:-5%", Threshold("qps", -0.05, "qps:-5%")),
                                            ("P50: +10 %", Threshold("p50", 0.10, "P50: +10 %"))])
def test_thresholds_parse(text, expected):
    got = parse_threshold(text)
    assert (got.metric, got.limit, got.text) == (expected.metric, pytest.approx(expected.limit), expected.text)


@pytest.mark.parametrize("bad", ["p95:5%", "p95+5%", "p97:+5%", "p95:+5", "latency:+5%", "p95:+five%", ""])
def test_bad_threshold_syntax_is_a_clear_error(bad, capsys):
    with pytest.raises(ValueError, match=r"bad threshold .*expected METRIC:\+N% or METRIC:-N%"):
        parse_threshold(bad)
    with pytest.raises(SystemExit) as exit_info:
        compare_cli("a", "b", "--fail-on", bad)
    assert exit_info.value.code == 2
    assert "bad threshold" in capsys.readouterr().err


def test_single_process_cells_are_never_significant_and_say_why(base):
    cmp = compare_runs(base, scaled(base, 1.3, "slower"), thresholds=["p95:+5%"])
    assert cmp.exit_code == 0 and not any(ch.significant or ch.ci for c in cmp.cells for ch in c.changes)
    text = render_comparison_text(cmp)
    assert "note: A has 1 worker process(es), B 1: with one process there is no spread between processes to " \
           "test against" in text
    assert "power: not computed" in text


def three_process_cell(p50s_ms=(1.0, 1.05, 0.95)) -> CellResult:
    """Three fresh processes whose medians differ by ±5 %, each with a ±3 % spread of its own."""
    runs = []
    for p50 in p50s_ms:
        lat = tuple(float(x) for x in np.linspace(0.97, 1.03, 201) * p50 / 1000)
        runs.append(ProcessRun(latencies_s=lat, window_s=sum(lat)))
    return CellResult(CellSpec("ort-int8-cpu"), "ok", runs=tuple(runs), items_per_batch=1)


def test_cells_are_resampled_across_processes(base):
    cell = three_process_cell()
    a = replace(base, cells=(cell,))
    # +2 % is well inside the spread between processes: not significant, though each process alone is precise.
    small = compare_runs(a, replace(a, cells=(scaled_cell(cell, 1.02),)), thresholds=["p50:+1%"])
    assert not small.cells[0].get("p50").significant and small.exit_code == 0
    assert small.cells[0].note == ""  # three processes each: no narrow-interval warning
    large = compare_runs(a, replace(a, cells=(scaled_cell(cell, 1.3),)), thresholds=["p50:+5%", "qps:-5%"])
    assert large.cells[0].get("p50").significant and large.exit_code == 1
    assert len(large.failed) == 2


def level(users: int, qps: float, qps_ci: tuple, p95: float, p95_ci: tuple, name: str = "int8 batching"):
    return LoadLevel(ServiceSetup(name), users=users, duration_s=20.0, requests=int(qps * 20), qps=qps, qps_ci=qps_ci,
                     p50_ms=p95 / 2, p50_ci_ms=tuple(x / 2 for x in p95_ci), p95_ms=p95, p95_ci_ms=p95_ci)


def test_load_test_levels_are_matched_and_judged_by_their_cis(base, tmp_path, capsys):
    a = replace(base, loadtests=(level(4, 450.0, (440.0, 460.0), 13.9, (13.0, 14.5)),
                                 level(8, 520.0, (500.0, 540.0), 24.0, (22.0, 26.0)),
                                 level(16, 530.0, (500.0, 560.0), 48.0, (44.0, 52.0))))
    b = replace(base, run_id="b", loadtests=(level(4, 380.0, (370.0, 390.0), 16.0, (15.0, 17.0)),
                                             level(8, 510.0, (495.0, 530.0), 24.5, (22.5, 26.5))))
    cmp = compare_runs(a, b, thresholds=["qps:-5%"])
    four, eight = cmp.levels
    assert four.key == "int8 batching · 4 users" and eight.key == "int8 batching · 8 users"
    qps = four.get("qps")
    assert qps.ratio == pytest.approx(380 / 450) and qps.ci == pytest.approx((370 / 460, 390 / 440))
    assert qps.significant and four.get("p95").significant and four.get("p95").ci[0] > 1.0
    assert not any(c.significant for c in eight.changes)  # overlapping CIs: no change shown
    assert cmp.levels_only_in_a == ("int8 batching · 16 users",)
    assert cmp.failed == ("int8 batching · 4 users: qps -15.6 % (limit qps:-5%)",)
    assert compare_cli(str(save(a, tmp_path / "a")), str(save(b, tmp_path / "b")), "--fail-on", "qps:-5%",
                       "--html", str(tmp_path / "cmp.html")) == 1
    out = capsys.readouterr().out
    assert "load-test levels (matched by configuration" in out and "QPS req/s" in out
    assert "only in A (not compared): int8 batching · 16 users" in out
    assert "Load-test levels" in (tmp_path / "cmp.html").read_text()


def test_schema_1_levels_have_no_ci_and_never_fail():
    run = load_run(LOADTEST_FILE)
    slower = replace(run, run_id="slower", loadtests=tuple(replace(lv, qps=lv.qps * 0.5) if lv.qps else lv
                                                           for lv in run.loadtests))
    cmp = compare_runs(run, slower, thresholds=["qps:-5%"])
    assert cmp.levels and all(not c.ci and not c.significant for lv in cmp.levels for c in lv.changes)
    assert cmp.levels[0].get("qps").ratio == pytest.approx(0.5) and cmp.exit_code == 0
    text = render_comparison_text(cmp)
    assert "ratio CI no CI" in text and "no CI on A and B (schema-1 file: one window): shown, never significant" in text


def process_level(users: int, qps: tuple, p95: tuple) -> LoadLevel:
    """A level measured in len(qps) fresh service processes (the sweep's default), with each one's figures."""
    mean = float(np.mean(qps))
    return LoadLevel(ServiceSetup("int8 batching"), users=users, duration_s=4.0, requests=int(mean * 12), qps=mean,
                     qps_ci=(min(qps), max(qps)), p50_ms=float(np.mean(p95)) / 2, p95_ms=float(np.mean(p95)),
                     p95_ci_ms=(min(p95), max(p95)), processes=len(qps), process_qps=qps,
                     process_p50_ms=tuple(x / 2 for x in p95), process_p95_ms=p95)


def test_levels_from_several_service_processes_are_tested_across_them_in_the_holm_family(base):
    same = (100.0, 104.0, 97.0)
    a = replace(base, cells=(), loadtests=(process_level(1, same, (20.0, 21.0, 19.5)),
                                           process_level(8, same, (80.0, 82.0, 79.0))))
    b = replace(base, run_id="b", cells=(), loadtests=(
        process_level(1, (101.0, 98.0, 103.0), (20.5, 19.8, 20.9)),  # the same service again
        process_level(8, (80.0, 82.0, 79.0), (101.0, 104.0, 99.0))))  # 20 % fewer req/s, P95 +26 %
    cmp = compare_runs(a, b, thresholds=["qps:-5%", "p95:+5%"])
    one, eight = cmp.levels
    assert all(c.test is not None for c in one.changes + eight.changes)  # Welch, not CI overlap
    assert not any(c.significant for c in one.changes)
    assert eight.get("qps").significant and eight.get("p95").significant
    assert eight.get("qps").ci[1] < 0.9 and eight.get("qps").ci[0] > 0.7  # the ratio's Welch interval
    assert sorted(cmp.failed) == ["int8 batching · 8 users: p95 +26.1 % (limit p95:+5%)",
                                  "int8 batching · 8 users: qps -19.9 % (limit qps:-5%)"]
    # one process on either side: judged by CI overlap, and the note says how to test across processes
    single = replace(b, loadtests=tuple(replace(lv, processes=1) for lv in b.loadtests))
    note = compare_runs(a, single).levels[1].note
    assert "B from one service process" in note and "--service-processes 3" in note
