"""The capacity plan: for a target traffic, how many instances each configuration on each host needs, what they
cost and use per month, and where on a traffic axis one host's configuration becomes cheaper than another's.

Capacity per instance is the searched open-loop QPS at the SLO where the run has one, else the best load-test
level within the SLO (closed-loop grid, not searched), else engine throughput (engine-only, not load-tested);
every row says which. Instances = ceil(traffic × peak factor / (capacity × target utilisation)); a month is
730 hours (8,760 / 12). Prices are inputs; energy comes from the backend's batch-1 engine cell (measured or
estimated, as that cell says; a GPU's board energy apart from the host CPU's) and counts the inferences' work,
not the idle power of provisioned instances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.core.records import CellResult
from bench.core.summary import board_energy, host_cpu_energy
from reports.common import on_gpu
from reports.decision import ENGINE, Candidate
from reports.gpu import CPU_ROW, NO_BOARD, vram
from reports.hosts import SOURCES, HostRun
from reports.sections import ENERGY_SOURCES

HOURS_PER_MONTH = 730.0
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600.0
TRAFFIC_RANGE = (1.0, 10_000.0)  # req/s: the break-even plot's axis
SEARCHED, GRID, ENGINE_ONLY = ("searched QPS at the SLO (open loop)", "best load-test level within the SLO "
                               "(grid, not searched)", "engine-only, not load-tested")


@dataclass(frozen=True)
class PlanInputs:
    """The traffic to plan for and the headroom: peak factor (peak / mean traffic) and target utilisation
    (the share of an instance's capacity to plan on)."""

    traffic_rps: float
    peak_factor: float = 1.0
    target_utilisation: float = 1.0

    def needed(self, traffic: float | np.ndarray):
        """Capacity to provision for mean traffic `traffic`."""
        return traffic * self.peak_factor / self.target_utilisation


@dataclass(frozen=True)
class PlanRow:
    """One configuration on one host, with its capacity per instance (None: no figure, `reason` says why)."""

    name: str  # unique in the report
    config: str
    host: str
    device: str
    hour_usd: float
    price_source: str
    basis: str
    capacity: float | None = None
    capacity_ci: tuple = ()
    reason: str | None = None
    energy_j: float | None = None  # the host CPU's, per inference
    energy_label: str = "no energy reading"
    memory_bytes: int | None = None
    memory_label: str = "no memory reading"
    gpu_energy_j: float | None = None  # a GPU configuration's board (NVML), per inference: never added to energy_j
    gpu_energy_label: str = "no GPU board energy reading"

    def instances(self, plan: PlanInputs, traffic: float, capacity: float | None = None) -> int | None:
        cap = self.capacity if capacity is None else capacity
        return max(1, math.ceil(plan.needed(traffic) / cap - 1e-9)) if cap and cap > 0 else None

    def monthly_usd(self, plan: PlanInputs, traffic: float, capacity: float | None = None) -> float | None:
        n = self.instances(plan, traffic, capacity)
        return None if n is None else n * self.hour_usd * HOURS_PER_MONTH

    def cost_range(self, plan: PlanInputs, traffic: float) -> tuple:
        """Monthly cost at the capacity CI's ends (high capacity: fewer instances); () without a usable CI."""
        if not self.capacity_ci or self.capacity_ci[0] <= 0:
            return ()
        return tuple(self.monthly_usd(plan, traffic, c) for c in (self.capacity_ci[1], self.capacity_ci[0]))

    def energy_kwh(self, plan: PlanInputs, joules: float | None = None) -> float | None:
        """kWh per month of the host CPU's energy per inference (or `joules` per inference: the GPU board's)."""
        joules = self.energy_j if joules is None else joules
        if joules is None:
            return None
        return joules * plan.traffic_rps * SECONDS_PER_MONTH / 3.6e6


def plan_row(host: HostRun, c: Candidate) -> PlanRow:
    """A decision candidate of `host` as a plan row, priced as the decision table prices it."""
    basis = ENGINE_ONLY if c.kind == ENGINE else SEARCHED if c.searched else GRID
    cell = engine_cell(host.run.cells, c.backend)
    energy, energy_label = energy_of(cell, c.kind)
    memory, memory_label = memory_of(cell)
    source = SOURCES[host.price_source] if host.hour_usd else SOURCES["example"]
    board, board_label = board_energy_of(cell, c.kind)
    return PlanRow(c.name, c.config_name, host.label, c.device, c.price, source, basis, c.qps, tuple(c.qps_ci),
                   c.reason if c.qps is None else None, energy, energy_label, memory, memory_label, board,
                   board_label)


def engine_cell(cells: tuple[CellResult, ...], backend: str | None) -> CellResult | None:
    """The backend's measured batch-1 corpus cell: what one instance's model costs in energy and memory."""
    return next((c for c in cells if c.spec.backend == backend and c.status == "ok" and c.spec.batch == 1
                 and c.spec.workload == "corpus"), None)


def energy_of(cell: CellResult | None, kind: str) -> tuple[float | None, str]:
    """The host CPU's energy per inference (every backend's: RAPL or the estimate) and where it comes from."""
    per_item, source = host_cpu_energy(cell) if cell is not None else (None, None)
    if per_item is None:
        return None, "no host CPU energy reading (no measured engine cell of this backend)"
    where = "" if kind == ENGINE else ", from its engine cell at batch 1"
    return per_item, f"{ENERGY_SOURCES.get(source or '', 'unknown source')}{where}"


def board_energy_of(cell: CellResult | None, kind: str) -> tuple[float | None, str]:
    """A GPU backend's board energy per inference (NVML); a CPU backend has none to report."""
    if cell is None or not on_gpu(cell.spec.backend):
        return None, CPU_ROW if cell is not None else "no measured engine cell of this backend"
    per_item = board_energy(cell)[0]
    where = "" if kind == ENGINE else ", from its engine cell at batch 1"
    return per_item, NO_BOARD if per_item is None else f"measured (NVML){where}"


def memory_of(cell: CellResult | None) -> tuple[int | None, str]:
    if cell is None:
        return None, "no measured engine cell of this backend"
    if on_gpu(cell.spec.backend):
        value, scope = vram(cell)
        return value, f"VRAM, {scope}" if value else scope
    return cell.resources.peak_rss_bytes, "peak RSS of the engine cell"


def priced_rows(rows: list[PlanRow]) -> list[PlanRow]:
    """The rows that compete in the break-even: those with a capacity, except engine-only rows of a host that
    has load-tested ones (engine throughput leaves out HTTP and queueing, so it would win unfairly)."""
    served = {r.host for r in rows if r.capacity and r.basis != ENGINE_ONLY}
    return [r for r in rows if r.capacity and not (r.basis == ENGINE_ONLY and r.host in served)]


def cheapest(rows: list[PlanRow], plan: PlanInputs, traffic: float, pick=None) -> list[PlanRow]:
    """The rows of lowest monthly cost at `traffic` (several: an exact tie); `pick(row)` overrides capacity."""
    costs = [r.monthly_usd(plan, traffic, pick(r) if pick else None) for r in rows]
    low = min(costs)
    return [r for r, c in zip(rows, costs) if math.isclose(c, low, rel_tol=1e-9)]


def segments(rows: list[PlanRow], plan: PlanInputs, pick=None, points: int = 801) -> list[tuple]:
    """[(from_rps, to_rps, winners)] over TRAFFIC_RANGE: where the cheapest host (and device) stays the same.
    `winners` are the rows cheapest at the most traffic points of the segment (several: equal everywhere)."""
    grid = np.geomspace(*TRAFFIC_RANGE, points)
    best = [cheapest(rows, plan, t, pick) for t in grid]
    keys = [box(b) for b in best]
    out, start = [], 0
    for i in range(1, len(grid) + 1):
        if i == len(grid) or keys[i] != keys[start]:
            out.append((float(grid[start]), float(grid[i - 1]), most_often(best[start:i])))
            start = i
    return out


def most_often(groups: list[list[PlanRow]]) -> list[PlanRow]:
    counts: dict = {}
    for group in groups:
        for row in group:
            counts[row.name] = counts.get(row.name, 0) + 1
    top = max(counts.values())
    return [r for r in dict.fromkeys(r for g in groups for r in g) if counts[r.name] == top]


def box(winners: list[PlanRow]) -> tuple:
    """What to buy: the hosts and devices of the cheapest rows (configurations on one box are one choice)."""
    return tuple(sorted({(r.host, r.device) for r in winners}))


def crossings(rows: list[PlanRow], plan: PlanInputs, pick=None) -> list[float]:
    return [seg[0] for seg in segments(rows, plan, pick)[1:]]
