"""Reports over runs from several hosts: labels and prices, refusing runs that measured different things (never
merely different hosts), host columns, and the capacity plan's numbers and break-even sentence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.core.errors import BenchError, ConfigError
from bench.core.results import load_run
from reports import fmt
from reports.hosts import check_mergeable, host_label, host_runs, parse_price, positive
from reports.multi import build_multi_context, write_merged_report
from reports.plan import HOURS_PER_MONTH, PlanInputs, PlanRow, crossings
from reports.plansection import break_even_sentence
from reports.render import ReportOptions, build_context
from tests.conftest import run_cli
from tests.test_report import row_of, tables_of

DATA = Path(__file__).parent / "data"
OTHER_HOST = {"cpu_model": "Intel Xeon Platinum 8375C", "logical_cores": 8, "gpu_name": "NVIDIA T4"}


def run_folder(tmp_path: Path, name: str, source: str = "report_run_loadtests.json", **changes) -> Path:
    """A copy of a saved run with its run id and any top-level blocks changed (host, config, model)."""
    data = json.loads((DATA / source).read_text())
    data["run_id"] = name
    for key, value in changes.items():
        data[key] = {**data[key], **value}
    folder = tmp_path / name
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(data))
    return folder


def test_host_label_names_cpu_cores_and_gpu(tmp_path):
    cpu = load_run(run_folder(tmp_path, "a"))
    gpu = load_run(run_folder(tmp_path, "b", host=OTHER_HOST))
    assert host_label(cpu) == "AMD EPYC 2c"
    assert host_label(gpu) == "Intel Xeon Platinum 8375C 8c + NVIDIA T4"


@pytest.mark.parametrize("text", ["AMD EPYC 2c", "AMD=abc", "AMD=-1", "AMD=0", "=0.1", "AMD=nan", "AMD=inf"])
def test_a_price_that_is_not_a_positive_number_is_refused(text):
    with pytest.raises(ConfigError, match="--price needs HOST=USD_PER_HOUR"):
        parse_price(text)


@pytest.mark.parametrize("value", ["0", "-3", "x", "nan", True, None])
def test_traffic_must_be_a_positive_number(value):
    with pytest.raises(ConfigError, match="--traffic must be a number > 0"):
        positive("--traffic", value)


def test_prices_come_from_flags_then_the_run_then_examples(tmp_path):
    a = load_run(run_folder(tmp_path, "a"))
    b = load_run(run_folder(tmp_path, "b", host=OTHER_HOST, config={"hour_usd": 0.9}))
    hosts = host_runs([a, b])
    assert [(h.hour_usd, h.price_source) for h in hosts] == [(None, "example"), (0.9, "run")]
    hosts = host_runs([a, b], (parse_price("amd epyc 2c=0.12"), parse_price("T4=0.6")))
    assert [(h.hour_usd, h.price_source) for h in hosts] == [(0.12, "price"), (0.6, "price")]
    with pytest.raises(ConfigError, match="matches no host"):
        host_runs([a, b], (parse_price("Graviton=0.05"),))


def test_the_example_cpu_price_grows_with_the_hosts_vcpus_and_a_given_price_does_not(tmp_path):
    """A CPU row keeps every core busy: a 16-vCPU host's CPU rows priced as a 2-vCPU VM looked 8× too cheap (the
    H100 machine's 16-core run beside this 2-core host's did)."""
    from reports.render import host_options, options_dict

    small = load_run(run_folder(tmp_path, "a"))
    big = load_run(run_folder(tmp_path, "b", host={"cpu_model": "Intel Xeon", "logical_cores": 16}))
    example, given = options_dict(ReportOptions()), options_dict(ReportOptions(cpu_hour_usd=0.3))
    prices = [host_options(h, o)["cpu_hour_usd"] for o in (example, given) for h in host_runs([small, big])]
    assert prices == [pytest.approx(0.10), pytest.approx(0.80), 0.3, 0.3]
    from reports import decision

    cpu_rows = [c for c in decision.candidates(big, host_options(host_runs([big])[0], example)) if not c.gpu]
    assert cpu_rows and all(c.price == pytest.approx(0.80) for c in cpu_rows)
    assert "$0.80/h" in json.dumps(build_context(big, ReportOptions())["environment"])


def test_different_hosts_alone_are_never_refused(tmp_path):
    runs = [load_run(run_folder(tmp_path, "a")), load_run(run_folder(tmp_path, "b", host=OTHER_HOST))]
    assert check_mergeable(runs, [1, 1]) == []


@pytest.mark.parametrize("changes,reason", [
    ({"model": {"source": {"source": "twin", "synthetic": True}}}, "different models"),
    ({"config": {"seed": 7}}, "different workloads"),
])
def test_runs_that_measured_different_things_are_refused_with_the_reason(tmp_path, changes, reason):
    runs = [load_run(run_folder(tmp_path, "a")), load_run(run_folder(tmp_path, "b", host=OTHER_HOST, **changes))]
    with pytest.raises(BenchError, match=f"refusing to merge .*{reason}.*add --force"):
        check_mergeable(runs, [1, 1])
    assert reason in check_mergeable(runs, [1, 1], force=True)[0]


@pytest.mark.e2e
def test_different_schema_versions_are_refused_unless_forced(tmp_path):
    a = run_folder(tmp_path, "a")
    b = run_folder(tmp_path, "b")
    data = json.loads((b / "results.json").read_text())
    from bench.core.results import run_from_dict, run_to_dict

    (b / "results.json").write_text(json.dumps(run_to_dict(run_from_dict(data))))  # saved again: version 2
    result = run_cli("report", str(a), str(b), "--out", str(tmp_path / "m"))
    from bench.core.results import SCHEMA_VERSION

    assert result.returncode == 2 and f"different schema versions (a vs b: 1 vs {SCHEMA_VERSION})" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert run_cli("report", str(a), str(b), "--force", "--out", str(tmp_path / "m")).returncode == 0


@pytest.mark.parametrize("flag,value", [("--traffic", "abc"), ("--traffic", "-5"), ("--price", "AMD=zero"),
                                        ("--peak-factor", "0"), ("--target-utilisation", "1.5")])
@pytest.mark.e2e
def test_bad_numbers_are_one_error_line_before_any_run_is_read(flag, value):
    result = run_cli("report", "no-such-run-a", "no-such-run-b", flag, value, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert flag in result.stderr and "no results" not in result.stderr


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("merged")
    paths = [run_folder(tmp, "cpu-box"), run_folder(tmp, "gpu-box", host=OTHER_HOST, config={"hour_usd": 0.53})]
    options = ReportOptions(traffic_rps=100.0, prices=(parse_price("AMD EPYC=0.10"),))
    html, md, summary = write_merged_report(paths, options, tmp / "out")
    return html.read_text(), md.read_text(), summary


@pytest.mark.e2e
def test_merged_tables_gain_a_host_column(merged):
    html, md, _ = merged
    tables = tables_of(html)
    for tid in ("latency", "resources", "qps", "summary", "plan"):
        assert tables[tid][0][0] == "Host", tid
    assert tables["decision"][0][:2] == ["Configuration", "Host"]
    hosts = {row[0] for row in tables["latency"][1:]}
    assert hosts == {"AMD EPYC 2c", "Intel Xeon Platinum 8375C 8c + NVIDIA T4"}
    assert "| Host |" in md


def test_plan_numbers_equal_those_computed_from_the_decision_figures(merged, tmp_path):
    html, _, summary = merged
    plan = tables_of(html)["plan"]
    row = row_of(plan, "AMD EPYC 2c")
    assert row[1] == "int8 batching"
    runs = [load_run(run_folder(tmp_path, "x"))]
    ctx = build_context(runs[0], ReportOptions(traffic_rps=100.0))
    qps = next(r for r in ctx["plan"]["rows"] if r["config"] == "int8 batching")["capacity"]
    instances = math.ceil(100.0 / qps)
    assert row[5].startswith(f"{instances} ")
    assert row[6].startswith(f"{fmt.usd(instances * 0.10 * HOURS_PER_MONTH)}")
    assert "capacity plan:" in summary and ("Below ~" in summary or "is the cheapest at every traffic" in summary)


def rows_for_break_even() -> list[PlanRow]:
    cpu = PlanRow("cpu @ A", "cpu", "A", "CPU", 0.10, "example price", "searched", 20.0, (19.0, 21.0))
    gpu = PlanRow("gpu @ B", "gpu", "B", "GPU", 0.53, "example price", "searched", 200.0, (190.0, 210.0))
    return [cpu, gpu]


def test_break_even_is_where_whole_cpu_instances_cost_more_than_one_gpu():
    rows, plan = rows_for_break_even(), PlanInputs(100.0)
    # CPU: ceil(T / 20) × 0.10 × 730; GPU: ceil(T / 200) × 0.53 × 730: CPU is cheaper while 5 instances suffice.
    (cross,) = crossings(rows, plan)
    assert 100 <= cross <= 101.5
    sentence = break_even_sentence(rows, plan, multi=True)
    assert sentence.startswith("Below ~10") and "CPU cpu on A" in sentence and "above ~10" in sentence
    assert "GPU gpu on B" in sentence and "across the capacity CIs" in sentence


def test_an_engine_only_run_says_so_in_the_plan(tmp_path):
    run = load_run(run_folder(tmp_path, "e", source="report_run.json"))
    ctx = build_context(run, ReportOptions(traffic_rps=10.0))
    assert {r["basis"] for r in ctx["plan"]["rows"] if r["capacity"]} == {"engine-only, not load-tested"}
    assert any("engine-only, not load-tested" in s for s in ctx["plan"]["sentences"])


@pytest.mark.e2e
def test_a_single_run_without_traffic_has_no_plan_section_and_with_it_stays_plain_data(tmp_path):
    run = load_run(run_folder(tmp_path, "s"))
    assert build_context(run)["plan"] is None
    context = build_context(run, ReportOptions(traffic_rps=50.0, prices=(("AMD", 0.2),)))
    assert json.loads(json.dumps(context)) == context


def test_merged_context_names_candidates_uniquely(tmp_path):
    runs = [load_run(run_folder(tmp_path, "a")), load_run(run_folder(tmp_path, "b", host=OTHER_HOST))]
    ctx = build_multi_context(host_runs(runs), ReportOptions())
    names = [(row[0]["text"], row[1]["text"]) for row in ctx["decision"]["table"]["rows"]]
    assert len(names) == len(set(names))


@pytest.mark.e2e
def test_a_searched_qps_at_the_slo_replaces_the_grid_in_the_decision_and_the_plan(tmp_path):
    from dataclasses import replace

    from bench.core.results import run_from_dict, run_to_dict
    from bench.core.search_records import SearchProbe, SloSearch

    run = load_run(run_folder(tmp_path, "s"))
    setup = next(lv.config for lv in run.loadtests if lv.config.label == "int8 batching")
    probe = SearchProbe(300.0, True, "meets the SLO", requests=900, achieved_rps=297.0, achieved_ci=(280.0, 310.0),
                        p95_ms=120.0)
    search = SloSearch(setup, 300.0, rate_rps=300.0, qps=297.0, qps_ci=(280.0, 330.0), first_failing_rps=330.0,
                       requests=900, probes=(probe,), stopped="converged")
    run = replace(run, slo_searches=(search,))
    assert run_from_dict(json.loads(json.dumps(run_to_dict(run)))) == run  # stored and read back
    ctx = build_context(run, ReportOptions(traffic_rps=1000.0))
    row = next(r for r in ctx["decision"]["table"]["rows"] if r[0]["text"] == "int8 batching")
    assert row[3]["text"] == "297 [280–330]" and row[5]["text"].startswith("searched: open loop, 300 req/s")
    planned = next(r for r in ctx["plan"]["rows"] if r["config"] == "int8 batching")
    assert planned["basis"] == "searched QPS at the SLO (open loop)" and planned["capacity"] == 297.0
    assert "searched" in [t["id"] for s in ctx["article"] for t in s["tables"]]
    other_slo = build_context(run, ReportOptions(slo_p95_ms=200.0))  # searched at 300 ms: not used at 200 ms
    row = next(r for r in other_slo["decision"]["table"]["rows"] if r[0]["text"] == "int8 batching")
    assert not row[5]["text"].startswith("searched")


def test_hour_usd_that_is_not_a_positive_number_is_one_error_line_before_the_export(bench_home):
    result = run_cli("run", "--model", "twin:tiny", "--hour-usd", "-0.1", timeout=60)
    assert result.returncode == 2 and result.stderr == "error: --hour-usd must be a number > 0, got '-0.1'\n"
