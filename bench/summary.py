"""The one-screen summary table printed at the end of a run."""

from __future__ import annotations

from bench.results import RunResult, summary_row


def fmt(value, spec: str = ".1f", empty: str = "—") -> str:
    return empty if value is None else format(value, spec)


def print_summary(run: RunResult, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(stderr=False, width=160)
    table = Table(title=f"run {run.run_id} — {run.model.get('spec')}"
                        f"{' (SYNTHETIC weights: labels meaningless)' if run.model.get('synthetic') else ''}")
    for col in ("cell", "status", "P50 ms [95% CI]", "P95 ms", "P99 ms", "items/s", "peak RSS MB", "CPU %",
                "J/item", "load s", "note"):
        table.add_column(col, justify="left" if col in ("cell", "status", "note") else "right")
    for cell in run.cells:
        r = summary_row(cell)
        if cell.status != "ok":
            table.add_row(cell.spec.key, f"[yellow]{cell.status}[/]", *[""] * 8, f"[dim]{(cell.reason or '')[:60]}[/]")
            continue
        ci = f"{fmt(r['p50_ms'])} [{fmt(r['p50_ci_lo_ms'])}–{fmt(r['p50_ci_hi_ms'])}]"
        energy = fmt(r["energy_j_per_item"], ".3f") + ("*" if cell.energy.get("estimated") else "")
        table.add_row(cell.spec.key, "ok", ci, fmt(r["p95_ms"]), fmt(r["p99_ms"]), fmt(r["throughput_items_s"], ".2f"),
                      fmt(r["peak_rss_mb"], ".0f"), fmt(r["mean_cpu_percent"], ".0f"), energy, fmt(r["load_total_s"], ".2f"),
                      cell.stop_reason or "")
    console.print(table)
    if any(c.energy.get("estimated") for c in run.cells):
        console.print("* energy estimated from CPU utilisation × TDP (no RAPL/NVML counter): see results.json")
