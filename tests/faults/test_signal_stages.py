"""SIGTERM and SIGINT of `bench all` in its stages (export, cells, tune, load test): the command unwinds, stops
every process it started, keeps the records it completed, says so in one line and exits 128 + the signal. Before
the SIGTERM handler (bench.core.errors.raise_on_terminate), SIGTERM killed Python at once: no `finally` ran and
the stage's workers, services and Locust ran on. The report stage starts no process and writes atomically."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from bench.core.results import load_run
from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

SMALL = ["--model", "twin:tiny", "--backends", "ort-int8-cpu", "--batches", "1", "--processes", "1",
         "--duration", "0.6", "--min-time", "0.3", "--service-processes", "1", "--no-slo-search", "--users", "1,2",
         "--lt-duration", "20", "--ramp", "0"]
TUNE = ["--tune-backend", "ort-int8-cpu", "--tune-seconds", "30", "--no-tune-verify"]
STAGES = {  # stage: (the stderr text that says it is under way, extra flags, signal)
    "export": ("[export]", ["--no-tune"], signal.SIGINT),
    "cells": ("workers:", ["--no-tune"], signal.SIGTERM),
    "tune": ("tune offline", TUNE, signal.SIGTERM),
    "loadtest": ("loadtest:", ["--no-tune"], signal.SIGINT),
}


def run_until(cmd: list[str], marker: str, env: dict, timeout_s: float = 240.0):
    """Start `cmd`, read its stderr (on a thread) until `marker` appears; return the process and the lines so far."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    end = time.monotonic() + timeout_s
    while not any(marker in line for line in lines) and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.05)
    return proc, lines


@pytest.mark.parametrize("stage", tuple(STAGES))
def test_a_signal_in_each_stage_of_bench_all_stops_everything_and_keeps_the_records(stage, tmp_path, bench_home,
                                                                                    tiny_onnx):
    marker, extra, signum = STAGES[stage]
    home = tmp_path / "home" if stage == "export" else bench_home  # a cold export for the export stage
    env = {**os.environ, "STRUCTBENCH_HOME": str(home), "CUDA_VISIBLE_DEVICES": ""}
    run_id = f"signal-{stage}"
    proc, lines = run_until([sys.executable, "-m", "bench", "all", *SMALL, *extra, "--run-id", run_id], marker, env)
    try:
        assert any(marker in line for line in lines), f"{stage} never began: {''.join(lines)[-1500:]}"
        time.sleep(1.0)  # well inside the stage
        group = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signum)
        proc.wait(90)
        time.sleep(0.2)  # the reader thread takes the last lines
        err = "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err[-1500:]
    assert "Traceback" not in err and ("terminated" in err or "interrupted" in err), err[-1500:]
    end = time.monotonic() + 10
    while [p for p in group if psutil.pid_exists(p)] and time.monotonic() < end:
        time.sleep(0.1)
    left = [p for p in group if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"left running after {signum.name} in {stage}: {left}"
    run_dir = home / "results" / run_id
    if stage != "export":  # the run folder exists from the cells on, and what it holds is whole
        run = load_run(run_dir)
        assert run.run_id == run_id
        if stage in ("tune", "loadtest"):
            assert [c.status for c in run.cells] == ["ok"]  # the cells finished before the signal are kept
    else:
        assert not list((home / "artifacts").rglob("*.partial")), "a half-built folder was left behind"
