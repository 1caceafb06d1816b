"""Background sampling of one process's memory and CPU use (and its GPU, when given one).

Raw samples are kept; `summary()` derives peaks and means on read. The sampler must cost well under 2% of one
core at a 10 ms period. Warm, a tick's Python is cheap; on a VM the wake-up and the cold /proc reads cost far
more, which shapes the tick: RSS is one `pread` of /proc/<pid>/statm on an fd opened once; CPU time is
read once per CPU window; USS (a walk of every mapping, the dearest read) at most every `USS_EVERY` ticks and
within a CPU budget; the thread sleeps with `time.sleep`, whose wake-up costs less than `Event.wait`'s.
(Measured: docs/measurements.md.)"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from bench.core.errors import ConfigError

USS_EVERY = 10
# USS reads may use at most this share of one core (0.1%): one read costs far more than a tick, more still for a
# process with many mappings, so on a 10 ms period USS comes far less often than every 10th tick.
USS_CPU_BUDGET = 0.001
# CPU time advances in kernel clock ticks (10 ms), so a percent over one 10 ms period reads 0, 100 or 200;
# windows of at least 100 ms bound that quantisation error to ~10 points.
CPU_WINDOW_S = 0.1
# Above this period a stop request should not wait out a whole sleep.
_INTERRUPTIBLE_PERIOD_S = 0.1


@dataclass(frozen=True)
class ResourceSample:
    """One tick. None means "not read this tick" (USS, CPU between windows) or "not available" (GPU fields)."""

    t_s: float
    rss_bytes: int
    uss_bytes: int | None
    cpu_percent: float | None
    vram_bytes: int | None = None
    proc_vram_bytes: int | None = None
    gpu_util_percent: float | None = None
    power_w: float | None = None


class _ProcStat:
    """Linux: RSS from /proc/<pid>/statm, CPU seconds and state from /proc/<pid>/stat.

    Each is one `pread` on an fd opened once, which also pins the process: after it is reaped the read fails
    instead of silently following a reused pid.
    """

    _TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    _PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stat = self._open("stat")
        try:
            self._statm = self._open("statm")
        except psutil.NoSuchProcess:
            os.close(self._stat)
            raise

    def _open(self, name: str) -> int:
        try:
            return os.open(f"/proc/{self._pid}/{name}", os.O_RDONLY)
        except FileNotFoundError:
            raise psutil.NoSuchProcess(self._pid) from None

    def rss(self) -> int:
        rss = int(self._read(self._statm).split()[1]) * self._PAGE
        if rss == 0:
            # A running process always maps some pages; 0 means it is exiting: its memory is already torn down
            # (exit_mm) though /proc may not say zombie yet. Report the exit rather than record a fake drop.
            raise psutil.NoSuchProcess(self._pid)
        return rss

    def cpu_seconds(self) -> float:
        # The command name (field 2) may hold spaces and parentheses: split after its closing one.
        fields = self._read(self._stat).rpartition(b")")[2].split()
        if fields[0] in (b"Z", b"X"):  # exited, not yet reaped
            raise psutil.ZombieProcess(self._pid)
        return (int(fields[11]) + int(fields[12])) / self._TICKS

    def _read(self, fd: int) -> bytes:
        try:
            return os.pread(fd, 4096, 0)
        except ProcessLookupError:
            raise psutil.NoSuchProcess(self._pid) from None

    def close(self) -> None:
        os.close(self._stat)
        os.close(self._statm)


class _PsutilStat:
    """Portable fallback for `_ProcStat` (macOS, Windows), slower per tick."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)

    def rss(self) -> int:
        rss = self._proc.memory_info().rss
        if rss == 0:
            self.cpu_seconds()
        return rss

    def cpu_seconds(self) -> float:
        with self._proc.oneshot():
            if self._proc.status() == psutil.STATUS_ZOMBIE:
                raise psutil.ZombieProcess(self._proc.pid)
            times = self._proc.cpu_times()
        return times.user + times.system

    def close(self) -> None:
        pass


class ResourceSampler:
    """Samples process `pid` every `period_s` seconds on a daemon thread while used as a context manager.

    CPU percent is of one core (a process busy on 4 cores reads 400). If the process exits, sampling stops
    quietly and what was collected is kept. `gpu` is an opened `NvmlGpu` (or anything with its `sample`).
    """

    def __init__(self, pid: int, period_s: float = 0.01, gpu: Any = None) -> None:
        if period_s <= 0:
            raise ConfigError(f"period_s must be > 0, got {period_s}")
        self.pid = pid
        self.period_s = period_s
        self.gpu = gpu
        self.samples: list[ResourceSample] = []
        self.target_exited = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wall_s = 0.0
        self._thread_cpu_s = 0.0

    def start(self) -> ResourceSampler:
        if self._thread is not None:
            raise RuntimeError("ResourceSampler already started; use a new one per window")
        self._thread = threading.Thread(target=self._run, name=f"resource-sampler-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        wall0, cpu0 = time.monotonic(), time.thread_time()
        try:
            stat = _ProcStat(self.pid) if sys.platform.startswith("linux") else _PsutilStat(self.pid)
            try:
                self._loop(stat, wall0)
            finally:
                stat.close()
        except psutil.NoSuchProcess:  # includes ZombieProcess: the target exited; keep what we have
            self.target_exited = True
        finally:
            self._wall_s = time.monotonic() - wall0
            self._thread_cpu_s = time.thread_time() - cpu0

    def _loop(self, stat: _ProcStat | _PsutilStat, wall0: float) -> None:
        uss_reader = _UssReader(self.pid)
        window: tuple[float, float] | None = None  # (start time, CPU seconds then)
        tick = 0
        while not self._stop.is_set():
            now = time.monotonic()
            rss = stat.rss()
            cpu_percent = None
            if window is None:
                window = (now, stat.cpu_seconds())
            elif now - window[0] >= CPU_WINDOW_S:
                cpu_s = stat.cpu_seconds()
                cpu_percent = 100.0 * (cpu_s - window[1]) / (now - window[0])
                window = (now, cpu_s)
            uss = uss_reader.read(now) if tick % USS_EVERY == 0 else None
            gpu = self.gpu.sample(self.pid) if self.gpu is not None else {}
            self.samples.append(ResourceSample(now - wall0, rss, uss, cpu_percent, **gpu))
            tick += 1
            self._pause()

    def _pause(self) -> None:
        if self.period_s > _INTERRUPTIBLE_PERIOD_S:
            self._stop.wait(self.period_s)
        else:
            time.sleep(self.period_s)

    def summary(self) -> dict:
        """Peaks and means over the samples so far; gpu keys only when a gpu was given."""
        samples = list(self.samples)
        out = {
            "peak_rss_bytes": _max(s.rss_bytes for s in samples),
            "peak_uss_bytes": _max(s.uss_bytes for s in samples),
            "mean_cpu_percent": _mean(s.cpu_percent for s in samples),
            "max_cpu_percent": _max(s.cpu_percent for s in samples),
            "n_samples": len(samples),
            "period_s": self.period_s,
            "target_exited": self.target_exited,
        }
        if self.gpu is not None:
            out["peak_vram_bytes"] = _max(s.vram_bytes for s in samples)
            out["peak_proc_vram_bytes"] = _max(s.proc_vram_bytes for s in samples)
            out["mean_gpu_util_percent"] = _mean(s.gpu_util_percent for s in samples)
            out["mean_power_w"] = _mean(s.power_w for s in samples)
            # NVML matched no PID of ours (containers: it lists host PIDs): the VRAM figure is the whole board's,
            # other tenants included, and the record says so.
            out["vram_scope"] = "process" if out["peak_proc_vram_bytes"] is not None else "device"
        return out

    def self_overhead_percent(self) -> float:
        """CPU time the sampler thread itself used, as percent of one core over its window (after stop)."""
        return 100.0 * self._thread_cpu_s / self._wall_s if self._wall_s > 0 else 0.0


class _UssReader:
    """USS via psutil's memory_full_info, skipped while its measured cost would exceed USS_CPU_BUDGET."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self._next_at = 0.0
        self._denied = False

    def read(self, now: float) -> int | None:
        if self._denied or now < self._next_at:
            return None
        cpu0 = time.thread_time()
        try:
            uss = self._proc.memory_full_info().uss
        except psutil.AccessDenied:  # another user's process: RSS only
            self._denied = True
            return None
        self._next_at = now + (time.thread_time() - cpu0) / USS_CPU_BUDGET
        return uss


def _max(values: Iterable[Any]) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _mean(values: Iterable[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
