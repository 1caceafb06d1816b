"""Results schema: round trip, older files, refusal of newer/unknown/corrupt files, atomic writes, CSV."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from bench.errors import BenchError
from bench.paths import atomic_write_text
from bench.results import (SCHEMA_VERSION, CellResult, CellSpec, RunResult, load_run, run_from_dict, run_to_dict,
                           save_run)

DATA = Path(__file__).parent / "data"


def sample_run() -> RunResult:
    ok = CellResult(CellSpec("ort-int8-cpu"), "ok", load={"imports_s": 0.1, "create_s": 0.2, "first_infer_s": 0.05},
                    warmup_s=(0.02,), latencies_s=(0.010, 0.011, 0.012, 0.010, 0.013) * 4, items_per_batch=1,
                    tokens_per_item=80.0, window_s=0.25, stop_reason="time-cap",
                    resources={"peak_rss_bytes": 300 * 2**20, "mean_cpu_percent": 190.0},
                    energy={"energy_j": 2.0, "source": "estimate", "estimated": True, "assumptions": "TDP"})
    skipped = CellResult(CellSpec("ort-fp32-cuda"), "skipped", "no GPU")
    failed = CellResult(CellSpec("torch-fp32-cpu", batch=8), "failed", "crashed: worker killed by SIGKILL")
    return RunResult("r1", "2026-11-25T00:00:00", {"cpu_model": "x"}, {"spec": "twin", "synthetic": True}, {},
                     1e11, (ok, skipped, failed))


def test_round_trip_keeps_raw_samples_and_derives_stats(tmp_path):
    run = sample_run()
    save_run(run, tmp_path)
    again = load_run(tmp_path)
    assert again == run
    assert again.cells[0].stats["p50"] == pytest.approx(0.011)
    assert again.cells[0].throughput == pytest.approx(20 / 0.25)
    raw = json.loads((tmp_path / "results.json").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and len(raw["cells"][0]["latencies_s"]) == 20


def test_summary_csv_reads_with_pandas(tmp_path):
    save_run(sample_run(), tmp_path)
    frame = pd.read_csv(tmp_path / "summary.csv")
    assert list(frame["status"]) == ["ok", "skipped", "failed"]
    assert frame.loc[0, "p50_ms"] == pytest.approx(11.0)


@pytest.mark.parametrize("version_file", sorted(DATA.glob("results_v*.json")), ids=lambda p: p.name)
def test_every_older_schema_version_still_loads(version_file):
    run = load_run(version_file)
    assert run.schema_version == SCHEMA_VERSION and run.cells


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
