"""A real run killed with SIGKILL mid-way, then resumed: completed cells are kept, none lost or duplicated."""

import os
import signal
import subprocess
import sys
import time

from bench.results import load_run
from tests.conftest import REPO

ARGS = ["--model", "twin:tiny", "--backends", "fake-fp32-cpu", "--batches", "1,2,3,4", "--duration", "1",
        "--min-time", "0.5", "--run-id", "killed"]


def completed_cells(run_dir) -> int:
    try:
        return len(load_run(run_dir).cells)
    except Exception:  # the file may not exist yet; it is never half-written (atomic rename)
        return 0


def test_kill_dash_nine_then_resume_keeps_every_completed_cell(tiny_onnx, bench_home):
    run_dir = bench_home / "results" / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", *ARGS], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while completed_cells(run_dir) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker, mid-cell
    proc.wait()
    before = load_run(run_dir)
    assert 2 <= len(before.cells) < 4
    result = subprocess.run([sys.executable, "-m", "bench", "run", "--model", "twin:tiny", "--backends",
                             "fake-fp32-cpu", "--batches", "1,2,3,4", "--duration", "1", "--min-time", "0.5",
                             "--resume", "killed"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-500:]
    after = load_run(run_dir)
    keys = [c.spec.key for c in after.cells]
    assert len(keys) == len(set(keys)) == 4 and all(c.status == "ok" for c in after.cells)
    for cell in before.cells:  # re-used as they were, not re-measured
        assert after.cell(cell.spec.key).latencies_s == cell.latencies_s
    assert f"{len(before.cells)} already done" in result.stderr
