"""Child processes started in their own process group: stopping the whole group, and the group's RSS."""

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
