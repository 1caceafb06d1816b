"""Overload study: saturate, drive 4x the saturated rate open-loop, then time the recovery.

Reports accepted QPS, rejection rate, P99 of accepted requests (from the intended send time), service
RSS before/after, and the seconds until a closed-loop probe gets the saturated QPS back.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil

from loadtests.service_proc import ServiceProcess, ServiceVariant
from loadtests.sweep import SweepConfig, run_locust

RECOVERED_FRACTION = 0.9


def probe(url: str, users: int, seconds: float) -> list[float]:
    """Closed-loop probe with plain http.client threads posting ≈80-char corpus reviews (the workload the
    harness and Locust use): completion times of successful requests."""
    from bench.corpus import length_workload

    parsed, done, stop = urlparse(url), [], time.perf_counter() + seconds
    bodies = [json.dumps({"text": t}).encode() for t in length_workload(400, seed=7).texts]

    def user(offset: int) -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        i = offset
        while time.perf_counter() < stop:
            i += users
            conn.request("POST", "/api/sentiment", bodies[i % len(bodies)], {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                done.append(time.perf_counter())
        conn.close()

    threads = [threading.Thread(target=user, args=(k,), daemon=True) for k in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return done


def recovery_seconds(done: list[float], start: float, target_qps: float) -> float | None:
    """First 1-s window after `start` whose completions reach RECOVERED_FRACTION of the target rate."""
    for second in range(int(max(done, default=start) - start) + 1):
        n = sum(1 for t in done if start + second <= t < start + second + 1)
        if n >= RECOVERED_FRACTION * target_qps:
            return float(second + 1)
    return None


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def run_overload(model: str, out_dir: Path, duration_s: float = 60.0, factor: float = 4.0,
                 variant: ServiceVariant = ServiceVariant.of("int8 batching", cache_size=0)) -> dict:
    service = ServiceProcess(model, variant)
    try:
        url = service.wait_ready()
        warm = probe(url, 16, 10.0)
        sat_qps = len(warm) / 10.0
        rss_before = rss_mb(service.proc.pid)
        cfg = SweepConfig(model=model, duration_s=duration_s, open_rates=(factor * sat_qps,))
        over = run_locust(url, 1, cfg, out_dir, "overload", rate=factor * sat_qps)
        load_end = time.perf_counter()
        done = probe(url, 16, 15.0)
        rss_after = rss_mb(service.proc.pid)
    finally:
        service.stop()
    loop = over["client"].get("open_loop", {})
    return {"saturated_qps": sat_qps, "offered_rps": factor * sat_qps, "duration_s": duration_s,
            "accepted_qps": loop.get("accepted", 0) / duration_s,
            "rejection_rate": loop.get("rejected", 0) / max(1, loop.get("completed", 0)),
            "accepted_p99_ms": loop.get("p99_ms"), "accepted_p50_ms": loop.get("p50_ms"),
            "late_send_percent": loop.get("late_send_percent"), "rss_before_mb": rss_before,
            "rss_after_mb": rss_after, "rss_change": rss_after / rss_before - 1.0,
            "recovery_s": recovery_seconds(done, load_end, sat_qps), "client_cpu_percent": over["client_cpu_percent"]}
