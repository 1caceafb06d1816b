"""compare's statistics on simulated runs (numpy, seconds): A/A comparisons of 7 cells × 3 metrics, 3 fresh
processes × 150 samples a side, processes 5 % apart, flag something in at most 5 % of comparisons (family-wise,
after Holm); a real 10 % slowdown of every cell is found at the rate printed here (low with 3 processes: compare
says how many it needs) and mostly with 8; --fail-on trips only past its threshold."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.core.records import CellResult, CellSpec, ProcessRun
from bench.core.results import load_run
from reports.compare import compare_runs, holm

RUN_FILE = Path(__file__).parent / "data" / "report_run.json"
CELLS, PROCESSES, SAMPLES, SPREAD, NOISE = 7, 3, 150, 0.05, 0.03


@pytest.fixture(scope="module")
def base():
    return load_run(RUN_FILE)


def simulated(rng: np.random.Generator, factor: float = 1.0, processes: int = PROCESSES) -> tuple:
    """CELLS cells, each PROCESSES fresh processes whose level differs by SPREAD (log SD) around the cell's true
    latency × factor, and SAMPLES samples with NOISE within each."""
    cells = []
    for i in range(CELLS):
        runs = []
        for _ in range(processes):
            level = (0.01 + 0.002 * i) * factor * np.exp(rng.normal(0.0, SPREAD))
            lat = level * np.exp(rng.normal(0.0, NOISE, SAMPLES))
            runs.append(ProcessRun(latencies_s=tuple(float(x) for x in lat), window_s=float(lat.sum())))
        cells.append(CellResult(CellSpec("ort-int8-cpu", batch=i + 1), "ok", runs=tuple(runs), items_per_batch=i + 1))
    return tuple(cells)


def flagged(cmp) -> bool:
    return any(ch.significant for c in cmp.cells for ch in c.changes)


def rates(base, factor: float, reps: int, seed: int, processes: int = PROCESSES) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        a = replace(base, cells=simulated(rng, 1.0, processes))
        b = replace(base, run_id="b", cells=simulated(rng, factor, processes))
        hits += flagged(compare_runs(a, b))
    return hits / reps


@pytest.mark.e2e
def test_a_over_a_flags_at_most_five_percent_of_comparisons_and_ten_percent_is_found_at_a_reported_rate(base):
    false_positive = rates(base, 1.0, 400, seed=1)
    power = rates(base, 1.10, 200, seed=2)
    power_8 = rates(base, 1.10, 100, seed=3, processes=8)
    print(f"\ncompare on simulated runs ({CELLS} cells × 3 metrics, {SAMPLES} samples a process, processes "
          f"{SPREAD:.0%} apart): A/A family-wise false positives {false_positive:.1%} with {PROCESSES} processes; "
          f"a 10 % slowdown of every cell found in {power:.1%} of comparisons with {PROCESSES} processes a run, "
          f"{power_8:.1%} with 8")
    assert false_positive <= 0.05
    assert power > 2 * false_positive and power_8 > 0.8  # more processes: the power statement's remedy works


def test_fail_on_trips_only_past_its_threshold(base):
    rng = np.random.default_rng(3)
    a = replace(base, cells=simulated(rng))
    slower = compare_runs(a, replace(base, run_id="b", cells=tuple(scaled(c, 1.30) for c in a.cells)),
                          thresholds=["p50:+5%"])
    assert slower.exit_code == 1 and len(slower.failed) == CELLS
    # +30 % against a +50 % limit, and +3 % against +5 %: real changes (the same processes, scaled) within the limit
    assert compare_runs(a, replace(base, run_id="b", cells=tuple(scaled(c, 1.30) for c in a.cells)),
                        thresholds=["p50:+50%"]).exit_code == 0
    assert compare_runs(a, replace(base, run_id="b", cells=tuple(scaled(c, 1.03) for c in a.cells)),
                        thresholds=["p50:+5%"]).exit_code == 0


def scaled(cell: CellResult, factor: float) -> CellResult:
    return replace(cell, runs=tuple(replace(r, latencies_s=tuple(x * factor for x in r.latencies_s),
                                            window_s=r.window_s * factor) for r in cell.runs))


def test_holm_rejects_in_order_and_stops_at_the_first_failure():
    assert holm([0.001, 0.04, 0.012, 0.5]) == [True, False, True, False]  # .001 < .0125, .012 < .0167, .04 > .025
    assert holm([0.001, 0.04, 0.02, 0.5]) == [True, False, False, False]  # .02 > .0167 stops the steps
    assert holm([0.2, 0.3]) == [False, False] and holm([]) == []
