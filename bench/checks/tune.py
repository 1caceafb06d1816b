"""`python -m bench check tune`: the tuned service against the engine's offline best and the default service.

Targets (issue: serving-config search): the tuned service's saturated QPS ≥ 0.97 × the best offline engine
configuration's throughput (the service loses at most 3 % to HTTP, JSON, tokenising and queueing), and ≥ the
default service's QPS. All in one run, the services' windows interleaved.

The tune's own figures choose the configurations; the ratios are judged on fresh figures (the maximum of five
offline figures whose intervals are ±8–14 % is biased up by their noise: the winner's curse, 0.919 and 0.945 here
before this design). Those come in rounds, every process started once and idle while another measures: the best
offline configuration, then each service for one window (their order alternating), and so on, offline last, so
each service window sits between two offline ones. One offline figure before and one after every service window
(A B A once) read 56.8 and 51.6 items/s around the services on this host: a drift of 10 % within four minutes
that a ratio of the services' mean to those two could not cancel.

Then where the cores went: CPU per text of the engine offline and of the service's replicas, its front and Locust
(in its timed windows), their shares of the cores, and the ratio those predict. On this 2-core host the front took
~6.5 % and Locust ~4 % while the replicas spent what the engine does per text (0.99x): a ceiling of ~0.95 that no
change to the engine's configuration can lift.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench import paths
from bench.checks.common import prepare_model, save, verdict
from bench.measure.stats import window_rate_ci
from bench.tune.cli import ci, print_tune
from bench.tune.search import DEFAULT_LABEL, TuneConfig, offline_setup, run_tune, verify_sweep

SERVICE_VS_ENGINE = 0.97


def best_offline(record):
    ok = [c for c in record.candidates if c.status == "ok" and c.items_per_s is not None]
    return max(ok, key=lambda c: c.items_per_s) if ok else None


def ratio_bounds(num: tuple, den: tuple) -> str:
    """The ratio's range when each side may lie anywhere in its 95 % interval (conservative: wider than a 95 %
    interval of the ratio). The target is judged on the point estimate; this says how much that is worth."""
    if len(num) != 2 or len(den) != 2 or den[0] <= 0:
        return "[no CI]"
    return f"[{num[0] / den[1]:.3f}–{num[1] / den[0]:.3f}]"


def rate_of(rates: list[float]) -> tuple[float, tuple]:
    """The mean of the offline figures and its t interval across them."""
    mean, low, high = window_rate_ci(rates, 1.0)
    return mean, (low, high)


@dataclass
class CpuUse:
    """CPU seconds spent over some stretch of work, and the texts computed in it: per text, where the cores went."""

    texts: float = 0.0
    engine_s: float = 0.0  # the model replicas (offline: the engine processes)
    front_s: float = 0.0  # the service's front process: HTTP, JSON, tokenising, the batcher threads
    client_s: float = 0.0  # the load generator (Locust) within its timed windows
    client_requests: float = 0.0  # the requests it completed in them

    def add(self, other: "CpuUse") -> "CpuUse":
        return CpuUse(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def ms_per_text(self) -> dict:
        """Milliseconds of CPU per text computed (the load generator's per request: one text each here)."""
        def per(seconds: float, n: float) -> float | None:
            return round(1000 * seconds / n, 3) if n else None

        return {"engine": per(self.engine_s, self.texts), "front": per(self.front_s, self.texts),
                "client": per(self.client_s, self.client_requests)}


def cpu_seconds(pids) -> float:
    """User + system seconds of these processes so far (a process already gone counts 0)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def offline_run(members: list, calls: list, seconds: float) -> tuple[float, CpuUse]:
    """One offline figure and the engine processes' CPU for it."""
    from bench.tune.offline import run_for

    pids = [m.pid for m in members]
    before = cpu_seconds(pids)
    rate = run_for(members, calls, seconds)["items_per_s"]
    return rate, CpuUse(texts=rate * seconds, engine_s=cpu_seconds(pids) - before)


def service_window(service, run) -> tuple:
    """`run()` (one Locust window) and the CPU the front and its replica processes spent over it, with the texts the
    service computed then (the window's /metrics deltas); Locust's own CPU within its timed window, as the
    locustfile measured it, with the requests of that window. A model in the front process counts as front."""
    import psutil

    front = service.proc.pid
    replicas = [p.pid for p in psutil.Process(front).children(recursive=True)]
    before = (cpu_seconds([front]), cpu_seconds(replicas))
    window = run()
    front_s, replicas_s = cpu_seconds([front]) - before[0], cpu_seconds(replicas) - before[1]
    requests = float(window.row.get("Request Count") or 0)  # failures included
    return window, CpuUse(window.server["texts"], replicas_s, front_s, float(window.client.get("window_cpu_s") or 0.0),
                          requests)


def fresh_figures(cfg: TuneConfig, record, out_dir: Path) -> dict:
    """Rounds on the configurations the tune chose (see the module's docstring): offline, the services, offline,
    … — `cfg.repeats` windows of each service, one more offline figure than that."""
    from bench.service.replicas import start_replicas
    from loadtests.levels import pooled_level
    from loadtests.sweep import start_services

    engine = best_offline(record)
    tuned = next((c for c in record.candidates if c.label == record.recommended), None)
    sweep = verify_sweep(cfg, [tuned] if tuned else [])
    config, _, by_batch = offline_setup(replace(cfg, batches=(engine.max_batch,)), record.cores)
    out_dir.mkdir(parents=True, exist_ok=True)
    running, failed = start_services(sweep)
    members, _ = start_replicas(config, engine.replicas, engine.threads, call_timeout_s=120.0)
    try:
        if failed:
            raise RuntimeError(f"a service did not start: {failed[0].reason}")
        offline, windows, cpu = rounds(cfg, sweep, running, members, by_batch[engine.max_batch], out_dir)
    finally:
        for member in members:
            member.close()
        for _, service, _ in running.values():
            service.stop()
    levels = {label: pooled_level(running[label][0], sweep, ws) for label, ws in windows.items()}
    tuned_label = f"tuned {tuned.label}" if tuned else DEFAULT_LABEL
    return {"engine": engine.label, "offline": offline, "engine_rate": rate_of(offline),
            "service": levels.get(tuned_label), "default": levels.get(DEFAULT_LABEL), "users": sweep.users[0],
            "cpu": {"offline": cpu["offline"], "service": cpu.get(tuned_label, CpuUse())}, "cores": record.cores}


def rounds(cfg: TuneConfig, sweep, running: dict, members: list, calls: list, out_dir: Path) -> tuple:
    """Offline, a window of each running service (order alternating), offline, …: the offline figures, each
    service's windows, and the CPU each spent (CpuUse by service label, and "offline")."""
    from bench.tune.offline import warmed
    from loadtests.sweep import run_window, slug

    offline, windows = [], {label: [] for label in running}
    cpu = {"offline": CpuUse(), **{label: CpuUse() for label in running}}
    seconds = warmed(members, calls, cfg.seconds)

    def offline_figure() -> None:
        rate, use = offline_run(members, calls, seconds)
        offline.append(rate)
        cpu["offline"] = cpu["offline"].add(use)

    offline_figure()
    order = tuple(v for v, _, _ in running.values())
    for r in range(cfg.repeats):
        for variant in order if r % 2 == 0 else order[::-1]:
            _, service, url = running[variant.label]
            tag = f"fresh_{slug(variant.label)}_rep{r}"
            window, use = service_window(service, lambda: run_window(url, sweep.users[0], None, sweep, out_dir, tag))
            windows[variant.label].append(window)
            cpu[variant.label] = cpu[variant.label].add(use)
        offline_figure()
    return offline, windows, cpu


def check_tune(model: str) -> int:
    _, _, block = prepare_model(model)
    cfg = TuneConfig(model=model, seconds=10.0, top=2, ties=2, duration_s=10.0, repeats=3)
    record, _ = run_tune(cfg, paths.results_dir() / "checks" / "tune")
    print_tune(record)
    if record.recommended is None or best_offline(record) is None or record.default_qps is None:
        print("error: the tune verified no service (see the table above)", file=sys.stderr)
        return 2
    fresh = fresh_figures(cfg, record, paths.results_dir() / "checks" / "tune" / "fresh")
    if not all(lv is not None and lv.status == "ok" for lv in (fresh["service"], fresh["default"])):
        print("error: the fresh service windows failed (see the table above)", file=sys.stderr)
        return 2
    return judge(fresh, record, block)


def judge(fresh: dict, record, block: dict) -> int:
    (rate, rate_ci), service, default = fresh["engine_rate"], fresh["service"], fresh["default"]
    to_engine, to_default = service.qps / rate, service.qps / default.qps
    print(f"fresh figures in rounds: offline {fresh['engine']} "
          f"{' | '.join(f'{r:.2f}' for r in fresh['offline'])} items/s, a service window of each between two "
          f"(closed loop, {fresh['users']} users)")
    print(f"tuned service {record.recommended} QPS {service.qps:.2f} {ci(service.qps_ci)} / offline "
          f"{fresh['engine']} {rate:.2f} {ci(rate_ci)} items/s = {to_engine:.3f} "
          f"{ratio_bounds(tuple(service.qps_ci), rate_ci)}  (target >= {SERVICE_VS_ENGINE})")
    print(f"tuned / default service QPS = {to_default:.3f}  (default {default.qps:.2f} {ci(default.qps_ci)}; "
          f"target >= 1.0)")
    budget = cpu_budget(fresh, service.qps, rate)
    for line in budget.pop("lines"):
        print(line)
    save("tune", block, {"tuned_vs_offline": to_engine, "tuned_vs_default": to_default,
                         "offline_rounds": fresh["offline"], "users": fresh["users"],
                         "tuned_qps": service.qps, "default_qps": default.qps, "cpu": budget}, tune=asdict(record))
    misses = [f"tuned service / best offline {to_engine:.3f} < {SERVICE_VS_ENGINE}"] * (to_engine < SERVICE_VS_ENGINE)
    misses += [f"tuned / default service {to_default:.3f} < 1.0"] * (to_default < 1.0)
    return verdict(misses)


def cpu_budget(fresh: dict, qps: float, engine_rate: float) -> dict:
    """Where the cores went: CPU per text offline and in the tuned service, and at the measured rates the share of
    the cores each part took. At saturation on a small host the front and the load generator share the replicas'
    cores, so every ms they spend per request is engine time lost: that, not the engine running slower, is what
    keeps the service under the offline figure (both seen here: replicas' ms per text vs the engine's)."""
    offline, service = fresh["cpu"]["offline"].ms_per_text(), fresh["cpu"]["service"].ms_per_text()
    cores = fresh["cores"]
    # ms per text × texts per s / 1000 × 100 → % of one core
    share = {k: round(v * qps / 10, 1) for k, v in service.items() if v is not None}
    share["offline engine"] = round((offline["engine"] or 0) * engine_rate / 10, 1)
    lines, extra = [], {}
    if service["engine"] and offline["engine"]:
        lines.append(f"CPU per text: offline engine {offline['engine']:.1f} core-ms; tuned service replicas "
                     f"{service['engine']:.1f} ({service['engine'] / offline['engine']:.2f}x), front "
                     f"{service['front']:.2f} ms, load generator {service['client']:.2f} ms a request (Locust, in its "
                     f"timed windows)")
        lines.append(f"share of the {100 * cores} % the {cores} cores give: offline the engine "
                     f"{share['offline engine']:.0f} %; in the service replicas {share['engine']:.0f} %, front "
                     f"{share['front']:.1f} %, load generator {share['client']:.1f} %")
        if share.get("client") is not None and share["offline engine"]:
            # The cores less what the front and the load generator took, over what the engine had offline; divided
            # by the replicas' CPU per text relative to the engine's, it predicts the measured ratio.
            ceiling = (100 * cores - share["front"] - share["client"]) / share["offline engine"]
            predicted = ceiling * offline["engine"] / service["engine"]
            lines.append(f"so on this host the service can keep at most {ceiling:.3f} of the engine (the cores less "
                         f"the front's and the load generator's share); at its replicas' CPU per text that "
                         f"predicts {predicted:.3f}, measured {qps / engine_rate:.3f}")
            extra = {"ceiling": round(ceiling, 4), "predicted_ratio": round(predicted, 4)}
    else:  # the tuned service is the default one: its model runs in the front process
        lines.append("CPU per text: not split (the tuned service runs its model in the front process)")
    return {"offline_ms_per_text": offline, "service_ms_per_text": service, "percent_of_a_core": share, **extra,
            "lines": lines}
