"""A real run killed with SIGKILL mid-way, then resumed by id alone: it continues with its own grid and settings,
keeps the completed cells as they were and measures exactly the missing ones."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.core.results import load_run
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.e2e  # the slow tier: real processes (make test runs it, make test-fast does not)

GRID = ["--backends", "ort-int8-cpu,ort-fp32-cpu", "--batches", "1,2", "--processes", "1", "--duration", "0.6",
        "--min-time", "0.3"]


def completed_cells(run_dir) -> int:
    try:
        return len(load_run(run_dir).cells)
    except Exception:  # the file may not exist yet; it is never half-written (atomic rename)
        return 0


def killed_run(run_dir, after: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "--model", "twin:tiny", *GRID, "--run-id",
                             run_dir.name], cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while completed_cells(run_dir) < after and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker, mid-cell
    proc.wait()


def test_kill_dash_nine_then_resume_runs_exactly_the_missing_cells(tiny_onnx, bench_home):
    run_dir = bench_home / "results" / "killed"
    killed_run(run_dir, after=3)
    before = load_run(run_dir)
    assert 3 <= len(before.cells) < 4, "the run finished before it could be killed"
    result = run_cli("run", "--resume", "killed", timeout=300)  # no grid flags at all
    assert result.returncode == 0, result.stderr[-800:]
    after = load_run(run_dir)
    keys = sorted(c.spec.key for c in after.cells)
    assert keys == sorted(f"{b}|b{n}|corpus|tall" for b in ("ort-int8-cpu", "ort-fp32-cpu") for n in (1, 2))
    assert all(c.status == "ok" and len(c.runs) == 1 for c in after.cells), [c.reason for c in after.cells]
    for cell in before.cells:  # re-used as they were, not re-measured
        assert after.cell(cell.spec.key).runs == cell.runs
    assert "1 workers to run" in result.stderr


def test_resume_refuses_other_settings_or_another_host_unless_forced(tiny_onnx, bench_home):
    run_dir = bench_home / "results" / "killed2"
    killed_run(run_dir, after=1)
    conflict = run_cli("run", "--resume", "killed2", "--batches", "8", timeout=120)
    assert conflict.returncode == 2 and "other settings (batches)" in conflict.stderr
    data = json.loads((run_dir / "results.json").read_text())
    data["host"]["cpu_model"] = "some other CPU"
    (run_dir / "results.json").write_text(json.dumps(data))
    other_host = run_cli("run", "--resume", "killed2", timeout=120)
    assert other_host.returncode == 2 and "another host (cpu_model differ)" in other_host.stderr
    assert "Traceback" not in other_host.stderr + conflict.stderr
    latest = run_cli("run", "--resume", "latest", "--force", timeout=300)
    assert latest.returncode == 0, latest.stderr[-800:]
    assert len(load_run(run_dir).cells) == 4
