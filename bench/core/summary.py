"""Flat views of a run: summary.csv (one row per cell) and the one-screen table printed at the end of a run."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from bench.core.records import CellResult, Energy
from bench.core.run_records import ModelRecord

if TYPE_CHECKING:
    from rich.console import Console

SUMMARY_COLUMNS = ("key", "backend", "batch", "workload", "seq_len", "threads", "status", "reason", "processes", "n",
                   "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "stdev_ms", "p50_ci_lo_ms", "p50_ci_hi_ms",
                   "p95_ci_lo_ms", "p95_ci_hi_ms", "process_spread", "throughput_items_s", "peak_rss_mb",
                   "mean_cpu_percent_window", "energy_j_per_item", "energy_source", "energy_estimated",
                   "synthetic_weights", "load_total_s", "stop_reason",
                   # GPU cells (empty for CPU cells): the board's energy beside the host CPU's above (never one
                   # column for both), VRAM and whose it is, what ran
                   "gpu_energy_j_per_item", "gpu_energy_source", "peak_vram_mb", "vram_scope", "providers", "tf32",
                   "engine_build_s", "gpu_device")



class Run(Protocol):
    """What these views read of a run: a bench.core.results.RunResult (named by its shape, so that results, which
    writes summary.csv, stays the only one of the two importing the other)."""

    @property
    def run_id(self) -> str: ...

    @property
    def model(self) -> ModelRecord: ...

    @property
    def cells(self) -> tuple[CellResult, ...]: ...

def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def summary_row(c: CellResult, synthetic: bool | None = None) -> dict[str, Any]:
    s = c.stats
    ci: Callable[[str, int], float | None] = lambda stat, i: ms(s[f"{stat}_ci95"][i]) if s else None  # noqa: E731
    rss = c.resources.peak_rss_bytes
    return {
        "key": c.spec.key, "backend": c.spec.backend, "batch": c.spec.batch, "workload": c.spec.workload,
        "seq_len": c.spec.seq_len, "threads": c.spec.threads, "status": c.status, "reason": c.reason,
        "processes": len(c.runs), "n": s.get("n"),
        **{f"{k}_ms": ms(s.get(k)) for k in ("mean", "p50", "p90", "p95", "p99", "stdev")},
        "p50_ci_lo_ms": ci("p50", 0), "p50_ci_hi_ms": ci("p50", 1),
        "p95_ci_lo_ms": ci("p95", 0), "p95_ci_hi_ms": ci("p95", 1), "process_spread": s.get("process_spread"),
        "throughput_items_s": c.throughput, "peak_rss_mb": rss / 2**20 if rss else None,
        "mean_cpu_percent_window": c.meta.worker_cpu_percent_window, **host_cpu_columns(c),
        "synthetic_weights": synthetic, "load_total_s": c.load.total_s, "stop_reason": c.stop_reason,
        **gpu_columns(c),
    }


def covers_gpu(energy: Energy) -> bool:
    """Whether a cell's energy figure is the GPU board's (NVML), with the host CPU's beside it; files written
    before `covers` existed say so by their source alone."""
    return energy.covers == "gpu" or (energy.covers is None and (energy.source or "").startswith("nvml"))


def host_cpu_energy(c: CellResult) -> tuple[float | None, str | None]:
    """The host CPU's energy per item and its source ("rapl" or "estimate"): a CPU cell's energy, a GPU cell's
    host share measured beside the board's (None where the cell has none)."""
    e, n = c.energy, c.items_measured
    joules, source = (e.host_cpu_energy_j, e.host_cpu_source) if covers_gpu(e) else (e.energy_j, e.source)
    return (joules / n if joules is not None and n else None), source


def board_energy(c: CellResult) -> tuple[float | None, str | None]:
    """The GPU board's energy per item (NVML: idle included, host CPU excluded) and its source ("nvml",
    "nvml-power"); (None, None) for CPU cells and for GPU cells whose NVML gave neither energy nor power."""
    e = c.energy
    if not covers_gpu(e):
        return None, None
    return c.energy_per_item_j, e.source


def host_cpu_columns(c: CellResult) -> dict[str, Any]:
    per_item, source = host_cpu_energy(c)
    return {"energy_j_per_item": per_item, "energy_source": source,
            "energy_estimated": None if source is None else source == "estimate"}


def peak_vram(c: CellResult) -> tuple[int | None, str | None]:
    """A cell's peak VRAM and whose it is: "per-process" (NVML matched the worker's PID), "device-wide" (the whole
    board: in a container NVML lists host PIDs), "torch allocator" (no NVML figure: torch's own peak); (None, None)
    without a reading (every CPU cell)."""
    r, torch_peak = c.resources, c.meta.torch_max_memory_allocated_bytes
    if r.peak_proc_vram_bytes and r.vram_scope != "device":
        return r.peak_proc_vram_bytes, "per-process"
    if r.peak_vram_bytes:
        return r.peak_vram_bytes, "device-wide"
    return (torch_peak, "torch allocator") if torch_peak else (None, None)


def gpu_columns(c: CellResult) -> dict[str, Any]:
    vram, scope = peak_vram(c)
    per_item, source = board_energy(c)
    return {"gpu_energy_j_per_item": per_item, "gpu_energy_source": source,
            "peak_vram_mb": vram / 2**20 if vram else None, "vram_scope": scope,
            "providers": " ".join(c.meta.providers) or None, "tf32": c.meta.tf32,
            "engine_build_s": c.load.engine_build_s, "gpu_device": c.meta.gpu_device}


def summary_csv(run: Run) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(summary_row(c, run.model.synthetic) for c in run.cells)
    return buf.getvalue()


def fmt(value: object, spec: str = ".1f", empty: str = "—") -> str:
    return empty if value is None else format(value, spec)


def short_key(cell: CellResult) -> str:
    s = cell.spec
    shape = f"L{s.seq_len}" if s.workload == "bucket" else s.workload
    return f"{s.backend} b{s.batch} {shape}" + (f" t{s.threads}" if s.threads else "")


def print_summary(run: Run, console: Console | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=150)
    synthetic = " (SYNTHETIC weights: labels meaningless)" if run.model.synthetic else ""
    table = Table(title=f"run {run.run_id} — {run.model.spec}{synthetic}")
    for col in ("cell", "P50 ms [95% CI]", "procs", "P95 ms", "P99 ms", "items/s", "RSS MB", "VRAM MB", "CPU %",
                "CPU J/item", "GPU J/item", "load s", "stop"):
        table.add_column(col, justify="left" if col in ("cell", "stop") else "right", no_wrap=True)
    others: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for cell in run.cells:
        if cell.status != "ok":
            others[(cell.status, cell.reason)].append(short_key(cell))
            continue
        r = summary_row(cell)
        ci = f"{fmt(r['p50_ms'])} [{fmt(r['p50_ci_lo_ms'])}–{fmt(r['p50_ci_hi_ms'])}]"
        energy = fmt(r["energy_j_per_item"], ".3f") + ("*" if r["energy_estimated"] else "")
        table.add_row(short_key(cell), ci, str(r["processes"]), fmt(r["p95_ms"]), fmt(r["p99_ms"]),
                      fmt(r["throughput_items_s"], ".2f"), fmt(r["peak_rss_mb"], ".0f"), fmt(r["peak_vram_mb"], ".0f"),
                      fmt(r["mean_cpu_percent_window"], ".0f"), energy, fmt(r["gpu_energy_j_per_item"], ".3f"),
                      fmt(r["load_total_s"], ".2f"), cell.stop_reason or "")
    console.print(table)
    for (status, reason), keys in others.items():
        console.print(f"[yellow]{status}[/] ({reason}): {', '.join(keys)}")
    if any(host_cpu_energy(c)[1] == "estimate" for c in run.cells):
        console.print("* host CPU energy estimated from CPU utilisation × TDP (no RAPL counter): see results.json")
