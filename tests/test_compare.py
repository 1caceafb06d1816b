"""Run comparison: ratios, bootstrap significance, thresholds and exit codes, host refusal."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.results import load_run, run_to_dict
from reports.cli import add_compare_args, cmd_compare
from reports.compare import Threshold, compare_runs, parse_threshold, render_comparison_html, render_comparison_text

RUN_FILE = Path(__file__).parent / "data" / "report_run.json"


@pytest.fixture(scope="module")
def base():
    return load_run(RUN_FILE)


def scaled(run, factor: float, run_id: str):
    """A copy of `run` whose every latency (and so every window) is `factor` times longer."""
    cells = tuple(replace(c, latencies_s=tuple(x * factor for x in c.latencies_s), window_s=c.window_s * factor)
                  for c in run.cells)
    return replace(run, run_id=run_id, cells=cells)


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


def test_slower_run_is_flagged_and_fails_the_threshold(base, tmp_path, capsys):
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


def test_threshold_needs_a_significant_change(base):
    # +0.1 % on every sample breaks a +0.05 % limit, but the bootstrap interval straddles 1: not significant.
    cmp = compare_runs(base, scaled(base, 1.001, "noise"), thresholds=["p95:+0.05%"])
    assert cmp.failed == () and cmp.exit_code == 0
    # A large limit is not broken by a significant 30 % change either.
    assert compare_runs(base, scaled(base, 1.3, "slower"), thresholds=["p95:+50%"]).exit_code == 0


def test_faster_run_fails_only_a_negative_threshold(base):
    faster = scaled(base, 0.7, "faster")
    assert compare_runs(base, faster, thresholds=["p95:+5%", "qps:-5%"]).exit_code == 0
    assert compare_runs(base, faster, thresholds=["p50:-10%"]).exit_code == 1


def test_different_hosts_are_refused_unless_forced(base):
    other = replace(base, run_id="other", host={**base.host, "cpu_model": "Intel Xeon E5-2680 v4"})
    with pytest.raises(BenchError, match=r"different hosts \(cpu_model: 'AMD EPYC' vs 'Intel Xeon E5-2680 v4'\).*--force"):
        compare_runs(base, other)
    cmp = compare_runs(base, other, force=True)
    assert cmp.host_differences and cmp.exit_code == 0
    assert "FORCED across different hosts" in render_comparison_text(cmp)
    assert "Forced across different hosts" in render_comparison_html(cmp)


def test_refusal_through_the_command(base, tmp_path):
    other = replace(base, host={**base.host, "logical_cores": 64})
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
