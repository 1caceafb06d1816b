"""Processes killed or hung under load, with real processes: what each fault does now, and how long recovery takes.
Each case says what it did before its fix (docs/service.md, "Faults")."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.faults

BIG = 32, 512  # a batch whose INT64 inputs (3 × 128 KiB) are far past a pipe's 64 KiB buffer


def gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids still running (zombies count as gone) after waiting up to `seconds`."""
    from bench.app.checks.faults import alive, wait_until

    wait_until(lambda: not alive(pids), seconds, 0.1)
    return alive(pids)


def test_a_replica_that_hangs_on_a_large_payload_is_killed_and_replaced():
    """Before: the second call's send() blocked for ever on the full pipe (the replica read nothing), so the call
    timeout never started and the replica was never killed. Now a watchdog kills it; the batch fails; recover()
    starts a fresh process."""
    from bench.backends import BackendConfig, resolve
    from bench.core.signature import IDS, MASK, TYPES
    from bench.service.replicas import ReplicaBackend, ReplicaDied

    config = BackendConfig(resolve("fake-fp32-cpu"), Path("."), options={"fault": "hang"})
    replica = ReplicaBackend(config, 0, call_timeout_s=1.5)
    replica.load()
    first_pid = replica.pid
    feeds = {name: np.ones(BIG, dtype=np.int64) for name in (IDS, MASK, TYPES)}
    outcome: list = []

    def two_calls() -> None:
        try:
            replica.send(feeds)  # the replica takes this one and hangs in it
            replica.send(feeds)  # this one fills the pipe
            outcome.append("sent")
        except ReplicaDied as exc:
            outcome.append(exc)

    t0 = time.monotonic()
    caller = threading.Thread(target=two_calls, daemon=True)
    caller.start()
    caller.join(30)
    try:
        assert not caller.is_alive(), "send() still blocked after 30 s"
        [err] = outcome
        assert isinstance(err, ReplicaDied) and "hung; killed" in str(err)
        assert time.monotonic() - t0 < 10 and not psutil.pid_exists(first_pid) or \
            psutil.Process(first_pid).status() == psutil.STATUS_ZOMBIE
        replica.config = BackendConfig(resolve("fake-fp32-cpu"), Path("."))  # the fresh process serves again
        replica.recover()
        assert replica.pid != first_pid and replica.infer({k: v[:1, :8] for k, v in feeds.items()}).shape == (1, 2)
    finally:
        replica.close()


def start_service(tiny_model, *flags: str):
    from loadtests.service_proc import ServiceProcess, ServiceVariant

    service = ServiceProcess(str(tiny_model), ServiceVariant.of("faults", backend="fake-fp32-cpu"),
                             ["--cache-size", "0", "--warm-max-length", "16", *flags])
    return service, service.wait_ready(120)


def test_sigkill_of_the_scheduler_takes_its_fronts_down_and_frees_the_port(tiny_model):
    """Before: the fronts kept the listening socket after the scheduler died, answered 503 or hung, and a restart
    on the port failed (address in use). Now each front exits when its link to the scheduler drops."""
    service, url = start_service(tiny_model, "--fronts", "2")
    try:
        fronts = [p.pid for p in psutil.Process(service.proc.pid).children(recursive=True)
                  if "bench-front" in " ".join(p.cmdline()) or "multiprocessing" in " ".join(p.cmdline())]
        assert len(fronts) >= 2
        assert httpx.post(url + "/api/sentiment", json={"text": "很好"}, timeout=10).status_code == 200
        t0 = time.monotonic()
        os.kill(service.proc.pid, signal.SIGKILL)
        left = gone_within(fronts, 10)
        assert left == [], f"fronts still running 10 s after the scheduler died: {left}"
        recovery = time.monotonic() - t0
        port = urlsplit(url).port
        with socket.socket() as s:  # the port is free again: a restart can bind it
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        assert recovery < 10
    finally:
        service.stop()


PARENT = """
import sys, time
from loadtests.service_proc import ServiceProcess, ServiceVariant
service = ServiceProcess(sys.argv[1], ServiceVariant.of("orphan", backend="fake-fp32-cpu", replicas=2, threads=1),
                         ["--cache-size", "0", "--warm-max-length", "16"])
service.wait_ready(120)
print(service.proc.pid, flush=True)
time.sleep(600)
"""


def test_sigkill_of_the_process_that_started_a_service_takes_the_service_and_its_replicas_down(tiny_model):
    """Before: SIGKILL (or the OOM killer) of a sweep left its service running, reparented to init, and the next run
    measured beside it. Now the service watches a lifeline pipe from its parent and takes its group down."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tiny_model)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        service_pid = int(parent.stdout.readline())
        group = [service_pid, *(c.pid for c in psutil.Process(service_pid).children(recursive=True))]
        assert len(group) >= 3  # the service and its two replicas
        parent.kill()
        parent.wait()
        left = gone_within(group, 5)
        assert left == [], f"still running 5 s after their parent was killed: {left}"
    finally:
        parent.kill()
        for pid in psutil.pids():
            try:
                if f"--model {tiny_model}" in " ".join(psutil.Process(pid).cmdline()):
                    os.kill(pid, signal.SIGKILL)
            except psutil.Error:
                pass


def test_sigkill_of_an_engine_worker_fails_its_cell_with_the_reason(tiny_model):
    """A worker killed mid-cell (the OOM killer's signal): the cell is recorded failed with the signal named, the
    harness goes on. (Passed before too; kept as the engine-worker case of the suite.)"""
    from bench.core.results import CellSpec
    from bench.engine.runner import WorkerLimits, WorkerRequest, run_cell

    class KillOnStart:  # a sampler factory sees the worker's pid first: SIGKILL it a second later
        def __init__(self, pid: int) -> None:
            self.timer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))

        def start(self) -> "KillOnStart":
            self.timer.start()
            return self

        def stop(self) -> None:
            self.timer.cancel()

    request = WorkerRequest(CellSpec("fake-fp32-cpu", batch=1, seq_len=16), str(tiny_model),
                            options={"sleep_s": 0.01})
    t0 = time.monotonic()
    cell = run_cell(request, WorkerLimits(timeout_s=120), sampler_factory=KillOnStart)
    assert cell.status == "failed" and "killed by SIGKILL" in cell.reason, cell.reason
    assert time.monotonic() - t0 < 60


DISK_FULL = """
import resource, signal, sys
from pathlib import Path
from bench.core.paths import atomic_write_text
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit write() fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    atomic_write_text(Path(sys.argv[1]), "x" * 100_000)
except OSError as exc:
    print("error:", exc.strerror)
    sys.exit(2)
"""


def test_a_disk_that_fills_during_a_results_write_keeps_the_previous_file(tmp_path):
    """The results file is written beside and renamed: a write cut short by a full disk leaves the previous file
    whole and no temporary file behind. (Passed before too.)"""
    target = tmp_path / "results.json"
    target.write_text('{"kept": true}')
    out = subprocess.run([sys.executable, "-c", DISK_FULL, str(target)], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and out.stdout.startswith("error:"), out.stderr[-500:]
    assert target.read_text() == '{"kept": true}' and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_results_files_get_the_umask_mode_not_0600(tmp_path):
    """Before: mkstemp's 0600 on every results file, report and manifest, whatever the umask."""
    from bench.core.paths import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def is_locust(cmdline: list[str]) -> bool:
    """Locust itself (`python -m locust …`): not its tether, nor a process forked from this one before its exec
    (whose command line is still pytest's, `-k locust…` included)."""
    return cmdline[1:3] == ["-m", "locust"]


def kill_first_locust(seen: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Locust process this test's sweep starts, once it has run a second."""
    me = psutil.Process()
    while not stop.is_set():
        for child in me.children(recursive=True):
            try:
                if is_locust(child.cmdline()):
                    time.sleep(1.0)
                    child.kill()
                    seen.append(child.pid)
                    return
            except psutil.Error:
                continue
        time.sleep(0.05)


def test_sigkill_of_locust_fails_its_level_and_the_sweep_goes_on_saving_every_window(tiny_model, tmp_path):
    """Before: the sweep's levels were saved only at its end (a sweep stopped half-way lost every window it had
    finished). Now a killed Locust fails its level with the reason, the next level runs, and the levels pooled so
    far are handed to the caller after every window."""
    from loadtests.service_proc import ServiceVariant
    from loadtests.sweep import run_sweep
    from loadtests.windows import SweepConfig

    variant = ServiceVariant.of("fake", backend="fake-fp32-cpu", cache_size=0)
    cfg = SweepConfig(model=str(tiny_model), variants=(variant,), users=(1, 2), duration_s=3.0, ramp_s=0.0,
                      processes=1)
    saves: list[list] = []
    seen: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_first_locust, args=(seen, stop), daemon=True)
    killer.start()
    try:
        swept = run_sweep(cfg, tmp_path, saves.append)
        levels = {lv.users: lv for lv in swept}
    finally:
        stop.set()
    assert seen, "no Locust process was seen"
    assert levels[1].status == "failed" and "locust was killed by SIGKILL" in levels[1].reason
    assert levels[2].status == "ok" and levels[2].failures == 0
    assert len(saves) == 2 and [lv.status for lv in saves[0]] == ["failed"]
    assert not [c for c in psutil.Process().children(recursive=True) if "locust" in " ".join(c.cmdline())]


SWEEP_PARENT = """
import sys
from loadtests.service_proc import ServiceVariant
from loadtests.sweep import run_sweep
from loadtests.windows import SweepConfig
variant = ServiceVariant.of("fake", backend="fake-fp32-cpu", cache_size=0)
run_sweep(SweepConfig(model=sys.argv[1], variants=(variant,), users=(1,), duration_s=60.0, ramp_s=0.0, processes=1),
          __import__("pathlib").Path(sys.argv[2]))
"""


def test_sigkill_of_a_sweep_leaves_neither_its_service_nor_its_locust_running(tiny_model, tmp_path):
    """Before: a SIGKILLed sweep (no `finally` runs) left its service serving for ever and Locust running to the end
    of its window. Now both hang on the sweep's lifeline (Locust under bench.core.tether)."""
    sweep = subprocess.Popen([sys.executable, "-c", SWEEP_PARENT, str(tiny_model), str(tmp_path)], cwd=REPO,
                             stderr=subprocess.DEVNULL)
    try:
        end, procs = time.monotonic() + 120, []
        while time.monotonic() < end:
            procs = psutil.Process(sweep.pid).children(recursive=True)
            if any("locust" in " ".join(p.cmdline()) for p in procs if p.is_running()):
                break
            time.sleep(0.2)
        assert any("bench.service" in " ".join(p.cmdline()) for p in procs), "the sweep never started its service"
        time.sleep(1.0)
        sweep.kill()
        sweep.wait()
        left = gone_within([p.pid for p in procs], 5)
        assert left == [], f"still running 5 s after the sweep was killed: {left}"
    finally:
        sweep.kill()
