"""Turn a load level's windows (one Locust run each) into its LoadLevel record: latency percentiles from every
request's own latency, QPS per fixed window, server and client figures, and Locust's own rounded CSV figures beside
them as a cross-check. With windows from two or more fresh service processes the CIs are across those processes
(service processes doing the same work differ by more than the windows of one process say: docs/measurements.md);
with one process, across its windows, and the record says so (`processes`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.core.records import BucketFigures, CacheFigures, LoadLevel, ShapeFigures, mean_of, process_ci
from bench.core.stats import hierarchical_bootstrap_ci, pooled_stat, summarize, window_rate_ci
from bench.measure.host import available_cores
from bench.measure.power import default_tdp_w, estimate_cpu_energy_j
from loadtests.samples import Samples, crosscheck, level_stats, read_samples
from loadtests.service_proc import ServiceVariant, host_pinning

CLIENT_SATURATED_PERCENT = 85.0  # a Locust process above this share of one core is the bottleneck
SOURCE = {"closed": "every request's latency (Locust request event), stats window after the ramp",
          "open": "open loop: every request's latency from its intended send time"}


@dataclass(frozen=True)
class Window:
    """One Locust run against one service: what it printed, wrote and cost (pooled into a LoadLevel)."""

    users: int
    rate: float | None
    row: dict  # Locust's Aggregated CSV row (rounded figures)
    client: dict  # the locustfile's client JSON
    cpu: dict  # the Locust processes' CPU within the timed window (shapes.CPU_KEYS)
    server: dict  # /metrics deltas over the window
    samples: tuple  # per-process raw sample files
    process: int = 0  # which fresh service process served it (the sweep's round)


def pooled_level(variant: ServiceVariant, cfg, windows: list[Window], index: int | None = None) -> LoadLevel:
    """The LoadLevel of one configuration × level from its windows (repeats, interleaved with other
    configurations): percentiles and CIs from every request, QPS per fixed window with a CI across all of them."""
    first, rate = windows[0], windows[0].rate
    samples = [read_samples(w.samples) for w in windows]  # read once: stats, pooled figures and cross-check
    stats = [level_stats(s, cfg.window_s, cfg.duration_s) for s in samples]
    figures = sample_figures(samples, stats, cfg.window_s, cfg.duration_s)
    figures.update(process_figures([w.process for w in windows], samples, stats, cfg.duration_s))
    return LoadLevel(
        config=variant.setup(), mode="open" if rate else "closed", users=None if rate else first.users,
        offered_rps=rate, duration_s=cfg.duration_s, ramp_s=0.0 if rate else cfg.ramp_s,
        workers=cfg.workers, workload=cfg.workload, repeats=len(windows), window=index,
        **figures, **client_figures(windows, cfg.duration_s), **server_figures(windows),
        locust_csv=locust_figures(windows, stats, samples), source=SOURCE["open" if rate else "closed"],
        pinning=host_pinning().describe(len(available_cores())))


def latencies(samples: Samples) -> np.ndarray:
    return samples.latency_from_intended_ms if samples.open_loop else samples.latency_ms


def sample_figures(samples: list[Samples], stats: list[dict], window_s: float, duration_s: float) -> dict:
    """Percentiles pooled over the windows, CIs from a hierarchical bootstrap (windows, then requests within
    each); QPS from the fixed windows of every repeat, t interval across them (a level shorter than two windows
    gets requests / duration and no CI)."""
    groups = [latencies(s) for s in samples]
    out = {"requests": sum(s["n"] for s in stats), "failures": sum(s["failures"] for s in stats),
           "mean_ms": float(np.mean(np.concatenate(groups)))}
    for q in ("p50", "p95", "p99"):
        out[f"{q}_ms"] = pooled_stat(groups, q)
        out[f"{q}_ci_ms"] = tuple(hierarchical_bootstrap_ci(groups, q, n_boot=1000, seed=0))
    counts = [c for s in stats for c in s["window_counts"]]
    if len(counts) >= 2:
        qps, lo, hi = window_rate_ci(counts, window_s)
        out.update(qps=qps, qps_ci=(lo, hi))
    else:
        out["qps"] = out["requests"] / (duration_s * len(samples))
    return out


def process_figures(processes: list[int], samples: list[Samples], stats: list[dict], duration_s: float) -> dict:
    """Each service process's QPS (its requests over its windows' measured seconds, not whole 2 s windows only:
    a short window would round every process to the same count), P50 and P95, and, with two processes or more, the
    QPS and percentile CIs across them: QPS a t interval over the processes' rates; a percentile the wider of the
    hierarchical bootstrap (processes, then requests) and a t interval over the processes' own values, as engine
    cells do (records.process_ci)."""
    order = sorted(set(processes))
    groups = [np.concatenate([latencies(s) for p, s in zip(processes, samples) if p == k]) for k in order]
    rates = [sum(st["n"] for p, st in zip(processes, stats) if p == k) / (processes.count(k) * duration_s)
             for k in order]
    per_process = [summarize(g) for g in groups]
    out = {"processes": len(order), "process_qps": tuple(rates),
           "process_p50_ms": tuple(p["p50"] for p in per_process),
           "process_p95_ms": tuple(p["p95"] for p in per_process)}
    if len(order) < 2:
        return out
    qps, lo, hi = window_rate_ci(rates, 1.0)  # the processes' rates as counts of 1 s windows: a t interval
    out.update(qps=qps, qps_ci=(lo, hi))
    everything = summarize(np.concatenate(groups))
    for q in ("p50", "p95", "p99"):
        out[f"{q}_ci_ms"] = tuple(process_ci(groups, q, everything, per_process))
    return out


def locust_figures(windows: list[Window], stats: list[dict], samples: list[Samples]) -> dict:
    """Locust's own CSV figures (rounded to about two digits), averaged over the windows, and the share of windows
    whose raw samples, rounded Locust's way, give exactly Locust's numbers. Locust rewrites its CSV once a second
    and not at exit, so its row may lack the last second's requests; the cross-check compares the requests it saw."""
    def mean(key: str):
        values = [float(w.row[key]) for w in windows if w.row.get(key) not in (None, "", "N/A")]
        return sum(values) / len(values) if values else None

    agree = [crosscheck(st, w.row, sm)["agree"] for st, w, sm in zip(stats, windows, samples)]
    return {"qps": mean("Requests/s"), "p50_ms": mean("50%"), "p95_ms": mean("95%"), "p99_ms": mean("99%"),
            "windows_agreeing": sum(agree) / len(agree)}


def client_figures(windows: list[Window], duration_s: float) -> dict:
    cpu = [w.cpu for w in windows]
    opened = [w.client.get("open_loop") for w in windows if w.client.get("open_loop")]
    timing_keys = {k for w in windows for k in w.client.get("server_timing_ms", {})}
    out = {"client_cpu_percent": highest(c["client_cpu_percent"] for c in cpu),
           "client_max_process_cpu_percent": highest(c["client_max_process_cpu_percent"] for c in cpu),
           "invalid_answers": sum(w.client.get("invalid_answers") or 0 for w in windows),
           "failure_causes": summed_causes(w.client.get("failure_causes") or {} for w in windows),
           "server_timing_ms": {k: mean_of(w.client.get("server_timing_ms", {}).get(k) for w in windows)
                                for k in sorted(timing_keys)}}
    if opened:
        out["achieved_rps"] = mean_of(o["accepted"] for o in opened) / duration_s
        out["late_send_percent"] = mean_of(o["late_send_percent"] for o in opened)
    late = out.get("late_send_percent") or 0.0
    busiest = out["client_max_process_cpu_percent"] or 0.0  # not measured: only late sends can tell
    out["client_saturated"] = busiest > CLIENT_SATURATED_PERCENT or late > 5.0
    return out


def summed_causes(per_window) -> dict[str, int]:
    """Failures by cause over the windows, commonest first."""
    out: dict[str, int] = {}
    for causes in per_window:
        for cause, n in causes.items():
            out[cause] = out.get(cause, 0) + int(n)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def highest(values) -> float | None:
    """The largest of the measured values (None where none was measured)."""
    return max((v for v in values if v is not None), default=None)


def server_figures(windows: list[Window]) -> dict:
    hits = sum(w.server["cache"]["hits"] for w in windows)
    misses = sum(w.server["cache"]["misses"] for w in windows)
    sizes = [w.server["mean_batch_size"] for w in windows if w.server["mean_batch_size"] is not None]
    return {"cache": CacheFigures(hits, misses, hits / (hits + misses) if hits + misses else None),
            "mean_batch_size": mean_of(sizes), "shapes": pooled_shapes([w.server.get("shapes") for w in windows]),
            "front_cpu_ms_per_request": front_cpu_per_request(windows), **service_energy(windows)}


def front_cpu_per_request(windows: list[Window]) -> float | None:
    """The front processes' CPU milliseconds per request they answered over the windows (None: not reported)."""
    cpu = [w.server.get("front_cpu_s") for w in windows]
    requests = sum(w.server.get("front_requests") or 0 for w in windows)
    return 1000 * sum(cpu) / requests if None not in cpu and requests else None


def service_energy(windows: list[Window]) -> dict:
    """The service's CPU time per text the model computed over the windows (its /metrics counter of the whole
    process tree, Locust's start and ramp included on both sides of the division), and the energy that CPU time
    costs at a nominal TDP — an estimate, labelled; {} when the service does not report its CPU time."""
    cpu = [w.server.get("cpu_s") for w in windows]
    texts = sum(w.server.get("texts") or 0 for w in windows)
    if None in cpu or not texts:
        return {}
    cores = len(available_cores())
    tdp_w, source = default_tdp_w(cores)
    per_text = sum(cpu) / texts
    return {"service_cpu_ms_per_text": per_text * 1000,
            "energy_per_text_j": estimate_cpu_energy_j(per_text, cores, tdp_w),
            "energy_note": f"estimated: the service's CPU time × TDP / cores ({source}, {cores} cores); "
                           "Locust's CPU and idle power not included"}


def pooled_shapes(per_window: list[dict | None]) -> ShapeFigures | None:
    """The windows' shape figures summed (padding weighted by calls); None when the service exposes none."""
    shown = [s for s in per_window if s and s["calls"]]
    if not shown:
        return None
    engine = [s["engine_s"] for s in shown]
    pads = [(s["padding_share"], s["calls"]) for s in shown if s["padding_share"] is not None]
    return ShapeFigures(sum(s["calls"] for s in shown), sum(s["model_s"] for s in shown),
                        sum(engine) if None not in engine else None, sum(s["new_shapes"] for s in shown),
                        sum(p * n for p, n in pads) / sum(n for _, n in pads) if pads else None,
                        pooled_buckets([b for s in shown for b in s.get("by_bucket", ())]))


def pooled_buckets(rows: list[dict]) -> tuple[BucketFigures, ...]:
    """Per-bucket figures summed over windows, most calls first."""
    by: dict[str, list[dict]] = {}
    for row in rows:
        by.setdefault(row["shape"], []).append(row)
    out = []
    for shape, rs in by.items():
        engine = [r["engine_s"] for r in rs]
        out.append(BucketFigures(shape, sum(r["calls"] for r in rs), sum(r["model_s"] for r in rs),
                                 sum(engine) if None not in engine else None, sum(r["new_shapes"] for r in rs)))
    return tuple(sorted(out, key=lambda b: -b.calls))


