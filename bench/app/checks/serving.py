"""`check serving`: does the service keep its engine fed? For ORT INT8 and the best CPU engine on this CPU, each in
fresh service processes (interleaved), at 16 users:

- efficiency: the in-service model time per call / the engine's time at the same shape (from /metrics: every
  call's shape bucket, timed alone at warm-up on the thread that serves it); target ≤ 1.15;
- saturated service QPS / the engine's items/s on service-shaped batches (the harness's `service` workload: the same
  length groups and buckets), each measured in fresh processes; target ≥ 0.90;
- new shapes after warm-up: target 0;
- and the shape costs themselves (bench.app.checks.shapes): a new shape's first call against a seen one's, per thread.

Each ratio carries a t interval across the processes (on logs); targets are judged on the point estimate, with the
interval printed beside it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from bench.app.checks.common import cells_json, prepare_model, save, verdict
from bench.app.checks.cpu import Ratio, contenders
from bench.core import paths

USERS, MAX_BATCH = 16, 8
TARGET_EFFICIENCY, TARGET_SATURATION = 1.15, 0.90


@dataclass(frozen=True)
class Served:
    """One backend's figures: per fresh service process and per fresh engine process."""

    backend: str
    efficiency: list[float]
    qps: list[float]
    new_shapes: float
    padding_share: float | None
    engine_items: list[float]

    def efficiency_ratio(self) -> Ratio:
        return Ratio.of(self.backend, self.efficiency, [1.0] * len(self.efficiency))

    def saturation_ratio(self) -> Ratio:
        k = min(len(self.qps), len(self.engine_items))
        return Ratio.of(self.backend, self.qps[:k], self.engine_items[:k])


def check_serving(model: str = "twin", processes: int = 3, duration_s: float = 15.0) -> int:
    from bench.app.checks.shapes import probe_costs
    from bench.measure.isa import CpuIsa

    isa = CpuIsa.here()
    model_dir, onnx_dir, what = prepare_model(model)
    names = contenders(isa)
    engine, cells = engine_items(model, names, model_dir, onnx_dir, processes)
    levels = service_levels(model, names, processes, duration_s)
    served = [summarise(n, levels[n], engine.get(n, [])) for n in names]
    shapes = {n: probe_costs(n, model_dir, onnx_dir) for n in names}
    print_serving(served, shapes)
    figures = {"isa": isa.describe(), "users": USERS, "max_batch": MAX_BATCH,
               "served": [asdict(s) for s in served], "shape_costs": shapes}
    loadtests = [asdict(lv) for n in names for lv in levels[n]]
    print(f"saved: {save('serving', what, figures, cells=cells_json(cells), loadtests=loadtests)}")
    return verdict(serving_misses(served))


def engine_items(model: str, names: tuple[str, ...], model_dir, onnx_dir, processes: int) -> tuple[dict, dict]:
    """Each backend's items/s on service-shaped batches of MAX_BATCH, per fresh process (interleaved)."""
    from bench.engine.harness import RunConfig, measure_cells

    cfg = RunConfig(model=model, backends=names, batches=(1,), service_shaped=(MAX_BATCH,), processes=processes)
    cells = measure_cells(cfg, (), model_dir, onnx_dir, on_cell=lambda _c: None)
    out = {}
    for cell in cells.values():
        if cell.spec.workload == "service" and cell.status == "ok":
            out[cell.spec.backend] = [len(r.latencies_s) * cell.spec.batch / r.window_s for r in cell.runs]
    return out, cells


def service_levels(model: str, names: tuple[str, ...], processes: int, duration_s: float) -> dict[str, list]:
    """USERS closed-loop users against each backend's service, a fresh service process each time, the backends
    taking turns (A B, B A, …) so a drift of the host lands on all alike."""
    from tqdm import tqdm

    from loadtests.service_proc import ServiceVariant
    from loadtests.sweep import alternating, sweep_variant
    from loadtests.windows import SweepConfig

    # Two warm-up runs per shape: the engine's time at each shape (the efficiency's reference) is then a call that
    # no longer pays for the shape itself
    variants = {n: ServiceVariant.of(f"{n} service", backend=n, max_batch=MAX_BATCH, cache_size=0, warmup_runs=2,
                                     warm_max_length=512) for n in names}
    cfg = SweepConfig(model=model, variants=tuple(variants.values()), users=(USERS,), duration_s=duration_s,
                      ramp_s=2.0, repeats=1)
    out_dir = paths.ensure_writable(paths.results_dir() / f"check-serving-{time.strftime('%Y%m%d-%H%M%S')}")
    levels: dict[str, list] = {n: [] for n in names}
    with tqdm(total=processes * len(names), desc="check serving", unit="service", file=sys.stderr) as bar:
        for p in range(processes):
            for name in alternating(names, p):
                levels[name] += sweep_variant(variants[name], cfg, out_dir / f"p{p}", bar, [(USERS, None)])
    return levels


def summarise(name: str, levels: list, engine: list[float]) -> Served:
    shaped = [lv for lv in levels if lv.status == "ok" and lv.shapes and lv.shapes.efficiency]
    pads = [lv.shapes.padding_share for lv in shaped if lv.shapes.padding_share is not None]
    return Served(name, [lv.shapes.efficiency for lv in shaped], [lv.qps for lv in shaped if lv.qps],
                  sum(lv.shapes.new_shapes for lv in shaped), float(np.mean(pads)) if pads else None, engine)


def serving_misses(served: list[Served]) -> list[str]:
    misses = []
    for s in served:
        if len(s.efficiency) < 2 or len(s.engine_items) < 2:
            misses.append(f"{s.backend}: too few measured processes (service {len(s.efficiency)}, engine "
                          f"{len(s.engine_items)})")
            continue
        eff, sat = s.efficiency_ratio(), s.saturation_ratio()
        if eff.value > TARGET_EFFICIENCY:
            misses.append(f"{s.backend}: in-service model time / engine at the same shapes {eff.value:.3f} > "
                          f"{TARGET_EFFICIENCY}")
        if sat.value < TARGET_SATURATION:
            misses.append(f"{s.backend}: saturated service QPS / engine items/s on service-shaped batches "
                          f"{sat.value:.3f} < {TARGET_SATURATION}")
        if s.new_shapes:
            misses.append(f"{s.backend}: {s.new_shapes:g} model calls met a new shape after warm-up (target 0)")
    return misses


def print_serving(served: list[Served], shapes: dict) -> None:
    for s in served:
        print(f"{s.backend} at {USERS} users, max batch {MAX_BATCH}:")
        if len(s.efficiency) > 1:
            print(f"  in-service model time / engine at the same shapes: {s.efficiency_ratio().text()} "
                  f"(target ≤ {TARGET_EFFICIENCY})")
        if len(s.qps) > 1 and len(s.engine_items) > 1:
            print(f"  saturated service QPS / engine items/s on service-shaped batches: {s.saturation_ratio().text()}"
                  f" (target ≥ {TARGET_SATURATION}); service {np.mean(s.qps):.1f} req/s, engine "
                  f"{np.mean(s.engine_items):.1f} items/s")
        pad = f"{s.padding_share:.1%}" if s.padding_share is not None else "not measured"
        print(f"  new shapes after warm-up: {s.new_shapes:g} (target 0); pad tokens: {pad}")
        cost = shapes.get(s.backend)
        if cost:
            print(f"  shape cost: {cost['text']}")
