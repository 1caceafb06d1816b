"""SIGTERM (and SIGHUP) of a running `bench sweep`: the command unwinds, stops the service and the Locust process it
started, and exits with 128 + the signal. Before, Python died at once: the service was reparented to init and kept
running, and the next run measured beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def descendants_once_locust_runs(pid: int, timeout_s: float = 180.0) -> list[psutil.Process]:
    """Every process below `pid` once a Locust window is under way (the service is up and loaded)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        procs = psutil.Process(pid).children(recursive=True)
        if any("locust" in " ".join(p.cmdline()) for p in procs if p.is_running()):
            return procs
        time.sleep(0.2)
    raise TimeoutError("the sweep never started Locust")


def test_a_signalled_sweep_stops_its_service_and_locust_then_exits(tiny_onnx, signum=signal.SIGTERM):
    cmd = [sys.executable, "-m", "bench", "sweep", "--model", "twin:tiny", "--variants", "nobatch", "--users", "1",
           "--lt-duration", "60", "--ramp", "0.5", "--service-processes", "1", "--no-slo-search"]
    sweep = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        children = descendants_once_locust_runs(sweep.pid)
        assert any("bench.service" in " ".join(p.cmdline()) for p in children)
        sweep.send_signal(signum)
        _, err = sweep.communicate(timeout=90)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 128 + signum, err[-1000:]
    assert "terminated" in err
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[' '.join(p.cmdline())[:120] for p in alive]}"
