"""Child processes started in their own process group: stopping the whole group, the group's RSS, and the lifeline
that ties a child to its parent (so a SIGKILLed parent leaves nothing running; `tethered` for programs not ours)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable
from typing import Any


def stop_group(proc: subprocess.Popen[Any], grace_s: float = 0.0) -> None:
    """Stop `proc` and everything in its process group (it was started with `start_new_session=True`): SIGTERM
    and up to `grace_s` seconds to finish (none: straight to SIGKILL), then SIGKILL for whatever is left of the
    group — children the leader spawned (replicas, a server's workers) go with it even when the leader exited."""
    if grace_s > 0 and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is gone already
        pass
    proc.wait()


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants now ([] once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []


def rss_mb_of(pids: Iterable[int]) -> float | None:
    """Resident memory of these processes together, MiB (a process gone meanwhile counts 0; None for none)."""
    import psutil

    total, seen = 0, False
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
            seen = True
        except psutil.Error:
            continue
    return total / 2**20 if seen else None


# A lifeline: a pipe whose write end only this process holds. A child given its read end (`lifeline()`, then
# `watch_lifeline()` in the child) sees end-of-file when this process dies by any means, SIGKILL and the OOM killer
# included, where no `finally` runs, and takes its own process group down with it.
LIFELINE = "STRUCTBENCH_LIFELINE"
_LIFELINE_FDS: list[int] = []


def lifeline() -> tuple[dict[str, str], tuple[int, ...]]:
    """The environment entry and `pass_fds` for a child that must not outlive this process."""
    if not _LIFELINE_FDS:
        _LIFELINE_FDS.extend(os.pipe())  # both ends non-inheritable: only children given `pass_fds` get the read end
    read_end = _LIFELINE_FDS[0]
    return {LIFELINE: str(read_end)}, (read_end,)


def watch_lifeline() -> None:
    """In a child started with `lifeline()`: a daemon thread that, once the parent is gone, SIGKILLs this process's
    group (it leads its own session: the replicas and fronts it started go too). A no-op without a lifeline."""
    import threading

    fd = os.environ.pop(LIFELINE, None)  # popped: this process's own children must not read a stale number
    if fd is None:
        return

    def watch(fd: int) -> None:
        try:
            while os.read(fd, 1):  # the parent never writes: EOF when its end closes
                pass
        except OSError:
            pass
        if os.getpgrp() == os.getpid():
            os.killpg(0, signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, args=(int(fd),), daemon=True, name="lifeline").start()


def tethered(cmd: list[str], **popen: Any) -> subprocess.Popen[Any]:
    """Start a program that is not ours (Locust) in its own process group, under `python -m bench.core.tether`, so
    that it dies with this process by any means; stop it with `stop_group`."""
    import sys

    env, fds = lifeline()
    return subprocess.Popen([sys.executable, "-m", "bench.core.tether", *cmd], start_new_session=True,
                            env={**(popen.pop("env", None) or os.environ), **env}, pass_fds=fds, **popen)
