"""The sweep driver: for each service configuration, start the service, run Locust headless at each
concurrency level (closed loop) and each offered rate (open loop), and collect one record per level.

Records go into the run's results.json (`loadtests`), raw Locust CSVs under results/<run>/loadtests/.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench.errors import BenchError
from loadtests.service_proc import ServiceProcess, ServiceVariant, metrics

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CLIENT_SATURATED_PERCENT = 85.0  # a Locust process above this share of one core is the bottleneck
PRESETS = {
    "batch": ServiceVariant("int8 batching"),
    "nobatch": ServiceVariant("int8 no batching (article)", batching=False),
    "cache": ServiceVariant("int8 batching + LRU cache", cache_size=1024),
    "fp32": ServiceVariant("fused fp32 batching", backend="ort-fp32-fused-cpu"),
    "torch": ServiceVariant("torch fp32 batching", backend="torch-fp32-cpu"),
}
DEFAULT_VARIANTS = (PRESETS["batch"], PRESETS["nobatch"])


@dataclass(frozen=True)
class SweepConfig:
    model: str = "twin"
    variants: tuple = DEFAULT_VARIANTS
    users: tuple = (1, 2, 4, 8, 16)
    open_rates: tuple = ()
    duration_s: float = 10.0
    ramp_s: float = 2.0
    workers: int = 1
    workload: str = "corpus"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.variants or any(u < 1 for u in self.users) or any(r <= 0 for r in self.open_rates):
            raise ValueError("a sweep needs service variants, users >= 1 and open-loop rates > 0")
        if self.duration_s <= 0 or self.ramp_s < 0 or self.workers < 1:
            raise ValueError(f"bad sweep timing/workers: duration {self.duration_s}, ramp {self.ramp_s}, "
                             f"workers {self.workers}")
        if self.workload not in ("corpus", "zipf"):
            raise ValueError(f"workload must be corpus or zipf (got {self.workload!r})")


class CpuWatch:
    """CPU use of a process tree (the Locust client) over a window, per process, as % of one core."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.seen: dict = {}
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            try:
                for p in [self.root, *self.root.children(recursive=True)]:
                    t = p.cpu_times()
                    self.seen[p.pid] = t.user + t.system
            except psutil.Error:
                continue

    def stop(self) -> dict:
        self._stop.set()
        wall = time.perf_counter() - self.t0
        per_proc = [100.0 * s / wall for s in self.seen.values()]
        return {"client_cpu_percent": sum(per_proc), "client_max_process_cpu_percent": max(per_proc, default=0.0),
                "client_processes": len(per_proc)}


def locust_command(url: str, users: int, cfg: SweepConfig, prefix: Path, open_loop: bool) -> list[str]:
    run_s = cfg.ramp_s + cfg.duration_s
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url, "--csv", str(prefix),
           "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "10", "--exit-code-on-error", "0"]
    if open_loop:
        return cmd + ["-u", "1", "-r", "1", "-t", f"{cfg.duration_s + 30:.0f}s"]
    rate = users / cfg.ramp_s if cfg.ramp_s > 0 else users
    cmd += ["-u", str(users), "-r", f"{rate:.3f}", "-t", f"{run_s:.0f}s", "--reset-stats"]
    return cmd + (["--processes", str(cfg.workers)] if cfg.workers > 1 else [])


def run_locust(url: str, users: int, cfg: SweepConfig, out_dir: Path, tag: str, rate: float | None = None) -> dict:
    """One Locust run; returns the aggregated CSV row, client figures and client CPU."""
    prefix = out_dir / tag
    client_out = out_dir / f"{tag}_client.json"
    env = {**os.environ, "STRUCTBENCH_CLIENT_OUT": str(client_out), "STRUCTBENCH_WORKLOAD": cfg.workload,
           "STRUCTBENCH_SEED": str(cfg.seed), "STRUCTBENCH_MODE": "open" if rate else "closed",
           "STRUCTBENCH_RATE": str(rate or 0), "STRUCTBENCH_DURATION": str(cfg.duration_s)}
    proc = subprocess.Popen(locust_command(url, users, cfg, prefix, rate is not None), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch = CpuWatch(proc.pid)
    output, _ = proc.communicate(timeout=cfg.ramp_s + cfg.duration_s + 120)
    cpu = watch.stop()
    row = aggregated_row(Path(f"{prefix}_stats.csv"))
    if row is None:
        raise BenchError(f"locust wrote no stats for {tag} (exit {proc.returncode}): {output.strip()[-300:]}")
    client = json.loads(client_out.read_text()) if client_out.exists() else {}
    return {"row": row, "client": client, **cpu}


def aggregated_row(path: Path) -> dict | None:
    if not path.exists():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        return next((r for r in csv.DictReader(fh) if r.get("Name") == "Aggregated"), None)


def number(row: dict, key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def server_deltas(before: dict, after: dict) -> dict:
    """Cache and batch figures of one level, from /metrics before and after it."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("cache_hits_total", "cache_misses_total",
                                                             "batch_size_sum", "batch_size_count")}
    looked = d["cache_hits_total"] + d["cache_misses_total"]
    return {"cache": {"hits": d["cache_hits_total"], "misses": d["cache_misses_total"],
                      "hit_rate": d["cache_hits_total"] / looked if looked else None},
            "mean_batch_size": d["batch_size_sum"] / d["batch_size_count"] if d["batch_size_count"] else None}


def record(variant: ServiceVariant, cfg: SweepConfig, users: int, result: dict, server: dict,
           rate: float | None) -> dict:
    row, client = result["row"], result["client"]
    requests = int(number(row, "Request Count") or 0)
    entry = {"config": asdict(variant), "mode": "open" if rate else "closed", "users": None if rate else users,
             "offered_rps": rate, "duration_s": cfg.duration_s, "ramp_s": 0.0 if rate else cfg.ramp_s,
             "workers": 1 if rate else cfg.workers, "workload": cfg.workload, "requests": requests,
             "failures": int(number(row, "Failure Count") or 0), "qps": number(row, "Requests/s"),
             "mean_ms": number(row, "Average Response Time"), "p50_ms": number(row, "50%"),
             "p95_ms": number(row, "95%"), "p99_ms": number(row, "99%"),
             "server_timing_ms": client.get("server_timing_ms", {}), "invalid_answers": client.get("invalid_answers"),
             "client_cpu_percent": result["client_cpu_percent"],
             "client_max_process_cpu_percent": result["client_max_process_cpu_percent"], **server,
             "source": "locust csv (Aggregated row, stats reset after ramp)"}
    open_loop = client.get("open_loop")
    if open_loop:
        # Latency from the intended send time: Locust's own numbers would start at the actual send.
        entry.update({"requests": open_loop["completed"], "p50_ms": open_loop.get("p50_ms"), "p95_ms": open_loop.get("p95_ms"),
                      "p99_ms": open_loop.get("p99_ms"), "achieved_rps": open_loop["accepted"] / cfg.duration_s,
                      "late_send_percent": open_loop["late_send_percent"], "open_loop": open_loop,
                      "source": "open loop: latency from intended send time"})
    entry["client_saturated"] = (result["client_max_process_cpu_percent"] > CLIENT_SATURATED_PERCENT
                                 or entry.get("late_send_percent", 0.0) > 5.0)
    return entry


def sweep_variant(variant: ServiceVariant, cfg: SweepConfig, out_dir: Path, bar,
                  plan: list[tuple[int, float | None]] | None = None) -> list[dict]:
    """One service process, Locust at each level of `plan` (default: the config's levels) in that order.
    A level may repeat (interleaved designs): repeats get a window number in their file names and records."""
    plan = plan or levels(cfg)
    repeated = len(set(plan)) < len(plan)
    service = ServiceProcess(cfg.model, variant)
    records = []
    try:
        url = service.wait_ready()
        for i, (users, rate) in enumerate(plan):
            tag = f"{slug(variant.label)}_{'r' + format(rate, 'g') if rate else 'u' + str(users)}"
            tag += f"_w{i:02d}" if repeated else ""
            bar.set_postfix_str(f"{variant.label}: " + (f"open loop {rate:g} req/s" if rate else f"{users} users"))
            before = metrics(url)
            result = run_locust(url, users, cfg, out_dir, tag, rate)
            entry = record(variant, cfg, users, result, server_deltas(before, metrics(url)), rate)
            records.append({**entry, "window": i} if repeated else entry)
            bar.update(1)
    finally:
        service.stop()
    return records


def levels(cfg: SweepConfig) -> list[tuple[int, float | None]]:
    return [(u, None) for u in cfg.users] + [(1, r) for r in cfg.open_rates]


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def run_sweep(cfg: SweepConfig, out_dir: Path) -> list[dict]:
    """Every variant × level; a variant whose service fails is recorded as failed and the sweep goes on."""
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    with tqdm(total=len(cfg.variants) * len(levels(cfg)), desc="loadtest", unit="level", file=sys.stderr) as bar:
        for variant in cfg.variants:
            try:
                records.extend(sweep_variant(variant, cfg, out_dir, bar))
            except (BenchError, subprocess.SubprocessError, OSError) as exc:
                records.append({"config": asdict(variant), "mode": "closed", "status": "failed", "reason": str(exc)})
    return records


def sweep_into_run(cfg: SweepConfig, run_dir: Path) -> Path:
    """Run the sweep and merge its records into run_dir/results.json (created if the folder has none)."""
    from bench.results import load_run, save_run

    records = run_sweep(cfg, run_dir / "loadtests")
    run = load_run(run_dir)
    kept = tuple(r for r in run.loadtests if not any(same_level(r, n) for n in records))
    return save_run(replace(run, loadtests=kept + tuple(records)), run_dir)


def same_level(a: dict, b: dict) -> bool:
    keys = ("mode", "users", "offered_rps", "workers", "workload")
    return a.get("config") == b.get("config") and all(a.get(k) == b.get(k) for k in keys)
