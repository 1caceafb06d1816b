"""Energy over a measurement window, from the best source the host has.

Priority: the GPU's NVML total-energy counter (GPU cells), else NVML board power sampled over the window
("nvml-power", boards without the counter), then RAPL package counters (Linux powercap, or the `amd_energy`
hwmon driver), else an estimate from CPU time and a nominal TDP. Every result says which source it used, what
its figure covers ("gpu": the board, idle included, host CPU excluded; "cpu") and, for estimates, what was
assumed. A GPU cell also gets the host CPU's energy beside the board's, labelled with its own source.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import ConfigError

TDP_ENV = "STRUCTBENCH_CPU_TDP_W"
# Nominal desktop part: 65 W for 8 logical cores, scaled linearly to the host's logical core count.
DEFAULT_TDP_W_PER_8_CORES = 65.0


def estimate_cpu_energy_j(cpu_seconds: float, n_cores_total: int, tdp_w: float) -> float:
    """tdp_w × cpu_seconds / n_cores_total.

    Assumes package power is linear in utilisation, reaching `tdp_w` with all `n_cores_total` logical cores
    busy; idle (static) power is excluded, so this is the energy attributable to the work, not the wall plug.
    """
    if cpu_seconds < 0 or n_cores_total < 1 or tdp_w <= 0:
        raise ConfigError(
            f"need cpu_seconds >= 0, n_cores_total >= 1, tdp_w > 0; got {cpu_seconds}, {n_cores_total}, {tdp_w}"
        )
    return tdp_w * cpu_seconds / n_cores_total


def default_tdp_w(n_cores: int, env: Mapping[str, str] = os.environ) -> tuple[float, str]:
    """The TDP to assume and where it came from: $STRUCTBENCH_CPU_TDP_W, else 65 W per 8 logical cores."""
    raw = env.get(TDP_ENV)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{TDP_ENV}={raw!r} is not a number of watts") from None
        if value <= 0:
            raise ConfigError(f"{TDP_ENV}={raw!r} must be > 0")
        return value, f"${TDP_ENV}"
    return DEFAULT_TDP_W_PER_8_CORES * n_cores / 8, f"{DEFAULT_TDP_W_PER_8_CORES:g} W per 8 logical cores"


@dataclass(frozen=True)
class _Counter:
    """One monotonically increasing energy counter in microjoules, wrapping at `max_uj` (None: never wraps)."""

    path: Path
    max_uj: int | None

    def read_uj(self) -> int:
        return int(self.path.read_text().strip())

    def delta_uj(self, start: int, end: int) -> int:
        # RAPL counters are 32-bit-ish registers scaled to µJ; they wrap every few minutes under load.
        # One wrap between start and stop is corrected; windows longer than a wrap period are not supported.
        if end < start and self.max_uj:
            return end + self.max_uj - start
        return end - start


def rapl_counters(root: str | Path = "/sys/class/powercap") -> list[_Counter]:
    """Top-level package zones (intel-rapl:N; AMD uses the same names): sub-zones (cores, DRAM) are skipped
    because core energy is already inside its package's."""
    counters = []
    for zone in sorted(Path(root).glob("intel-rapl:*")):
        if zone.name.count(":") != 1 or not (zone / "energy_uj").exists():
            continue
        max_file = zone / "max_energy_range_uj"
        max_uj = int(max_file.read_text().strip()) if max_file.exists() else None
        counters.append(_Counter(zone / "energy_uj", max_uj))
    return counters


def amd_energy_counters(hwmon_root: str | Path = "/sys/class/hwmon") -> list[_Counter]:
    """Socket counters of the `amd_energy` hwmon driver (µJ, accumulated to 64 bits by the driver)."""
    counters = []
    for hwmon in sorted(Path(hwmon_root).glob("hwmon*")):
        name = hwmon / "name"
        if not name.exists() or name.read_text().strip() != "amd_energy":
            continue
        for label in sorted(hwmon.glob("energy*_label")):
            if label.read_text().strip().startswith("Esocket"):
                counters.append(_Counter(hwmon / label.name.replace("_label", "_input"), None))
    return counters


class EnergyMeter:
    """Energy used between `start()` and `stop()`, with its source and, for estimates, its assumptions.

    `gpu` is an opened `NvmlGpu`; `root` and `hwmon_root` are injectable so tests can fake sysfs. Measured
    sources are whole-device counters: they include every process on that GPU or socket.
    """

    def __init__(
        self,
        root: str | Path = "/sys/class/powercap",
        tdp_w: float | None = None,
        gpu: Any = None,
        *,
        hwmon_root: str | Path = "/sys/class/hwmon",
        n_cores: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        gpu_cell: bool = False,
        power_period_s: float = 0.05,
    ) -> None:
        self.n_cores = n_cores or os.cpu_count() or 1
        if tdp_w is not None and tdp_w <= 0:
            raise ConfigError(f"tdp_w must be > 0, got {tdp_w}")
        self.tdp_w, self._tdp_origin = (tdp_w, "given") if tdp_w is not None else default_tdp_w(self.n_cores)
        self.root, self.hwmon_root, self.gpu, self._clock = Path(root), Path(hwmon_root), gpu, clock
        self._started_at: float | None = None
        self._source = "estimate"
        self._counters: list[_Counter] = []
        self._start_values: list[float] = []
        self._cpu0 = 0.0
        self.gpu_cell, self._power_period_s = gpu_cell, power_period_s
        self._power: PowerIntegrator | None = None
        self._host: tuple[str, list[_Counter], list[float]] | None = None

    def start(self) -> None:
        self._cpu0 = time.process_time()
        self._source, self._counters, self._start_values = self._pick_source()
        if self._source.startswith("nvml"):  # the board's energy; the host CPU's is measured beside it
            self._host = self._cpu_source()
        if self._source == "nvml-power":
            self._power = PowerIntegrator(self.gpu.power_w, self._clock, self._power_period_s).start()
        self._started_at = self._clock()

    def _pick_source(self) -> tuple[str, list[_Counter], list[float]]:
        if self.gpu is not None:
            joules = self.gpu.energy_j()
            if joules is not None:
                return "nvml", [], [joules]
            if self.gpu_cell and _power_readable(self.gpu):
                return "nvml-power", [], []
        return self._cpu_source()

    def _cpu_source(self) -> tuple[str, list[_Counter], list[float]]:
        counters = rapl_counters(self.root) or amd_energy_counters(self.hwmon_root)
        start_values: list[float] = []
        try:
            # Since 2020 (PLATYPUS) most kernels make energy_uj root-only: unreadable means "no RAPL".
            start_values = [c.read_uj() for c in counters]
        except (OSError, ValueError):
            counters = []
        return ("rapl", counters, start_values) if counters else ("estimate", [], [])

    def stop(self, cpu_seconds: float | None = None) -> dict:
        """Energy since `start()`. `cpu_seconds`: the worker's CPU time, for the estimate (default: this
        process's CPU time since start)."""
        if self._started_at is None:
            raise RuntimeError("EnergyMeter.stop() called before start()")
        elapsed = self._clock() - self._started_at
        measured = self._measured_j(self._source, self._counters, self._start_values)
        if measured is not None:
            energy, source, estimated, note = measured, self._source, False, self._measured_note()
        else:
            energy, note = self._estimate_j(cpu_seconds)
            source, estimated = "estimate", True
        out = {"energy_j": energy, "source": source, "estimated": estimated, "assumptions": note,
               "mean_power_w": energy / elapsed if elapsed > 0 else None,
               "covers": "gpu" if source.startswith("nvml") else "cpu"}
        return {**out, **self._host_cpu(cpu_seconds)} if out["covers"] == "gpu" else out

    def _host_cpu(self, cpu_seconds: float | None) -> dict:
        """The host CPU's energy over the same window (RAPL where readable, else the estimate), for GPU cells."""
        measured = self._measured_j(*self._host) if self._host else None
        if measured is not None:
            return {"host_cpu_energy_j": measured, "host_cpu_source": "rapl"}
        return {"host_cpu_energy_j": self._estimate_j(cpu_seconds)[0], "host_cpu_source": "estimate"}

    def _measured_j(self, source: str, counters: list[_Counter], start_values: list[float]) -> float | None:
        if source == "nvml":
            end = self.gpu.energy_j()
            return None if end is None else end - start_values[0]
        if source == "nvml-power":
            return self._power.stop() if self._power is not None else None
        if source == "rapl":
            try:
                ends = [c.read_uj() for c in counters]
            except (OSError, ValueError):
                return None
            return sum(c.delta_uj(s, e) for c, s, e in zip(counters, start_values, ends)) / 1e6
        return None

    def _measured_note(self) -> str:
        board = f"GPU {getattr(self.gpu, 'index', '?')}: whole board, idle power included; host CPU excluded"
        if self._source == "nvml":
            return f"NVML total energy counter of {board}"
        if self._source == "nvml-power":
            return f"NVML board power sampled every {self._power_period_s:g} s and integrated, {board}"
        zones = ", ".join(c.path.parent.name for c in self._counters)
        kind = "amd_energy socket" if zones.startswith("hwmon") else "RAPL package"
        return f"{kind} counters ({zones}): whole sockets, all processes; DRAM excluded"

    def _estimate_j(self, cpu_seconds: float | None) -> tuple[float, str]:
        whose = "the worker's CPU time"
        if cpu_seconds is None:
            cpu_seconds, whose = time.process_time() - self._cpu0, "this process's CPU time"
        energy = estimate_cpu_energy_j(cpu_seconds, self.n_cores, self.tdp_w)
        note = (
            f"estimate: {self.tdp_w:.1f} W TDP ({self._tdp_origin}) × CPU utilisation share of {self.n_cores} "
            f"logical cores, from {whose} ({cpu_seconds:.3f} s); linear in utilisation; idle power excluded; "
            f"no readable RAPL on this host"
        )
        if self.gpu is not None or self.gpu_cell:
            note += "; GPU energy not included (NVML gave neither energy nor power)"
        return energy, note


class PowerIntegrator:
    """Energy from power readings (`read_w()`, watts) taken every `period_s` on a daemon thread, integrated with
    the trapezoid rule from `start()` to `stop()`; for boards whose NVML has no total-energy counter."""

    def __init__(self, read_w: Callable[[], float], clock: Callable[[], float] = time.monotonic,
                 period_s: float = 0.05) -> None:
        self._read_w, self._clock, self.period_s = read_w, clock, period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-power", daemon=True)

    def start(self) -> PowerIntegrator:
        self.sample()
        self._thread.start()
        return self

    def sample(self) -> None:
        self.samples.append((self._clock(), float(self._read_w())))

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        self.sample()
        pts = sorted(self.samples)
        return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(pts, pts[1:])) if len(pts) > 1 else None


def _power_readable(gpu: Any) -> bool:
    try:
        gpu.power_w()
        return True
    except gpu.nvml.NVMLError:  # e.g. NVMLError_NotSupported: this board reports no power either
        return False
