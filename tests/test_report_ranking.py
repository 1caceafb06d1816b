"""The report on typed records built in the test: ties and rankings by CI, the spread between processes,
labels of what was measured."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from bench.core.records import Energy, LoadLevel, ProcessRun, Resources, ServiceSetup, WorkerMeta
from bench.core.results import CellResult, CellSpec, load_run, run_to_dict
from bench.core.specs import BackendSpec
from reports import fmt
from reports.common import backend_parts, on_gpu, variant_of
from reports.ranking import CLOSED_LOOP, NO_CI, ONE_SERVICE
from reports.render import ReportOptions, build_context, render_context, write_report
from tests.test_report import RUN_FILE, row_of, tables_of

# --- typed records built in the test: ties, rankings, spread, labels -------------------------------------------------

def level(name: str, qps: float, qps_ci: tuple, p95: float, p95_ci: tuple = (), batching: bool = True,
          processes: int = 3) -> LoadLevel:
    """A measured closed-loop level at 4 users in `processes` fresh service processes (invented figures)."""
    return LoadLevel(ServiceSetup(name, "ort-int8-cpu", batching), users=4, duration_s=20.0, requests=int(qps * 20),
                     qps=qps, qps_ci=qps_ci, p50_ms=p95 / 2, p95_ms=p95, p95_ci_ms=p95_ci, processes=processes)


def engine_cell(backend: str, p50s_ms: tuple) -> CellResult:
    """One cell measured in one fresh process per P50 given; each process's samples spread ±3 % around it."""
    runs = []
    for p50 in p50s_ms:
        lat = tuple(float(x) for x in np.linspace(0.97, 1.03, 81) * p50 / 1000)
        runs.append(ProcessRun(latencies_s=lat, window_s=sum(lat), resources=Resources(mean_cpu_percent=120.0),
                               energy=Energy(energy_j=0.5, source="estimate", estimated=True, mean_power_w=4.0),
                               meta=WorkerMeta(worker_cpu_percent_window=180.0)))
    return CellResult(CellSpec(backend), "ok", runs=tuple(runs), items_per_batch=1)


def with_records(cells: tuple = (), levels: tuple = ()):
    return replace(load_run(RUN_FILE), cells=cells, loadtests=levels)


def decision_of(run, slo: float = 20.0) -> tuple[dict, list]:
    ctx = build_context(run, ReportOptions(slo_p95_ms=slo))
    html = render_context(ctx, "report.html.j2")
    return tables_of(html), ctx["decision"]["recommendation"]


def test_overlapping_service_cis_are_a_tie_in_the_table_and_the_sentence():
    tables, sentences = decision_of(with_records(levels=(
        level("int8 batching", 450.0, (430.0, 470.0), 13.9, (13.0, 15.0)),
        level("int8 no batching", 440.0, (420.0, 465.0), 14.5, (13.5, 15.5), batching=False))))
    rows = {r[0]: r for r in tables["decision"]}
    assert rows["int8 batching"][3:5] == ["450 [430–470]", "13.9 [13.0–15.0]"]
    assert rows["int8 batching"][9] == "1, tie with int8 no batching"
    assert rows["int8 no batching"][9] == "1, tie with int8 batching"
    assert sentences[0].startswith("Meeting P95 ≤ 20 ms, int8 batching and int8 no batching are indistinguishable "
                                   "on this host (QPS CIs overlap): int8 batching 450 [430–470] inferences/s")
    assert not any(s.startswith(("Cheapest", "Highest")) for s in sentences)  # a tie is never a ranking
    assert row_of(tables["qps"], "4")[-1] == \
        "QPS: int8 batching ≈ int8 no batching · P95: int8 batching ≈ int8 no batching"


def test_a_saved_schema_2_file_renders_its_cis_and_ties(tmp_path):
    run = with_records(cells=(engine_cell("ort-int8-cpu", (1.0, 1.05, 0.95)),), levels=(
        level("int8 batching", 450.0, (430.0, 470.0), 13.9, (13.0, 15.0)),
        level("int8 no batching", 440.0, (420.0, 465.0), 14.5, (13.5, 15.5), batching=False)))
    (tmp_path / "results.json").write_text(json.dumps(run_to_dict(run)), encoding="utf-8")
    html_path, md_path = write_report(tmp_path)
    md = md_path.read_text()
    assert "int8 batching and int8 no batching are indistinguishable on this host (QPS CIs overlap)" in md
    assert "| 4 | 450 [430–470] | 13.9 [13.0–15.0] | 440 [420–465] | 14.5 [13.5–15.5] |" in md
    assert row_of(tables_of(html_path.read_text())["spread"], "ort-int8-cpu")[1] == "3"


def test_service_cis_from_one_service_process_are_shown_but_not_ranked():
    run = with_records(levels=(
        level("int8 batching", 450.0, (440.0, 460.0), 13.9, (13.0, 14.5), processes=1),
        level("int8 no batching", 300.0, (290.0, 310.0), 17.0, (16.0, 18.0), batching=False, processes=1)))
    tables, sentences = decision_of(run)
    rows = {r[0]: r for r in tables["decision"]}
    assert rows["int8 batching"][9] == rows["int8 no batching"][9] == ONE_SERVICE
    assert "(its CI is clear of every other configuration's)" not in sentences[0]
    html = render_context(build_context(run, ReportOptions(slo_p95_ms=20.0)), "report.html.j2")
    assert "QPS across the fixed 2 s windows of one service process" in html
    assert "across 3 fresh service processes" not in html


def test_separate_service_cis_are_ranked():
    tables, sentences = decision_of(with_records(levels=(
        level("int8 batching", 450.0, (440.0, 460.0), 13.9, (13.0, 14.5)),
        level("int8 no batching", 300.0, (290.0, 310.0), 17.0, (16.0, 18.0), batching=False))))
    rows = {r[0]: r for r in tables["decision"]}
    assert (rows["int8 batching"][9], rows["int8 no batching"][9]) == ("1", "2")
    assert rows["int8 batching"][6].startswith("not measured: no service CPU time")  # not an engine cell's figure
    with_energy, _ = decision_of(with_records(levels=(replace(level("int8 batching", 450.0, (440.0, 460.0), 13.9,
                                                                    (13.0, 14.5)), energy_per_text_j=0.05),)))
    assert {r[0]: r for r in with_energy["decision"]}["int8 batching"][6] == "50.0 (est.)"  # kJ per 1M inferences
    assert sentences[0].startswith("Cheapest service configuration meeting P95 ≤ 20 ms: int8 batching (service, "
                                   "HTTP load test), 450 [440–460] inferences/s")
    assert sentences[0].endswith("(its CI is clear of every other configuration's).")
    assert row_of(tables["qps"], "4")[-1] == \
        "QPS: int8 batching > int8 no batching · P95: int8 batching > int8 no batching"
    html = render_context(build_context(with_records(levels=(level("a", 1.0, (0.9, 1.1), 1.0, (0.9, 1.1)),)),
                                        ReportOptions(slo_p95_ms=20.0)), "report.html.j2")
    assert "QPS a t interval across 3 fresh service processes per configuration" in html


def test_a_level_without_ci_is_neither_tied_nor_ranked():
    tables, sentences = decision_of(with_records(levels=(
        level("int8 batching", 450.0, (440.0, 460.0), 13.9, (13.0, 14.5)),
        level("int8 no batching", 445.0, (), 14.0, (), batching=False))))
    rows = {r[0]: r for r in tables["decision"]}
    assert rows["int8 no batching"][3] == "445 (no CI)" and rows["int8 no batching"][9] == NO_CI
    assert rows["int8 batching"][9] == "1"  # no tie claimed with a level that has no interval
    assert "not ranked with confidence against int8 no batching: no usable CI" in sentences[0]
    assert row_of(tables["qps"], "4")[-1] == f"QPS: int8 batching; int8 no batching: {NO_CI} · " \
                                             f"P95: int8 batching; int8 no batching: {NO_CI}"


def test_engine_cells_rank_by_the_interval_across_processes():
    fast, slow = engine_cell("ort-int8-cpu", (1.0, 1.05, 0.95)), engine_cell("ort-fp32-cpu", (2.0, 2.1, 1.9))
    rows = {r[0]: r for r in decision_of(with_records(cells=(fast, slow)))[0]["decision"]}
    assert (rows["ort-int8-cpu · batch 1"][9], rows["ort-fp32-cpu · batch 1"][9]) == ("1", "2")
    assert rows["ort-int8-cpu · batch 1"][3].startswith(f"{fmt.qps(fast.throughput)} [")
    close = engine_cell("ort-fp32-cpu", (1.02, 0.97, 1.06))
    tables, sentences = decision_of(with_records(cells=(fast, close)))
    assert {r[0]: r for r in tables["decision"]}["ort-int8-cpu · batch 1"][9] == "1, tie with ort-fp32-cpu · batch 1"
    assert "are indistinguishable on this host (QPS CIs overlap)" in sentences[0]


def test_spread_between_processes_and_timed_window_cpu_are_shown():
    cell = engine_cell("ort-int8-cpu", (1.0, 1.05, 0.95))
    tables = decision_of(with_records(cells=(cell,)))[0]
    assert row_of(tables["spread"], "ort-int8-cpu") == ["ort-int8-cpu", "3", "1.00, 1.05, 0.950", "+10.5 %"]
    header = tables["resources"][0]
    row = row_of(tables["resources"], "ort-int8-cpu")
    assert row[header.index("Mean CPU % (timed window)")] == "180"
    assert row[header.index("Mean CPU % (whole worker life, load included)")] == "120"
    assert row[header.index("Host CPU power W")] == f"{fmt.num(cell.energy.mean_power_w)} (est.)"  # pooled: ΣJ / Σs
    assert row[header.index("Host CPU J / 1,000 inferences")].endswith(" (est.)")
    assert row[header.index("GPU board J / 1,000 inferences (NVML)")] == "n/a (CPU)"


def test_backend_parts_uses_the_backend_spec():
    assert backend_parts("ort-int8-cpu") == BackendSpec("ort", "int8", "cpu")
    assert backend_parts("ort-int8") == BackendSpec("ort", "int8", "cpu")  # two parts: the device defaults to cpu
    assert backend_parts("ort-fp32-fused-cpu").precision == "fp32-fused"
    assert backend_parts("torch-fp16-cuda").device == "cuda" and on_gpu("ort-fp16-tensorrt")
    assert not on_gpu("ort-int8") and backend_parts("not a backend") is None
    assert variant_of("ort-int8") == "int8" and variant_of("torch-fp32-cpu") is None


def test_a_closed_loop_figure_is_not_ranked_against_an_open_loop_searched_one():
    from bench.core.search_records import SloSearch

    batching = level("int8 batching", 450.0, (440.0, 460.0), 13.9, (13.0, 14.5))
    nobatch = level("int8 no batching", 300.0, (290.0, 310.0), 17.0, (16.0, 18.0), batching=False)
    search = SloSearch(batching.config, 20.0, rate_rps=500.0, qps=495.0, qps_ci=(480.0, 510.0),
                       first_failing_rps=540.0, requests=1500, stopped="converged", verified=True)
    tables, _ = decision_of(replace(with_records(levels=(batching, nobatch)), slo_searches=(search,)))
    rows = {r[0]: r for r in tables["decision"]}
    assert rows["int8 batching"][3] == "495 [480–510]" and rows["int8 batching"][9] == "1"
    assert rows["int8 no batching"][9] == CLOSED_LOOP  # shown, its closed-loop figure not set against open loop
    # with no search on either side, both closed loop: ranked against each other as before
    tables, _ = decision_of(with_records(levels=(batching, nobatch)))
    assert ({r[0]: r[9] for r in tables["decision"]}["int8 no batching"]) == "2"
