"""Two hosts in one report, both runs built through the project's own code path (pipeline → harness → fresh
workers → service → Locust): a real CPU run of the tiny twin, and a "GPU host" whose backend is a fake CUDA
device (tests/fake_gpu, test data, marked so in its results file). `bench report A B --traffic 100` merges them;
headless Chromium opens the report, every plot decodes, and the capacity plan it shows equals the plan computed
here from the two results files."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import pytest

from reports import fmt
from tests.browser import skip_without_chromium
from tests.conftest import run_cli
from tests.test_report import tables_of
from tests.test_report_browser import assert_fits, probed

pytestmark = pytest.mark.e2e  # the slow tier: its fixtures run real measurements or training

FAKE_GPU = Path(__file__).parent / "fake_gpu"
TEST_DATA = "fake CUDA backend (tests/fake_gpu): test data, not a measurement"
GPU_INFO = {"gpu_name": "NVIDIA T4 (fake)", "gpu_note": TEST_DATA, "test_data": TEST_DATA}
SLO_MS, TRAFFIC, HOURS = 300.0, 100.0, 730.0
PRICES = {"cpu-box": 0.10, "gpu-box": 0.53}  # cpu-box's from --price, gpu-box's stored by --hour-usd


def measured_run(run_id: str, backend: str, batches: tuple, service_backend: str, label: str, hour_usd=None):
    from bench.app import pipeline
    from bench.engine.harness import RunConfig
    from loadtests.service_proc import ServiceVariant
    from loadtests.windows import SweepConfig

    cfg = RunConfig(model="twin:tiny", backends=(backend,), batches=batches, min_time_s=0.3, max_time_s=0.8,
                    processes=2, run_id=run_id)
    cfg, ctx = pipeline.prepare(cfg, hour_usd=hour_usd)
    ctx = pipeline.measure(cfg, ctx)
    variant = ServiceVariant.of(label, backend=service_backend, cache_size=0)
    sweep = SweepConfig(model="twin:tiny", variants=(variant,), users=(1, 4), duration_s=4.0, ramp_s=0.5, repeats=1,
                        processes=1)
    return pipeline.sweep(sweep, ctx).run_dir


@pytest.fixture(scope="module")
def runs(bench_home, tiny_onnx) -> tuple[Path, Path]:
    from bench import backends
    from bench.app import pipeline
    from bench.engine import harness
    from bench.measure import host

    cpu = measured_run("cpu-box", "ort-int8-cpu", (1,), "ort-int8-cpu", "int8 batching")
    mp = pytest.MonkeyPatch()
    try:  # the fake GPU host: its backend in every process it starts, its GPU in its host fingerprint
        mp.syspath_prepend(str(FAKE_GPU))
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(FAKE_GPU), os.environ.get("PYTHONPATH")) if p))
        mp.setitem(backends.REGISTRY, "fake-fp16-cuda", "fake_gpu_backend:FakeCudaBackend")
        mp.setattr(host, "gpu_info", lambda *_a, **_k: dict(GPU_INFO))
        mp.setattr(harness, "host_gpu_reason", lambda *_a, **_k: None)
        mp.setattr(pipeline, "gpu_peak", lambda *_a, **_k: None, raising=False)  # no GPU to measure a peak on
        gpu = measured_run("gpu-box", "fake-fp16-cuda", (1, 8), "fake-fp16-cuda", "gpu batching",
                           hour_usd=PRICES["gpu-box"])
    finally:
        mp.undo()
    return cpu, gpu


@pytest.fixture(scope="module")
def merged(runs, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("merged")
    done = run_cli("report", *map(str, runs), "--traffic", f"{TRAFFIC:g}", "--price", "cpu-box=0.10", "--out",
                   str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "report.html", done.stdout


def test_the_gpu_run_is_test_data_and_says_so_in_its_file(runs):
    data = json.loads((runs[1] / "results.json").read_text())
    assert data["host"]["test_data"] == TEST_DATA and data["config"]["hour_usd"] == PRICES["gpu-box"]
    assert {c["spec"]["backend"]: c["status"] for c in data["cells"]} == {"fake-fp16-cuda": "ok"}
    assert all(lv["status"] == "ok" and lv["config"]["backend"] == "fake-fp16-cuda" for lv in data["loadtests"])


def expected_plan(run_dir: Path) -> dict:
    """config -> (capacity, instances, USD per month), computed from results.json alone: the best load-test level
    with P95 within the SLO and no failed or wrong answers; instances for TRAFFIC at peak 1, utilisation 1."""
    data = json.loads((run_dir / "results.json").read_text())
    out = {}
    for lv in data["loadtests"]:
        if lv["p95_ms"] <= SLO_MS and not lv["failures"] and not lv["invalid_answers"] and lv["qps"]:
            out[lv["config"]["label"]] = max(out.get(lv["config"]["label"], 0.0), lv["qps"])
    price = PRICES[data["run_id"]]
    return {name: (qps, math.ceil(TRAFFIC / qps), math.ceil(TRAFFIC / qps) * price * HOURS)
            for name, qps in out.items()}


def check_plan(tables: dict, runs) -> None:
    rows = {row[1]: row for row in tables["plan"][1:]}
    for run_dir in runs:
        for name, (qps, instances, usd) in expected_plan(run_dir).items():
            row = rows[name]
            assert row[3].startswith(f"{fmt.num(qps)} "), (name, row)
            assert row[5].split()[0] == str(instances) and row[6].startswith(fmt.usd(usd)), (name, row)


def test_the_merged_plan_equals_the_plan_computed_from_the_results(merged, runs):
    html_path, stdout = merged
    tables = tables_of(html_path.read_text())
    check_plan(tables, runs)
    hosts = {row[0] for row in tables["plan"][1:]}
    assert len(hosts) == 2 and any(h.endswith("+ NVIDIA T4 (fake)") for h in hosts)
    assert "capacity plan:" in stdout and ("Below ~" in stdout or "cheapest at every traffic" in stdout)


@skip_without_chromium
def test_chromium_shows_the_merged_report_with_decoded_plots_and_the_same_plan(merged, runs, tmp_path):
    html_path, _ = merged
    page = html_path.read_text(encoding="utf-8")
    seen, dom = probed(html_path, tmp_path, width=1280)
    assert_fits(seen, 1280)  # a host column beside the cost column, and still no horizontal overflow
    assert len(seen["images"]) == page.count("<img") >= 3  # CDF by host, QPS by host, break-even
    assert all(complete and w > 0 and h > 0 for complete, w, h in seen["images"]), seen["images"]
    assert seen["errors"] == [] and seen["blocked"] == []
    assert "TEST DATA" in dom and 'id="plot-break-even"' in dom
    check_plan(tables_of(dom), runs)  # the numbers as the browser holds them


def test_the_gpu_runs_report_shows_vram_and_keeps_board_and_host_cpu_energy_apart(runs):
    """The fake GPU run, through the real pipeline: its row's memory is VRAM (whose it is, as this host could
    tell), its host CPU energy is in one column and the board's (NVML, or why not) in another."""
    from bench.core.results import load_run
    from reports.render import ReportOptions, build_context, render_context

    cpu, gpu = (tables_of(render_context(build_context(load_run(r), ReportOptions()), "report.html.j2")) for r in runs)
    header, row = gpu["summary"][0], next(r for r in gpu["summary"] if r[0] == "fake-fp16-cuda")
    memory = row[header.index("Resource cost: memory MiB (CPU: peak RSS; GPU: peak VRAM)")]
    assert re.fullmatch(r"[\d,]+ VRAM, (per-process|device-wide|torch allocator)", memory), memory
    assert re.fullmatch(r"[\d.]+( \(est\.\))?", row[header.index("Resource cost: host CPU J / inference")])
    board = row[header.index("Resource cost: GPU board J / inference (NVML)")]
    assert re.fullmatch(r"[\d.]+", board) or board == "not measured: NVML gave neither energy nor power", board
    cpu_row = next(r for r in cpu["summary"] if r[0] == "ort-int8-cpu")
    assert cpu_row[header.index("Resource cost: GPU board J / inference (NVML)")] == "n/a (CPU)"
    assert "VRAM" not in cpu_row[header.index("Resource cost: memory MiB (CPU: peak RSS; GPU: peak VRAM)")]
    with open(runs[1] / "summary.csv", newline="", encoding="utf-8") as fh:
        summary = next(csv.DictReader(fh))
    assert float(summary["peak_vram_mb"]) > 0 and float(summary["energy_j_per_item"]) > 0  # VRAM; host CPU J/item
