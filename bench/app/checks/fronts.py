"""`python -m bench check fronts`: the HTTP front's ceiling with a zero-cost model, and what several fronts buy.

The model is the fake backend with no sleep (cache off), so every CPU second the service spends is the front's or
the scheduler's, not the model's. Each round starts a one-process service and a two-front one (bench.service.fronts)
in turn (A B B A), drives each with Locust for one window, and reads from /metrics and the process table:
- CPU per request of a one-process service (its front does HTTP, input checks, tokenising and batching): its ceiling
  is 1 / that, in requests per second per core;
- with two fronts: each front's CPU per request (HTTP and input checks; its ceiling per front core) and the
  scheduler's (queue, tokenising, batching, the pickled messages);
- the ceiling of a two-front service with a core per process, min(2 / front, 1 / scheduler), against the one-process
  ceiling: the target is ≥ 1.5×, else the split costs more than it frees.
The QPS each reached is printed too; on a host with fewer cores than processes (Locust included) it is the host's
limit, not the service's, which is why the ceilings are read from CPU per request.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bench.app.checks.common import save, verdict
from bench.core import paths

TARGET = 1.5
ZERO_COST = ("--backend-option", "sleep_s=0", "--warm-max-length", "64")


def check_fronts(model: str = "twin", rounds: int = 3, duration_s: float = 10.0, users: int = 32) -> int:
    from tqdm import tqdm

    from loadtests.service_proc import ServiceVariant
    from loadtests.sweep import alternating
    from loadtests.windows import SweepConfig

    base = dict(backend="fake-fp32-cpu", cache_size=0, max_queue=max(64, 2 * users))
    variants = {1: ServiceVariant.of("one process", **base), 2: ServiceVariant.of("two fronts", fronts=2, **base)}
    cfg = SweepConfig(model=model, variants=tuple(variants.values()), users=(users,), duration_s=duration_s,
                      ramp_s=1.0)
    out = paths.ensure_writable(paths.results_dir() / f"check-fronts-{time.strftime('%Y%m%d-%H%M%S')}" / "locust")
    order = [f for r in range(rounds) for f in alternating((1, 2), r)]  # A B, B A, …
    windows: dict[int, list[dict]] = {1: [], 2: []}
    with tqdm(total=len(order), desc="check fronts", unit="service", file=sys.stderr) as bar:
        for i, fronts in enumerate(order):
            windows[fronts].append(measure_window(variants[fronts], cfg, out, f"w{i}-fronts{fronts}"))
            bar.update()
    figures = front_figures(windows)
    print_front_figures(figures)
    what = {"model": f"{model} tokenizer, fake backend with no model time", "synthetic": True}
    print(f"saved: {save('fronts', what, figures, windows=windows)}")
    misses = [] if figures["ceiling_ratio"] >= TARGET else [
        f"two-front ceiling / one-process ceiling {figures['ceiling_ratio']:.2f} < {TARGET}"]
    return verdict(misses)


def measure_window(variant, cfg, out, tag: str) -> dict:
    """One service process, one Locust window: requests, CPU seconds of each front and of the main process."""
    from bench.measure.host import cpu_seconds
    from loadtests.service_proc import ServiceProcess, metrics
    from loadtests.sweep import labelled_deltas
    from loadtests.windows import run_locust

    service = ServiceProcess(cfg.model, variant, list(ZERO_COST))
    try:
        url = service.wait_ready(300)
        main = [service.proc.pid]
        before, main_before = metrics(url), cpu_seconds(main)
        run = run_locust(url, cfg.users[0], cfg, out, tag)
        after, main_after = metrics(url), cpu_seconds(main)
    finally:
        service.stop()
    requests = sum(labelled_deltas(before, after, "front_requests_total").values())
    front_cpu = sum(labelled_deltas(before, after, "front_cpu_seconds").values())
    return {"fronts": variant.config.fronts, "requests": requests, "front_cpu_s": front_cpu,
            "main_cpu_s": main_after - main_before, "qps": float(run["row"]["Requests/s"]),
            "client_cpu": run.get("client_cpu_cores")}


def front_figures(windows: dict[int, list[dict]]) -> dict:
    """CPU per request (ms) and ceilings (requests/s per core), medians over the windows of each setup."""
    def per_request(ws: list[dict], key: str) -> float:
        return float(np.median([1000 * w[key] / w["requests"] for w in ws if w["requests"]]))

    one = per_request(windows[1], "main_cpu_s")  # a one-process service's front is its main process
    front = per_request(windows[2], "front_cpu_s")  # summed over both fronts: each request costs one of them this
    scheduler = per_request(windows[2], "main_cpu_s")
    one_ceiling, two_ceiling = 1000 / one, min(2 * 1000 / front, 1000 / scheduler)
    return {"one_process_cpu_ms_per_request": one, "one_process_ceiling_rps_per_core": one_ceiling,
            "front_cpu_ms_per_request": front, "front_ceiling_rps_per_core": 1000 / front,
            "scheduler_cpu_ms_per_request": scheduler, "scheduler_ceiling_rps_per_core": 1000 / scheduler,
            "two_front_ceiling_rps": two_ceiling, "ceiling_ratio": two_ceiling / one_ceiling,
            "qps_one_process": float(np.median([w["qps"] for w in windows[1]])),
            "qps_two_fronts": float(np.median([w["qps"] for w in windows[2]])),
            "windows": {k: len(v) for k, v in windows.items()}}


def print_front_figures(f: dict) -> None:
    print(f"one process: {f['one_process_cpu_ms_per_request']:.3f} ms CPU per request -> ceiling "
          f"{f['one_process_ceiling_rps_per_core']:.0f} req/s per core (reached {f['qps_one_process']:.0f} req/s here)")
    print(f"two fronts: each front {f['front_cpu_ms_per_request']:.3f} ms CPU per request -> "
          f"{f['front_ceiling_rps_per_core']:.0f} req/s per front core; scheduler "
          f"{f['scheduler_cpu_ms_per_request']:.3f} ms -> {f['scheduler_ceiling_rps_per_core']:.0f} req/s per core "
          f"(reached {f['qps_two_fronts']:.0f} req/s here, Locust sharing the cores)")
    print(f"two-front ceiling with a core per process {f['two_front_ceiling_rps']:.0f} req/s = "
          f"{f['ceiling_ratio']:.2f} x one process's (target >= {TARGET}); medians over "
          f"{f['windows'][1]} + {f['windows'][2]} windows")
