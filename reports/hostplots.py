"""Figures of a report over several runs, coloured by host (one colour per machine, one line style per backend or
configuration), and the break-even plot of the capacity plan. Same conventions as reports.plots: matplotlib's
object API, ASCII labels, {"id", "title", "png"} or {"id", "title", "note"} when there is nothing to draw."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import ScalarFormatter

from reports.common import batch1_corpus, cell_label
from reports.hosts import HostRun
from reports.plan import TRAFFIC_RANGE, PlanInputs, PlanRow, crossings, priced_rows
from reports.plots import figure, png, skipped
from reports.service import closed, service_configs

COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
STYLES = ("-", "--", ":", "-.")


def ascii_text(value: str) -> str:
    """Plot labels stay ASCII: matplotlib's default font has no CJK glyphs. Our own symbols get ASCII spellings
    first ("2×1t" would read "2?1t")."""
    for symbol, spelled in (("×", "x"), ("–", "-"), ("—", "-"), ("≤", "<="), ("≥", ">="), ("·", "-")):
        value = value.replace(symbol, spelled)
    return value.encode("ascii", "replace").decode("ascii")


def colour_of(hosts: list[str], host: str) -> str:
    return COLOURS[hosts.index(host) % len(COLOURS)]


def latency_cdf_by_host(hosts: list[HostRun]) -> dict:
    title = "Latency CDF per backend and host (batch 1)"
    series = [(h.label, c) for h in hosts for c in batch1_corpus(h.run) if c.status == "ok"]
    if not series:
        return skipped("cdf-hosts", title, "no measured batch-1 cells on any host")
    fig, (ax,) = figure()
    labels = [h.label for h in hosts]
    backends = list(dict.fromkeys(cell_label(c) for _, c in series))
    for host, cell in series:
        data = np.sort(np.asarray(cell.latencies_s)) * 1000
        ax.step(data, np.arange(1, data.size + 1) / data.size, where="post", color=colour_of(labels, host),
                ls=STYLES[backends.index(cell_label(cell)) % len(STYLES)],
                label=ascii_text(f"{host}: {cell_label(cell)}"))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="latency per call (ms, log scale)", ylabel="fraction of calls <= x", ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    return png(fig, "cdf-hosts", title)


def qps_by_host(hosts: list[HostRun]) -> dict:
    title = "QPS vs concurrency per service configuration and host"
    lines = [(h.label, name, closed(h.run, name)) for h in hosts for name in service_configs(h.run)]
    lines = [line for line in lines if line[2]]
    if not lines:
        return skipped("qps-hosts", title, "no closed-loop load tests on any host")
    fig, (ax,) = figure()
    labels = [h.label for h in hosts]
    names = list(dict.fromkeys(name for _, name, _ in lines))
    for host, name, points in lines:
        ax.errorbar([p.users for p in points], [p.qps for p in points], yerr=errors(points), marker="o",
                    capsize=3, color=colour_of(labels, host), ls=STYLES[names.index(name) % len(STYLES)],
                    label=ascii_text(f"{host}: {name}"))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set(xlabel="concurrent users (closed loop)", ylabel="QPS (requests/s), 95% CI")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    return png(fig, "qps-hosts", title)


def errors(points) -> list:
    lows = [p.qps - p.qps_ci[0] if p.qps_ci else 0.0 for p in points]
    highs = [p.qps_ci[1] - p.qps if p.qps_ci else 0.0 for p in points]
    return [lows, highs]


def break_even(rows: list[PlanRow], plan: PlanInputs, hosts: list[str]) -> dict:
    """Monthly cost against mean traffic, one step line per host/configuration; the crossings of the cheapest
    choice are marked, and the planned traffic is the dashed line."""
    title = "Break-even: monthly cost vs traffic (log scales), per host and configuration"
    usable = priced_rows(rows)
    if not usable:
        return skipped("break-even", title, "no configuration has a capacity within the SLO")
    fig, (ax,) = figure()
    traffic = np.geomspace(*TRAFFIC_RANGE, 801)
    configs = list(dict.fromkeys(r.config for r in usable))
    for r in usable:
        cost = np.array([r.monthly_usd(plan, t) for t in traffic])
        ax.step(traffic, cost, where="post", color=colour_of(hosts, r.host),
                ls=STYLES[configs.index(r.config) % len(STYLES)], label=ascii_text(f"{r.host}: {r.config}"))
    for x in crossings(usable, plan):
        ax.axvline(x, color="black", lw=0.6, ls=":")
    ax.axvline(plan.traffic_rps, color="red", lw=1, ls="--", label=f"planned: {plan.traffic_rps:g} req/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="mean traffic (req/s); dotted: cheapest choice changes", ylabel="USD per month")
    # below the axes, the figure taller by its lines: inside, it hid the lines (one per host and configuration)
    fig.set_size_inches(5.4, 3.6 + 0.15 * (len(usable) + 1))
    fig.legend(fontsize=7, loc="outside lower center")
    return png(fig, "break-even", title)
