"""Servers side by side (section 3.3): structbench's service beside peer servers or URLs that the same run loaded
(loadtests/targets.py), each on its own protocol — QPS at the SLO, the saturated closed-loop QPS, the serving tax
against the engine's own throughput at the same threads, CPU on both sides, failures by cause."""

from __future__ import annotations

from bench.core.results import RunResult
from reports import fmt
from reports.common import column, label, na, num, table, text

NOTES = ("Each server serves the same ONNX INT8 file with the same ONNX Runtime threads where structbench started "
         "it (a peer from its own virtual environment, loadtests/peers/); a URL target is whatever runs there. "
         "Servers were loaded interleaved, in fresh processes, on the same host.",
         "Serving tax: saturated QPS (the most users measured) / the engine's items/s at its best batch (ORT INT8 "
         "cells of this run): what is left of the engine after HTTP, JSON, tokenising and batching. Server CPU "
         "per request: the server's process tree (our service: its /metrics), not measured for a server elsewhere.")


def engine_items_s(run: RunResult) -> float | None:
    """The ORT INT8 CPU engine's best throughput among the run's cells (None: no such cell)."""
    rates = [c.throughput for c in run.cells if c.spec.backend == "ort-int8-cpu" and c.status == "ok" and c.throughput]
    return max(rates, default=None)


def servers_table(run: RunResult) -> dict | None:
    """None unless the run loaded some server other than ours (older and ordinary runs keep their tables)."""
    configs = {lv.config.label: lv.config for lv in run.loadtests}
    configs.update({s.config.label: s.config for s in run.slo_searches})
    if all(c.target == "structbench" for c in configs.values()):
        return None
    engine = engine_items_s(run)
    cols = [column("Server", False), column("Target", False), column("Protocol", False),
            column("QPS at the SLO [95% CI]"), column("Saturated QPS"), column("Serving tax"),
            column("Server CPU ms/request"), column("Client CPU %"), column("Failures by cause", False)]
    rows = []
    for name, config in configs.items():
        search = next((s for s in run.slo_searches if s.config.label == name), None)
        levels = [lv for lv in run.loadtests if lv.config.label == name and lv.status == "ok" and lv.qps]
        top = max(levels, key=lambda lv: lv.users or 0, default=None)
        found = na("not searched") if search is None else num(fmt.num_ci(search.qps, search.qps_ci)) \
            if search.qps is not None else na(search.reason or "no rate met the SLO")
        tax = top.qps / engine if top and engine else None
        causes = ", ".join(f"{k} × {v}" for k, v in top.failure_causes.items()) if top and top.failure_causes \
            else ("none" if top else "")
        rows.append([label(name), text(config.target + (f" {config.url}" if config.url else "")),
                     text(config.protocol), found, num(fmt.num(top.qps) if top else None, "no closed-loop level"),
                     num(fmt.num(tax), "no ORT INT8 engine cell in this run"),
                     num(fmt.num(top.service_cpu_ms_per_text) if top else None, "the server is not local"),
                     num(fmt.num(top.client_cpu_percent) if top else None), text(causes)])
    return table("servers", "Servers side by side", cols, rows, NOTES)
