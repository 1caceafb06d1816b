"""Arrival schedules for open-loop load and the client-side aggregates the locustfile reports."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from bench.core.errors import ConfigError

SERVER_TIMING = re.compile(r"([a-z]+);dur=([0-9.]+)")
LATE_SEND_S = 0.010  # a send more than 10 ms after its intended time means the client is saturated
CPU_KEYS = ("client_cpu_percent", "client_max_process_cpu_percent", "client_processes")


def arrival_times(rate: float, duration_s: float, poisson: bool = True, seed: int = 0) -> np.ndarray:
    """Intended send times (seconds from start) for `rate` requests/s over `duration_s`."""
    if rate <= 0 or duration_s <= 0:
        raise ConfigError(f"rate and duration must be > 0 (got {rate}, {duration_s})")
    if not poisson:
        return np.arange(0.0, duration_s, 1.0 / rate)
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * duration_s * 1.5) + 16)
    times = np.cumsum(gaps)
    return times[times < duration_s]


def parse_server_timing(header: str | None) -> dict[str, float]:
    return {name: float(dur) for name, dur in SERVER_TIMING.findall(header or "")}


def client_cpu(client: dict) -> dict:
    """The load generator's CPU figures out of a client JSON (ClientStats.summary), None each where absent."""
    return {key: client.get(key) for key in CPU_KEYS}


class ClientStats:
    """Sums of Server-Timing parts and open-loop figures; mergeable across Locust worker processes."""

    def __init__(self) -> None:
        self.timing_sum: dict = defaultdict(float)
        self.timing_n = 0
        self.open_latencies_ms: list = []
        self.intended = 0
        self.late_sends = 0
        self.invalid = 0
        self.rejected = 0
        # per process (pid): [CPU seconds, wall seconds] within the timed window, what the load costs the host
        self.window_cpu: dict[str, list[float]] = {}

    def add_timing(self, parts: dict[str, float]) -> None:
        if parts:
            self.timing_n += 1
            for name, dur in parts.items():
                self.timing_sum[name] += dur

    def charge_window(self, pid, cpu_s: float, wall_s: float) -> None:
        spent = self.window_cpu.setdefault(str(pid), [0.0, 0.0])
        spent[0] += cpu_s
        spent[1] += wall_s

    def cpu_figures(self) -> dict:
        """The client's CPU within its timed window as % of one core: all its processes together, the busiest
        one (past 85 % of a core it is the bottleneck: levels.CLIENT_SATURATED_PERCENT), how many. Start-up is not
        in it: a whole Locust process's CPU includes importing gevent, Locust and the corpus (docs/measurements.md).
        None where no process had a window."""
        spent = list(self.window_cpu.values())
        wall = max((w for _, w in spent), default=0.0)
        if wall <= 0:
            return {"client_cpu_percent": None, "client_max_process_cpu_percent": None, "client_processes": len(spent)}
        return {"client_cpu_percent": 100.0 * sum(c for c, _ in spent) / wall,
                "client_max_process_cpu_percent": max(100.0 * c / w for c, w in spent if w > 0),
                "client_processes": len(spent)}

    def drain(self) -> dict:
        """This process's figures since the last drain, as a plain dict (sent to the master)."""
        data = {"timing_sum": dict(self.timing_sum), "timing_n": self.timing_n, "invalid": self.invalid,
                "open_latencies_ms": self.open_latencies_ms, "intended": self.intended, "late_sends": self.late_sends,
                "rejected": self.rejected, "window_cpu": self.window_cpu}
        self.__init__()
        return data

    def merge(self, data: dict) -> None:
        for name, total in data.get("timing_sum", {}).items():
            self.timing_sum[name] += total
        self.timing_n += data.get("timing_n", 0)
        self.invalid += data.get("invalid", 0)
        self.open_latencies_ms.extend(data.get("open_latencies_ms", []))
        self.intended += data.get("intended", 0)
        self.late_sends += data.get("late_sends", 0)
        self.rejected += data.get("rejected", 0)
        for pid, (cpu_s, wall_s) in data.get("window_cpu", {}).items():
            self.charge_window(pid, cpu_s, wall_s)

    def summary(self) -> dict:
        timing = {k: v / self.timing_n for k, v in self.timing_sum.items()} if self.timing_n else {}
        out = {"server_timing_ms": timing, "server_timing_n": self.timing_n, "invalid_answers": self.invalid,
               "window_cpu_s": sum(c for c, _ in self.window_cpu.values()), **self.cpu_figures()}
        if self.intended:
            lat = np.asarray(self.open_latencies_ms)
            out["open_loop"] = {"intended": self.intended, "completed": int(lat.size) + self.rejected,
                                "accepted": int(lat.size), "rejected": self.rejected, "late_sends": self.late_sends,
                                "late_send_percent": 100.0 * self.late_sends / self.intended,
                                **({f"p{q}_ms": float(np.percentile(lat, q)) for q in (50, 95, 99)}
                                   if lat.size else {})}
        return out
