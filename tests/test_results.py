"""Results schema: round trip, older files, refusal of newer/unknown/corrupt files, atomic writes, CSV."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from bench.core.errors import BenchError
from bench.core.paths import atomic_write_text
from bench.core.records import Energy, LoadLevel, LoadPhases, ProcessRun, Resources, ServiceSetup, WorkerMeta
from bench.core.results import (
    SCHEMA_VERSION,
    CellResult,
    CellSpec,
    HostRecord,
    ModelRecord,
    RunResult,
    load_run,
    run_from_dict,
    run_to_dict,
    save_run,
)

DATA = Path(__file__).parent / "data"


def process_run(latencies, window_s, rss_mb=300, cpu=190.0) -> ProcessRun:
    return ProcessRun(latencies_s=tuple(latencies), warmup_s=(0.02,), window_s=window_s, stop_reason="time-cap",
                      load=LoadPhases(0.1, 0.2, 0.05), resources=Resources(peak_rss_bytes=rss_mb * 2**20,
                                                                          mean_cpu_percent=cpu),
                      energy=Energy(2.0, "estimate", True, "TDP"), meta=WorkerMeta(worker_cpu_percent_window=cpu))


def sample_run() -> RunResult:
    runs = (process_run((0.010, 0.011, 0.012, 0.010, 0.013) * 4, 0.25),
            process_run((0.011, 0.012, 0.013, 0.011, 0.014) * 4, 0.27, rss_mb=310, cpu=180.0))
    ok = CellResult(CellSpec("ort-int8-cpu"), "ok", runs=runs, items_per_batch=1, tokens_per_item=80.0)
    level = LoadLevel(ServiceSetup("int8 batching"), users=4, requests=200, qps=19.5, qps_ci=(18.9, 20.1),
                      p95_ms=210.0, p95_ci_ms=(200.0, 220.0), server_timing_ms={"total": 50.0})
    skipped = CellResult(CellSpec("ort-fp32-cuda"), "skipped", "no GPU")
    failed = CellResult(CellSpec("torch-fp32-cpu", batch=8), "failed", "crashed: worker killed by SIGKILL")
    return RunResult("r1", "2026-11-25T00:00:00", HostRecord(cpu_model="x"), ModelRecord(spec="twin", synthetic=True),
                     {}, 1e11, (ok, skipped, failed), (level,))


def test_round_trip_keeps_raw_samples_and_derives_stats(tmp_path):
    run = sample_run()
    save_run(run, tmp_path)
    again = load_run(tmp_path)
    assert again == run and isinstance(again.loadtests[0].config, ServiceSetup)
    cell = again.cells[0]
    assert cell.stats["p50"] == pytest.approx(0.0115) and cell.stats["processes"] == 2
    assert cell.stats["process_p50s"] == pytest.approx([0.011, 0.012])
    assert cell.throughput == pytest.approx(40 / 0.52)  # items over both processes' windows
    assert cell.resources.peak_rss_bytes == 310 * 2**20 and cell.resources.mean_cpu_percent == pytest.approx(185.0)
    assert cell.energy.energy_j == pytest.approx(4.0) and cell.energy.estimated
    raw = json.loads((tmp_path / "results.json").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    assert [len(r["latencies_s"]) for r in raw["cells"][0]["runs"]] == [20, 20]


def test_cell_ci_spans_the_spread_between_processes():
    """Two processes whose medians differ by 10 %: the CI covers both, not just one process's sampling noise."""
    fast, slow = (0.050 + 0.0001 * i for i in range(30)), (0.055 + 0.0001 * i for i in range(30))
    cell = CellResult(CellSpec("ort-int8-cpu"), "ok", runs=(process_run(fast, 1.6), process_run(slow, 1.7)),
                      items_per_batch=1)
    lo, hi = cell.stats["p50_ci95"]
    assert lo <= cell.stats["process_p50s"][0] and hi >= cell.stats["process_p50s"][1]
    assert cell.stats["process_spread"] == pytest.approx(0.005 / 0.05145)


def test_summary_csv_reads_with_pandas(tmp_path):
    save_run(sample_run(), tmp_path)
    frame = pd.read_csv(tmp_path / "summary.csv")
    assert list(frame["status"]) == ["ok", "skipped", "failed"]
    assert frame.loc[0, "p50_ms"] == pytest.approx(11.5) and frame.loc[0, "processes"] == 2
    assert frame.loc[0, "synthetic_weights"] and frame.loc[0, "energy_source"] == "estimate"


@pytest.mark.parametrize("version_file", sorted(DATA.glob("results_v*.json")), ids=lambda p: p.name)
def test_every_older_schema_version_still_loads(version_file):
    run = load_run(version_file)
    assert run.schema_version == SCHEMA_VERSION and run.cells


@pytest.mark.parametrize("name", ["results_v1.json", "results_v1_make_bench.json", "report_run_loadtests.json"])
def test_schema_1_upgrade_keeps_every_figure(name):
    """Version 1 cells (one worker, dicts) become one ProcessRun each; load-test dicts become LoadLevels with
    their rounded Locust figures kept beside them."""
    raw = json.loads((DATA / name).read_text())
    assert raw["schema_version"] == 1
    run = load_run(DATA / name)
    for old, new in zip(raw["cells"], run.cells):
        assert new.spec == CellSpec(**old["spec"]) and new.status == old["status"]
        if old["status"] == "ok":
            assert list(new.latencies_s) == old["latencies_s"] and len(new.runs) == 1
            assert new.load.imports_s == old["load"]["imports_s"]
            assert new.resources.peak_rss_bytes == old["resources"].get("peak_rss_bytes")
            assert new.energy.source == old["energy"]["source"]
    for old, new in zip(raw["loadtests"], run.loadtests):
        assert isinstance(new, LoadLevel) and new.config.label == old["config"]["label"]
        if old.get("status") != "failed":
            assert (new.p95_ms, new.qps, new.users) == (old["p95_ms"], old["qps"], old["users"])
            assert new.p95_ci_ms == () and "schema 1" in new.source


def test_newer_schema_is_refused_with_a_clear_message(tmp_path):
    data = run_to_dict(sample_run())
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(BenchError, match="newer than this toolkit"):
        load_run(tmp_path)


@pytest.mark.parametrize("content,message", [
    ("{not json", "corrupt"), ("[1, 2]", "not a structbench results file"),
    ('{"schema_version": "one"}', "no integer schema_version"), ('{"schema_version": 0}', "cannot upgrade"),
])
def test_corrupt_or_foreign_files_are_refused(tmp_path, content, message):
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(BenchError, match=message):
        load_run(tmp_path)


def test_hand_edited_cell_is_refused(tmp_path):
    data = run_to_dict(sample_run())
    data["cells"][0]["status"] = "great"
    with pytest.raises(BenchError, match="not a valid results file"):
        run_from_dict(data)


def test_atomic_write_never_leaves_half_a_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_text(target, "old")

    def boom(*_a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new content")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_adding_one_load_point_keeps_the_configurations_other_levels():
    """`bench sweep --run R --users 1 --slo-search` re-measures one level: the configuration's others stay; a label
    run again with other settings drops its old levels (they describe another configuration)."""
    run = sample_run()  # int8 batching at 4 users
    one_user = LoadLevel(ServiceSetup("int8 batching"), users=1, requests=100, qps=10.0)
    both = run.with_levels((one_user,))
    assert sorted(lv.users for lv in both.loadtests) == [1, 4]
    again = both.with_levels((LoadLevel(ServiceSetup("int8 batching"), users=4, requests=50, qps=21.0),))
    assert sorted((lv.users, lv.qps) for lv in again.loadtests) == [(1, 10.0), (4, 21.0)]
    other = again.with_levels((LoadLevel(ServiceSetup("int8 batching", max_batch=16), users=1, qps=12.0),))
    assert [(lv.users, lv.config.max_batch) for lv in other.loadtests] == [(1, 16)]
