"""`python -m bench check tune`: the tuned service against the engine's offline best and the default service.

Targets (issue: serving-config search): the tuned service's saturated QPS ≥ 0.97 × the best offline engine
configuration's throughput (the service loses at most 3 % to HTTP, JSON, tokenising and queueing), and ≥ the
default service's QPS. All in one run, the services' windows interleaved.
"""

from __future__ import annotations

import sys
from dataclasses import asdict

from bench import paths
from bench.checks.common import prepare_model, save, verdict
from bench.tune.cli import ci, print_tune
from bench.tune.search import TuneConfig, run_tune

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


def check_tune(model: str) -> int:
    _, _, block = prepare_model(model)
    # 10 s offline per configuration: the best of several offline figures is biased up by their noise (the
    # winner's curse), and 4 s windows of ~200 ms calls gave ±14 % intervals on a slow host
    record, _ = run_tune(TuneConfig(model=model, seconds=10.0, top=2, duration_s=10.0, repeats=3),
                         paths.results_dir() / "checks" / "tune")
    print_tune(record)
    tuned = next((c for c in record.candidates if c.label == record.recommended), None)
    engine = best_offline(record)
    if record.recommended is None or engine is None or record.default_qps is None:
        print("error: the tune verified no service (see the table above)", file=sys.stderr)
        return 2
    qps, qps_ci = (tuned.service_qps, tuned.service_qps_ci) if tuned else (record.default_qps, record.default_qps_ci)
    to_engine, to_default = qps / engine.items_per_s, qps / record.default_qps
    if tuned is None:
        print("the recommended configuration is the default service itself: no tuned one beat it")
    print(f"tuned service {record.recommended} QPS {qps:.2f} {ci(qps_ci)} / best offline "
          f"{engine.label} {engine.items_per_s:.2f} {ci(engine.items_ci)} items/s = {to_engine:.3f} "
          f"{ratio_bounds(qps_ci, engine.items_ci)}  (target >= {SERVICE_VS_ENGINE})")
    print(f"tuned / default service QPS = {to_default:.3f}  (default {record.default_qps:.2f} "
          f"{ci(record.default_qps_ci)}; target >= 1.0)")
    save("tune", block, {"tuned_vs_offline": to_engine, "tuned_vs_default": to_default}, tune=asdict(record))
    misses = [f"tuned service / best offline {to_engine:.3f} < {SERVICE_VS_ENGINE}"] * (to_engine < SERVICE_VS_ENGINE)
    misses += [f"tuned / default service {to_default:.3f} < 1.0"] * (to_default < 1.0)
    return verdict(misses)
