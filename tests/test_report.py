"""The report: numbers in report.html and summary.md equal those computed from results.json; gaps say why;
older and newer schema files; options; the decision; the report CLI functions."""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.core.paths import resolve_run
from bench.core.results import SCHEMA_VERSION, CellResult, CellSpec, load_run
from bench.core.run_records import HostRecord, PeakGemm, TrainedTwinAccuracy, from_json
from reports import fmt
from reports.cli import add_report_args, cmd_report
from reports.decision import cost_per_million
from reports.plots import latency_vs_length
from reports.ranking import NO_CI, ONE_PROCESS
from reports.render import ReportOptions, build_context, render_context, render_html, render_markdown, write_report

DATA = Path(__file__).parent / "data"
RUN_FILE = DATA / "report_run.json"
LOADTEST_FILE = DATA / "report_run_loadtests.json"
SAMPLE_KEYS = ("torch-fp32-cpu|b1|corpus|tall", "ort-fp32-cpu|b1|corpus|tall", "ort-int8-cpu|b1|corpus|tall")


class Tables(HTMLParser):
    """Each <table> as rows of cell texts, keyed by the id of the <h3> before it."""

    def __init__(self) -> None:
        super().__init__()
        self.tables, self.heading, self.row, self.cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "h3":
            self.heading = dict(attrs).get("id")
        elif tag == "table":
            self.heading = self.heading or f"untitled-{len(self.tables)}"
            self.tables[self.heading] = []
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.row is not None:
            self.row.append(self.cell.strip())
            self.cell = None
        elif tag == "tr" and self.heading in self.tables:
            self.tables[self.heading].append(self.row)
        elif tag == "table":
            self.heading = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def tables_of(html: str) -> dict:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def row_of(table: list, first: str) -> list:
    return next(r for r in table if r and r[0] == first)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("run")
    shutil.copy(LOADTEST_FILE, folder / "results.json")
    html_path, md_path = write_report(folder)
    return folder, html_path, md_path


@pytest.fixture(scope="module")
def raw_cells() -> dict:
    """Cells straight from the JSON, without the bench.core.results loader, for independent arithmetic."""
    return {f"{c['spec']['backend']}|b{c['spec']['batch']}|corpus|tall": c
            for c in json.loads(LOADTEST_FILE.read_text())["cells"] if c["spec"]["workload"] == "corpus"}


@pytest.mark.e2e
@pytest.mark.parametrize("key", SAMPLE_KEYS)
def test_latency_numbers_equal_those_computed_from_the_file(written, raw_cells, key):
    _, html_path, md_path = written
    lat = np.asarray(raw_cells[key]["latencies_s"])
    p50, p95 = (fmt.ms(float(np.percentile(lat, q, method="linear"))) for q in (50, 95))
    backend = key.split("|")[0]
    row = row_of(tables_of(html_path.read_text())["latency"], backend)
    assert row[1] == str(lat.size)
    assert row[3].startswith(f"{p50} [") and row[4].startswith(f"{p95} [")
    md_row = next(line for line in md_path.read_text().splitlines() if line.startswith(f"| {backend} | {lat.size} |"))
    assert f"| {p50} [" in md_row and f"| {p95} [" in md_row


def test_throughput_and_energy_in_the_decision_table_equal_the_file(written, raw_cells):
    _, html_path, _ = written
    cell = raw_cells["torch-fp32-cpu|b1|corpus|tall"]
    items = len(cell["latencies_s"]) * cell["items_per_batch"]
    qps = items / cell["window_s"]
    row = row_of(tables_of(html_path.read_text())["decision"], "torch-fp32-cpu · batch 1")
    assert row[3].startswith(f"{fmt.qps(qps)} [")  # with its 95 % CI
    assert row[6] == f"{fmt.num(cell['energy']['energy_j'] / items * 1e6 / 1000)} (est.)"  # the host CPU's
    assert row[7] == "n/a (CPU)"  # no GPU board energy on a CPU row
    assert row[8].startswith(f"{fmt.usd(0.10 / (qps * 3600) * 1e6)} [")
    assert row[9] == ONE_PROCESS  # a schema-1 cell: one worker process, so not ranked


def test_load_test_numbers_appear_as_measured(written):
    _, html_path, md_path = written
    table = tables_of(html_path.read_text())["qps"]
    assert table[0] == ["Concurrent users", "int8 batching: QPS [95% CI]", "int8 batching: P95 ms [95% CI]",
                        "fp32 fused, no batching: QPS [95% CI]", "fp32 fused, no batching: P95 ms [95% CI]",
                        "Ranking at this load (≈ tie: CIs overlap)"]
    # A schema-1 level is one window without CIs: shown with "no CI", neither ranked nor tied.
    assert row_of(table, "4") == ["4", "450 (no CI)", "13.9 (no CI)", "250 (no CI)", "26.0 (no CI)", NO_CI]
    assert row_of(table, "8")[1] == "520† (no CI)"  # client saturated: a lower bound, marked
    assert f"| 4 | 450 (no CI) | 13.9 (no CI) | 250 (no CI) | 26.0 (no CI) | {NO_CI} |" in md_path.read_text()


def test_skipped_cells_render_as_skipped_with_their_reason(written):
    _, html_path, md_path = written
    html, md = html_path.read_text(), md_path.read_text()
    reason = "not measured: skipped: no NVIDIA GPU on this host (NVML found no driver/device)"
    for text in (html, md):
        assert reason in text
        assert "torch-fp32-cuda" in text and "ort-fp16-tensorrt" in text
    header = html[:html.index("<nav>")]
    # One line for the cause, cells named as people name them (no internal keys such as "|b1|corpus|tall").
    assert "skipped</span> (7): torch-fp32-cuda (batch 1), torch-fp16-cuda (batch 1)" in header
    assert "|b1|" not in header and "tall" not in header


def test_the_answer_comes_first_with_its_conditions_then_the_narrow_table(written):
    _, html_path, md_path = written
    html = html_path.read_text()
    after_title = html[html.index("</h1>"):]
    first = re.search(r"<p class=\"answer\">(.*?)</p>", after_title)
    assert first and after_title.index(first.group(0)) < after_title.index("<table")
    assert first.group(1).startswith("Cheapest service configuration meeting P95 ≤ 300 ms: int8 batching")
    assert "Conditions: P95 ≤ 300 ms; CPU $0.10/h and GPU" in after_title
    glance = tables_of(html)["glance"]
    assert glance[0] == ["Configuration", "Runs as", "QPS at P95 ≤ 300 ms", "USD / 1M", "Rank by cost"]
    assert row_of(glance, "int8 batching")[1:] == ["service · CPU", "520 (no CI)", "$0.0534 (no CI)",
                                                   "not ranked: single window"]
    assert html.index('id="glance"') < html.index("Run and host") < html.index("<nav>")
    # The article's section numbers and Chinese headings are a reference note, not the titles.
    assert "<h2>Load time and latency</h2>" in html and "table 3.1 响应延迟对比" in html
    md = md_path.read_text()
    assert md.index("**Cheapest service configuration") < md.index("## Run and host")


def test_failed_cell_renders_as_failed_with_its_reason():
    run = load_run(RUN_FILE)
    failed = CellResult(CellSpec("ort-fp32-cpu", batch=8), "failed", "crashed: worker killed by SIGKILL (memory)")
    html = render_html(run.with_cell(failed))
    assert "failed</span> (1)" in html and "crashed: worker killed by SIGKILL (memory)" in html
    assert "not measured: failed: crashed: worker killed by SIGKILL (memory)" in html  # decision table row


def test_nothing_measured_gives_reasons_not_numbers():
    run = load_run(RUN_FILE)
    run = replace(run, cells=tuple(c for c in run.cells if c.status != "ok"))
    html, md = render_html(run), render_markdown(run)
    assert "No measured configuration sustains P95 ≤ 300 ms." in html
    assert "not drawn: no measured batch-1 cells" in html
    assert "<img" not in html
    assert "No GPU on this host" in md


def test_synthetic_weights_are_announced_and_accuracy_not_shown(written):
    _, html_path, md_path = written
    html = html_path.read_text()
    assert '<div class="banner">SYNTHETIC WEIGHTS' in html
    assert "**SYNTHETIC WEIGHTS**" in md_path.read_text()
    int8 = row_of(tables_of(html)["parity"], "int8")
    assert int8[3] == "0.879" and int8[6] == "not measured: synthetic weights: labels are meaningless"
    fp16 = row_of(tables_of(html)["parity"], "fp16")
    assert fp16[2] == "not measured: needs a CUDA execution provider"


def test_decision_follows_the_slo_and_the_prices():
    run = load_run(LOADTEST_FILE)
    ctx = build_context(run, ReportOptions(slo_p95_ms=20.0, cpu_hour_usd=0.2))
    rows = {r[0]: r for r in tables_of(render_context(ctx, "report.html.j2"))["decision"]}
    # int8 batching: 520 QPS at 8 users has P95 24 ms > 20; the best point within the SLO is 450 at 4 users.
    assert rows["int8 batching"][3:6] == ["450 (no CI)", "13.9 (no CI)", "4 users"]
    assert rows["int8 batching"][8:] == [f"{fmt.usd(cost_per_million(0.2, 450.0))} (no CI)", NO_CI]
    assert rows["fp32 fused, no batching"][3:6] == ["240 (no CI)", "12.5 (no CI)", "2 users"]
    pick = ctx["decision"]["recommendation"][0]
    assert pick.startswith("Cheapest service configuration meeting P95 ≤ 20 ms: int8 batching")
    assert pick.endswith(f"(by point estimate only: {NO_CI}).")


def test_a_pick_whose_p95_interval_crosses_the_slo_is_called_borderline():
    run = load_run(LOADTEST_FILE)
    level = next(lt for lt in run.loadtests if lt.config.label == "int8 batching" and lt.users == 4)
    slo = level.p95_ms * 1.05  # its P95 meets the SLO by 5 %, the interval reaching 20 % past it
    wide = replace(level, p95_ci_ms=(level.p95_ms * 0.8, level.p95_ms * 1.25))
    others = tuple(lt for lt in run.loadtests if lt is not level)
    ctx = build_context(replace(run, loadtests=(wide, *others)), ReportOptions(slo_p95_ms=slo))
    rows = {r[0]: r for r in tables_of(render_context(ctx, "report.html.j2"))["decision"]}
    assert rows["int8 batching"][5] == f"4 users; borderline: the P95's CI reaches {fmt.num(level.p95_ms * 1.25)} " \
                                       f"ms, past {slo:g}"
    advice = ctx["decision"]["recommendation"]
    assert any(s.startswith("Borderline: int8 batching meets P95") for s in advice)
    sure = build_context(run, ReportOptions(slo_p95_ms=20.0))["decision"]["recommendation"]
    assert not any(s.startswith("Borderline") for s in sure)  # no interval past the SLO: no caveat


def test_configurations_the_tune_ran_only_at_saturation_are_not_judged_against_the_slo():
    from bench.core.search_records import TuneCandidate, TuneRecord

    run = load_run(LOADTEST_FILE)
    level = next(lt for lt in run.loadtests if lt.config.label == "int8 batching" and lt.users == 4)

    def at(name: str, users: int):
        return replace(level, config=replace(level.config, label=name), users=users)

    tuned = TuneCandidate(2, 1, 8, service_label="tuned 2×1t b8")
    record = TuneRecord("ort-int8-cpu", 2, (tuned,), default_label="default service", users=32)
    run = replace(run, tune=record, loadtests=run.loadtests + (at("default service", 32), at("tuned 2×1t b8", 32),
                                                               at("tuned 2×1t b8", 4)))
    rows = tables_of(render_context(build_context(run, ReportOptions()), "report.html.j2"))["decision"]
    assert row_of(rows, "default service")[3] == "not measured: measured only at saturation by bench tune " \
                                                 "(32 users, section 3.3), not at the SLO"
    assert row_of(rows, "tuned 2×1t b8")[3] == f"{fmt.num(level.qps)} (no CI)"  # with a grid point it is judged


def test_recommendation_falls_back_to_engine_cells_and_names_what_was_not_measured():
    sentences = build_context(load_run(RUN_FILE), ReportOptions())["decision"]["recommendation"]
    assert sentences[0].startswith("Cheapest configuration meeting P95 ≤ 300 ms: ort-int8-cpu · batch 1")
    assert sentences[0].endswith(f"(by point estimate only: {ONE_PROCESS}).")
    assert any(s.startswith("No GPU on this host: GPU configurations (") for s in sentences)
    assert any(s.startswith("No service load tests in this run") for s in sentences)


def test_context_is_plain_data():
    context = build_context(load_run(LOADTEST_FILE))
    assert json.loads(json.dumps(context)) == context  # only dicts, lists, strings, numbers, booleans, None


def test_cost_formula():
    assert cost_per_million(0.10, 100.0) == pytest.approx(0.10 / 360000 * 1e6)
    assert cost_per_million(0.53, 0) is None


@pytest.mark.parametrize("bad", [dict(slo_p95_ms=0), dict(cpu_hour_usd=-1.0), dict(gpu_hour_usd=float("nan")),
                                 dict(slo_p95_ms="300")])
def test_options_are_validated(bad):
    with pytest.raises(ValueError, match="ReportOptions"):
        ReportOptions(**bad)


def test_html_is_self_contained_and_every_plot_is_a_png(written):
    html = written[1].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "default-src 'none'" in html and "<script" not in html
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == html.count("<img")
    for b64 in images:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert width > 100 and height > 100


def test_absent_plot_data_is_explained(written):
    html = render_html(load_run(RUN_FILE))
    assert "not drawn: no closed-loop load tests in this run" in html
    assert "not drawn: needs two or more values of sequence length for one backend; this run measured 128" in html


def test_length_sweep_is_drawn_when_measured():
    run = load_run(RUN_FILE)
    base = run.cell("ort-int8-cpu|b1|L128|tall")
    runs = tuple(replace(r, latencies_s=tuple(x * 2 for x in r.latencies_s)) for r in base.runs)
    longer = replace(base, spec=replace(base.spec, seq_len=256), runs=runs)
    plot = latency_vs_length(run.with_cell(longer))
    assert "png" in plot and base64.b64decode(plot["png"])[:4] == b"\x89PNG"


def test_older_schema_file_renders(tmp_path):
    for path in sorted(DATA.glob("results_v*.json")):
        shutil.copy(path, tmp_path / "results.json")
        html_path, md_path = write_report(tmp_path)
        assert "not measured" in html_path.read_text() and md_path.is_file()


def test_unreadable_older_schema_fails_clearly(tmp_path):
    data = json.loads((DATA / "results_v1.json").read_text())
    data["schema_version"] = 0
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(BenchError, match="schema_version 0, which this toolkit cannot upgrade"):
        write_report(tmp_path)


def test_newer_schema_fails_clearly(tmp_path):
    data = json.loads(RUN_FILE.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(BenchError, match="newer than this toolkit"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_write_report_accepts_the_file_and_leaves_no_temporaries(tmp_path):
    shutil.copy(RUN_FILE, tmp_path / "results.json")
    html_path, md_path = write_report(tmp_path / "results.json")
    assert (html_path, md_path) == (tmp_path / "report.html", tmp_path / "summary.md")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "results.json", "summary.md"]


def test_report_command_resolves_latest_and_run_ids(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STRUCTBENCH_HOME", str(tmp_path))
    for name in ("older", "newer"):
        (tmp_path / "results" / name).mkdir(parents=True)
        shutil.copy(RUN_FILE, tmp_path / "results" / name / "results.json")
    assert resolve_run("latest") == tmp_path / "results" / "newer"
    assert resolve_run("older") == tmp_path / "results" / "older"
    assert resolve_run(str(tmp_path / "results" / "older" / "results.json")) == tmp_path / "results" / "older"
    parser = argparse.ArgumentParser()
    add_report_args(parser)
    assert cmd_report(parser.parse_args(["latest", "--slo-p95-ms", "50", "--cpu-hour-usd", "0.2"])) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("report:") and "decision:" in lines  # the answer, then where the report is
    answer = lines[lines.index("decision:") + 1:-1]
    assert 1 <= len(answer) <= 5 and "50 ms" in answer[0]  # the pick, under the SLO asked for
    assert "P95 ≤ 50 ms" in (tmp_path / "results" / "newer" / "report.html").read_text()
    with pytest.raises(BenchError, match="no results at 'missing'"):
        resolve_run("missing")
    shutil.rmtree(tmp_path / "results")
    with pytest.raises(BenchError, match="no runs under"):
        resolve_run("latest")


def test_failed_service_configuration_is_listed_not_priced(written):
    _, html_path, md_path = written
    html = html_path.read_text()
    assert "service torch fp32 batching — service did not become ready within 600 s" in html
    row = row_of(tables_of(html)["decision"], "torch fp32 batching")
    assert row[3] == "not measured: failed: service did not become ready within 600 s"
    # Its backend keeps its engine row: the failed service measured nothing to replace it with.
    assert row_of(tables_of(html)["decision"], "torch-fp32-cpu · batch 1")[3].startswith("202 [")


@pytest.mark.e2e
def test_bench_cli_wiring(tmp_path):
    """Once bench/app/cli.py wires `report` and `compare` (the lead's step), they work end to end."""
    from bench.app.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    if not {"report", "compare"} <= set(commands):
        pytest.skip("bench/app/cli.py does not wire `report` / `compare` yet")
    shutil.copy(RUN_FILE, tmp_path / "results.json")
    def run_cli(*args):
        return subprocess.run([sys.executable, "-m", "bench", *args], cwd=Path(__file__).parent.parent,
                              capture_output=True, text=True, timeout=120)

    done = run_cli("report", str(tmp_path), "--slo-p95-ms", "100")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.html").is_file() and (tmp_path / "summary.md").is_file()
    done = run_cli("compare", str(tmp_path), str(tmp_path), "--fail-on", "p95:+5%")
    assert done.returncode == 0 and "PASSED" in done.stdout, done.stderr


def test_peak_gemm_row_names_the_engine_and_shape_it_came_from():
    from reports.sections import peak_source

    peak = PeakGemm(peak_flops=1.93e11, by_engine={"numpy": 1.90e11, "onnxruntime": 1.93e11},
                    onnxruntime_by_shape={"256x768x3072": 1.93e11, "2048x2048x2048": 1.79e11}, size=2048)
    assert peak_source(peak) == "best: onnxruntime at 256x768x3072; numpy 190.0 GFLOP/s"
    assert peak_source(PeakGemm(by_engine={"numpy": 1.5e11}, size=1024)) == "best: numpy at 1024²"
    assert peak_source(PeakGemm()) == "source not recorded"


def test_roofline_judges_int8_cells_against_the_int8_peak_when_measured():
    from bench.measure.roofline import peak_for
    from reports.plots import roofline

    run = load_run(RUN_FILE)
    record = PeakGemm(peak_flops=2.0e11, int8_peak_ops=4.0e11)
    assert peak_for("int8", record) == (4.0e11, "int8") and peak_for("fp32", record) == (2.0e11, "float32")
    assert peak_for("int8", PeakGemm(peak_flops=2.0e11)) == (2.0e11, "float32")  # older runs: no INT8 peak
    assert peak_for("fp32", None, fallback=1.5e11) == (1.5e11, "float32")
    drawn = roofline(replace(run, host=replace(run.host, peak_gemm=record)))
    assert "png" in drawn and "precision" in drawn["title"]
    nothing = roofline(replace(run, host=HostRecord(), peak_gemm_flops=None))
    assert nothing["note"] == "not drawn: no peak GEMM measurement"


@pytest.mark.e2e
def test_a_variant_below_the_accuracy_floor_is_left_out_of_the_decision_with_the_reason():
    run = load_run(RUN_FILE)
    floor = {"max_drop": 0.01, "passed": False,
             "reason": "accuracy 0.812 is 3.1 points below FP32's 0.843 (floor: 1.0)"}
    parity = {"n": 1000, "label_agreement": 0.9, "agreement_ci": [0.88, 0.92], "max_abs_diff": 0.9,
              "mean_abs_diff": 0.2, "accuracy": 0.812, "accuracy_ci": [0.79, 0.83], "reference_accuracy": 0.843,
              "accuracy_delta": -0.031, "accuracy_delta_ci": [-0.045, -0.018], "floor": floor, "passed": False,
              "failures": [floor["reason"]]}
    twin = {"texts": 1000, "max_accuracy_drop": 0.01, "source": {"source": "twin:trained"},
            "variants": {"int8": {"parity": parity}}}
    run = replace(run, model=replace(run.model, synthetic=True, trained_twin=from_json(TrainedTwinAccuracy, twin)))
    ctx = build_context(run, ReportOptions())
    html = render_html(run)
    rows = [r for r in tables_of(html)["decision"] if r and r[0].startswith("ort-int8-cpu")]
    assert rows and all("left out: below the accuracy floor" in " ".join(r) for r in rows)
    assert "3.1 points below FP32" in html and ctx["accuracy"]["title"].startswith("Accuracy on real labels")
    acc = row_of(tables_of(html)["accuracy"], "int8")
    assert acc[6].startswith("0.812 [0.790–0.830]") and acc[7].startswith("-3.10 [-4.50–-1.80]")


def test_gpus_are_priced_by_model_and_an_unknown_model_says_so():
    """An H100's throughput is never priced at a T4's hour: each GPU model has its own example price, with its
    source; a model without one gets the T4's and the report says so; --gpu-hour-usd overrides them all."""
    from reports.hosts import host_runs
    from reports.render import host_options, options_dict

    run = load_run(RUN_FILE)
    def opts(gpu_name, **given):
        r = replace(run, host=replace(run.host, gpu_name=gpu_name))
        return host_options(host_runs([r])[0], options_dict(ReportOptions(**given)))

    h100, t4, other = opts("NVIDIA H100 80GB HBM3"), opts("Tesla T4"), opts("NVIDIA H200")
    assert h100["gpu_hour_usd"] == 12.29 and "p5.48xlarge" in h100["example_gpu"]
    assert t4["gpu_hour_usd"] == 0.53 and other["gpu_hour_usd"] == 0.53
    assert other["example_gpu"].startswith("no example price for NVIDIA H200")
    assert opts("NVIDIA H100 80GB HBM3", gpu_hour_usd=2.5)["gpu_hour_usd"] == 2.5
    env = {e["label"]: e["value"] for e in build_context(replace(run, host=replace(run.host, gpu_name="NVIDIA H100")),
                                                            ReportOptions())["environment"]}
    assert env["GPU example price"].startswith("H100 example")
