"""The one-screen summary table printed at the end of a run."""

from __future__ import annotations

from collections import defaultdict

from bench.results import CellResult, RunResult, summary_row


def fmt(value, spec: str = ".1f", empty: str = "—") -> str:
    return empty if value is None else format(value, spec)


def short_key(cell: CellResult) -> str:
    s = cell.spec
    shape = f"L{s.seq_len}" if s.workload == "bucket" else "corpus"
    return f"{s.backend} b{s.batch} {shape}" + (f" t{s.threads}" if s.threads else "")


def print_summary(run: RunResult, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=150)
    synthetic = " (SYNTHETIC weights: labels meaningless)" if run.model.get("synthetic") else ""
    table = Table(title=f"run {run.run_id} — {run.model.get('spec')}{synthetic}")
    for col in ("cell", "P50 ms [95% CI]", "P95 ms", "P99 ms", "items/s", "RSS MB", "CPU %", "J/item", "load s",
                "stop"):
        table.add_column(col, justify="left" if col in ("cell", "stop") else "right", no_wrap=True)
    others: dict = defaultdict(list)
    for cell in run.cells:
        if cell.status != "ok":
            others[(cell.status, cell.reason)].append(short_key(cell))
            continue
        r = summary_row(cell)
        ci = f"{fmt(r['p50_ms'])} [{fmt(r['p50_ci_lo_ms'])}–{fmt(r['p50_ci_hi_ms'])}]"
        energy = fmt(r["energy_j_per_item"], ".3f") + ("*" if cell.energy.get("estimated") else "")
        table.add_row(short_key(cell), ci, fmt(r["p95_ms"]), fmt(r["p99_ms"]), fmt(r["throughput_items_s"], ".2f"),
                      fmt(r["peak_rss_mb"], ".0f"), fmt(r["mean_cpu_percent"], ".0f"), energy,
                      fmt(r["load_total_s"], ".2f"), cell.stop_reason or "")
    console.print(table)
    for (status, reason), keys in others.items():
        console.print(f"[yellow]{status}[/] ({reason}): {', '.join(keys)}")
    if any(c.energy.get("estimated") for c in run.cells):
        console.print("* energy estimated from CPU utilisation × TDP (no RAPL/NVML counter): see results.json")
