"""Service checks: `check service` (QPS scaling, service vs engine, HTTP overhead) and `check overload`."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict

import numpy as np

from bench.app.checks.common import measure_cell, p50, prepare_model, save, verdict
from bench.core import paths
from bench.core.results import CellResult, CellSpec

# ABBA blocks: concurrency 1, 8, 8, 1 in one service process, so a drift of the host's speed over the minutes
# of a check cancels out of the 8-vs-1 comparison instead of landing on whichever level ran later.
SERVICE_BLOCK = (1, 8, 8, 1)


def check_service(model: str = "twin", duration_s: float = 12.0, blocks: int = 3) -> int:
    """Service vs engine on one host: QPS scaling with concurrency, saturation vs offline throughput,
    and what the HTTP layer adds to P50 at concurrency 1.

    Concurrency 1 and 8 alternate in ABBA blocks inside one service process per configuration, and the ratio
    comes with a 95 % CI from the repeated windows: two service processes doing the same work differ by more
    than the effect being measured (docs/measurements.md)."""
    from tqdm import tqdm

    from loadtests.sweep import sweep_variant
    from loadtests.windows import PRESETS, SweepConfig

    model_dir, onnx_dir, what = prepare_model(model)
    engine = {b: measure_cell(CellSpec("ort-int8-cpu", batch=b), model_dir, onnx_dir) for b in (1, 4, 8)}
    variants = {True: PRESETS["batch"], False: PRESETS["nobatch"]}
    cfg = SweepConfig(model=model, variants=tuple(variants.values()), users=(1, 8, 16), duration_s=duration_s,
                      ramp_s=2.0)
    plan = [(u, None) for u in SERVICE_BLOCK * blocks] + [(16, None)]
    out = paths.ensure_writable(paths.results_dir() / f"check-service-{time.strftime('%Y%m%d-%H%M%S')}")
    loadtests = out / "loadtests"
    records: list = []
    with tqdm(total=len(plan) * len(variants), desc="check service", unit="window", file=sys.stderr) as bar:
        for variant in variants.values():
            records += sweep_variant(variant, cfg, loadtests, bar, plan)
    figures = service_figures(records, engine)
    print_service_figures(figures, records)
    print(f"saved: {save('service', what, figures, loadtests=[asdict(r) for r in records])}")
    return verdict(service_misses(figures))


def service_misses(f: dict) -> list[str]:
    misses = []
    if f["qps8_over_qps1_batching_ci95"][0] < 1.0:  # met only when the whole interval is at or above it
        misses.append(f"QPS@8 / QPS@1 with batching {f['qps8_over_qps1_batching']:.3f} (CI's lower end "
                      f"{f['qps8_over_qps1_batching_ci95'][0]:.3f} < 1.0)")
    if f["saturated_over_engine"] < 0.90:
        misses.append(f"saturated service / engine throughput {f['saturated_over_engine']:.2f} < 0.90")
    if f["service_minus_engine_p50_ms"] > 5.0:
        misses.append(f"service - engine P50 {f['service_minus_engine_p50_ms']:.1f} ms > 5 ms")
    return misses


def service_figures(records: list, engine: dict[int, CellResult]) -> dict:
    """The check's figures from its windows (LoadLevel records, one per window, numbered by `window`)."""
    from bench.core.stats import ratio_ci
    from loadtests.levels import highest

    def level(batching: bool, users: int) -> list:
        return [r for r in records if r.config.batching is batching and r.users == users and r.qps]

    def windows(batching: bool, users: int, key: str = "qps") -> list[float]:
        return [getattr(r, key) for r in level(batching, users)]

    def times(batching: bool, users: int) -> list[float]:
        return [float(r.window if r.window is not None else records.index(r)) for r in level(batching, users)]

    best_batch = max(engine, key=lambda b: engine[b].throughput)
    f: dict = {"engine_best_batch": best_batch, "engine_best_throughput": engine[best_batch].throughput,
               "engine_p50_ms_b1": p50(engine[1]) * 1000, "windows_per_level": len(windows(True, 1))}
    for batching, name in ((True, "batching"), (False, "no_batching")):
        # Windows alternate in ABBA blocks; the window number is the time axis for the drift term.
        ratio, lo, hi = ratio_ci(windows(batching, 8), windows(batching, 1),
                                 times=(times(batching, 8), times(batching, 1)))
        f[f"qps8_over_qps1_{name}"], f[f"qps8_over_qps1_{name}_ci95"] = ratio, [lo, hi]
        f[f"qps1_{name}"], f[f"qps8_{name}"] = windows(batching, 1), windows(batching, 8)
    saturated = [float(np.mean(windows(True, u))) for u in (8, 16) if windows(True, u)]
    f["saturated_service_qps"] = max(saturated)
    f["saturated_over_engine"] = f["saturated_service_qps"] / f["engine_best_throughput"]
    f["service_p50_ms_c1"] = float(np.median(windows(True, 1, "p50_ms")))
    f["service_minus_engine_p50_ms"] = f["service_p50_ms_c1"] - f["engine_p50_ms_b1"]
    # The same difference inside one service process (client mean − the process's own inference mean):
    # engine speed varies between processes (docs/measurements.md), which the cross-process figure mixes in.
    f["service_overhead_same_process_ms"] = {
        name: float(np.mean([r.mean_ms - r.server_timing_ms.get("inference", float("nan"))
                             for r in level(batching, 1)]))
        for batching, name in ((True, "batching"), (False, "no batching"))}
    f["client_cpu_percent_max"] = highest(r.client_cpu_percent for r in records if r.qps)
    return f


def cpu_text(percent: float | None) -> str:
    return "not measured" if percent is None else f"{percent:.0f} %"


def print_service_figures(f: dict, records: list) -> None:
    for r in records:
        if r.qps:
            print(f"  batching={'on ' if r.config.batching else 'off'} window {r.window or 0:>2} "
                  f"users={r.users:>2}: QPS {r.qps:.2f}  P50 {r.p50_ms:.0f} ms  P95 {r.p95_ms:.0f} ms  "
                  f"mean batch {r.mean_batch_size or 0:.2f}  client CPU {cpu_text(r.client_cpu_percent)}")
    n = f["windows_per_level"]
    for name, label in (("batching", "on "), ("no_batching", "off")):
        lo, hi = f[f"qps8_over_qps1_{name}_ci95"]
        print(f"QPS@8 / QPS@1, batching {label} = {f[f'qps8_over_qps1_{name}']:.3f}  [95% CI {lo:.3f}–{hi:.3f}, "
              f"{n}+{n} interleaved windows, linear drift removed]"
              + ("  (target >= 1.0; article: 0.57)" if name == "batching" else ""))
    print(f"saturated service QPS / engine throughput at best batch ({f['engine_best_batch']}) = "
          f"{f['saturated_service_qps']:.2f} / {f['engine_best_throughput']:.2f} = {f['saturated_over_engine']:.2f}"
          f"  (target >= 0.90)")
    print(f"service P50 at concurrency 1 - engine P50 = {f['service_p50_ms_c1']:.1f} - {f['engine_p50_ms_b1']:.1f} = "
          f"{f['service_minus_engine_p50_ms']:.1f} ms  (target <= 5 ms; engine and service are different processes)")
    same = ", ".join(f"{k} {v:.1f} ms" for k, v in f["service_overhead_same_process_ms"].items())
    print(f"service overhead over its own engine time at concurrency 1 (client mean - server inference mean): {same}")


def check_overload(model: str = "twin", target=None, duration_s: float = 60.0) -> int:
    """`target`: a ServiceVariant of another server (bench.app.args.target_variant); None: our default service."""
    from loadtests.overload import (
        MAX_ACCEPTED_P99_MS,
        MIN_ACCEPTED_SHARE,
        RECOVERED_FRACTION,
        SUSTAIN_S,
        overload_misses,
        run_overload,
    )

    _, _, what = prepare_model(model)
    out = paths.ensure_writable(paths.results_dir() / f"check-overload-{time.strftime('%Y%m%d-%H%M%S')}")
    f = run_overload(model, out, duration_s, **({"variant": target} if target is not None else {}))
    print(f"saturated QPS (warm service) {f['saturated_qps']:.2f}; offered {f['offered_rps']:.1f} req/s "
          f"({f['factor']:g}x) for {duration_s:g} s")
    print(f"accepted QPS {f['accepted_qps']:.2f} (target >= {MIN_ACCEPTED_SHARE:.0%} of saturated); rejected "
          f"{f['rejection_rate'] * 100:.1f} % (503 + Retry-After)")
    print(f"P99 of accepted requests (from intended send) = {f['accepted_p99_ms']:.0f} ms (target <= "
          f"{MAX_ACCEPTED_P99_MS:.0f} ms); late sends {f['late_send_percent']:.1f} %")
    if f["rss_change"] is None:
        print("service RSS: not measured (the server runs elsewhere)")
    else:
        print(f"service RSS before/after = {f['rss_before_mb']:.0f} / {f['rss_after_mb']:.0f} MB "
              f"({f['rss_change'] * 100:+.1f} %; target within 10 %)")
    if f["failure_causes"]:
        print("failures by cause: " + ", ".join(f"{k}: {v}" for k, v in f["failure_causes"].items()))
    rec = "never within the probe" if f["recovery_s"] is None else f"{f['recovery_s']:.0f} s"
    print(f"recovery from the end of the overload (its backlog still queued) to {RECOVERED_FRACTION:.0%} of the "
          f"saturated QPS, sustained {SUSTAIN_S} s: {rec}  (target <= 5 s)")
    paths.atomic_write_text(out / "check.json", json.dumps({**what, "figures": f}, ensure_ascii=False, indent=1))
    print(f"saved: {out / 'check.json'}")
    return verdict(overload_misses(f))
