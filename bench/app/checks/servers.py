"""`check servers`: structbench's service beside real peer servers on this host — KServe's ModelServer and LitServe,
each serving the same ONNX INT8 file with the same ONNX Runtime threads (loadtests/peers/, `make peers`).

One run (results/check-servers-…): every server in 3 fresh processes, interleaved (A B C, C B A, …) at 1 and 8
closed-loop users, then each one's QPS at the SLO (P95 ≤ 300 ms, open loop, LoadGen's tail test) searched against
a fresh process of it; the report of that run shows them side by side. Printed per server: QPS at the SLO with
its CI, P95 at that rate, the client's CPU, the server's CPU per request (local servers), and the serving tax:
saturated QPS (8 users) over the engine's own items/s at the same threads (its best of batch 1 and 8). The target:
our service's QPS at the SLO at least the best peer's; a CI wholly below is a miss, reported with its likely cause.
"""

from __future__ import annotations

from bench.app.checks.common import measure_cell, prepare_model, verdict
from bench.core.results import CellSpec

PEER_KINDS = ("kserve", "litserve")
USERS = (1, 8)


def servers_sweep(model: str, model_dir: str, task: str):
    from loadtests.service_proc import ServiceVariant
    from loadtests.targets import peer_spec
    from loadtests.windows import PRESETS, SearchConfig, SweepConfig

    peers = tuple(ServiceVariant.of_target(f"{kind} (peer)", peer_spec(kind, task, model_dir)) for kind in PEER_KINDS)
    return SweepConfig(model=model, variants=(PRESETS["batch"], *peers), users=USERS, duration_s=5.0, ramp_s=1.0,
                       processes=3, slo_search=SearchConfig(time_cap_s=120.0))


def check_servers(model: str = "twin") -> int:
    import time

    from bench.app import pipeline
    from loadtests.windows import model_task

    model_dir, onnx_dir, _ = prepare_model(model)
    ctx = pipeline.sweep_context(model, 0, None, f"check-servers-{time.strftime('%Y%m%d-%H%M%S')}")
    cells = [measure_cell(CellSpec("ort-int8-cpu", batch=b), model_dir, onnx_dir) for b in (1, 8)]
    for cell in cells:  # in the run, so its report can state the serving tax too
        ctx = ctx.update(lambda r, cell=cell: r.with_cell(cell))
    engine = max(cells, key=lambda c: c.throughput)
    ctx = pipeline.sweep(servers_sweep(model, str(model_dir), model_task(model)), ctx)
    rows = server_rows(ctx.result, engine.throughput)
    for row in rows:
        print(row_text(row))
    html, _ = pipeline.report(ctx)
    print(f"report: {html}")
    return verdict(server_misses(rows))


def server_rows(result, engine_items_s: float) -> list[dict]:
    """One row per server: its search, its saturated closed-loop level, the serving tax."""
    rows = []
    for search in result.slo_searches:
        label = search.config.label
        levels = [lv for lv in result.loadtests if lv.config.label == label and lv.status == "ok" and lv.qps]
        top = max(levels, key=lambda lv: lv.users or 0, default=None)
        rows.append({"label": label, "target": search.config.target, "protocol": search.config.protocol,
                     "search": search, "saturated_qps": top.qps if top else None,
                     "client_cpu": top.client_cpu_percent if top else None,
                     "server_cpu_ms": top.service_cpu_ms_per_text if top else None,
                     "tax": top.qps / engine_items_s if top and engine_items_s else None,
                     "failures": dict(top.failure_causes) if top else {}, "engine_items_s": engine_items_s})
    return rows


def qps_text(search) -> str:
    if search.status != "ok" or search.qps is None:
        return f"not measured ({search.reason or search.status})"
    ci = search.qps_ci
    bounds = f"[{ci[0]:.1f}–{ci[1]:.1f}]" if len(ci) == 2 else f"[≥ {ci[0]:.1f}]" if ci else "[no CI]"
    return f"{search.qps:.1f} req/s {bounds}"


def row_text(r: dict) -> str:
    def num(v, spec: str, unit: str = "") -> str:
        return "not measured" if v is None else f"{v:{spec}}{unit}"

    s = r["search"]
    p95 = next((p.p95_ms for p in s.probes if p.passed and p.offered_rps == s.rate_rps), None)
    return (f"{r['label']:<24} {r['protocol']:<12} QPS@SLO {qps_text(s)}  P95 there {num(p95, '.0f', ' ms')}  "
            f"saturated {num(r['saturated_qps'], '.1f')} req/s  serving tax {num(r['tax'], '.2f')} of the engine's "
            f"{r['engine_items_s']:.1f} items/s  client CPU {num(r['client_cpu'], '.0f', ' %')}  server CPU "
            f"{num(r['server_cpu_ms'], '.1f', ' ms/request')}")


def ratio_ci(ours, peer) -> tuple[float, float, float] | None:
    """ours / peer QPS at the SLO with a conservative interval from the two intervals' ends (None: not measured)."""
    if ours.qps is None or peer.qps is None or ours.status != "ok" or peer.status != "ok":
        return None
    o_lo, o_hi = (ours.qps_ci + (ours.qps,) * 2)[:2] if ours.qps_ci else (ours.qps, ours.qps)
    p_lo, p_hi = (peer.qps_ci + (peer.qps,) * 2)[:2] if peer.qps_ci else (peer.qps, peer.qps)
    return ours.qps / peer.qps, o_lo / max(p_hi, 1e-9), o_hi / max(p_lo, 1e-9)


def server_misses(rows: list[dict]) -> list[str]:
    ours = next((r for r in rows if r["target"] == "structbench"), None)
    peers = [r for r in rows if r["target"] != "structbench"]
    if ours is None or ours["search"].qps is None:
        return ["our service's QPS at the SLO was not measured"]
    misses = []
    for peer in peers:
        ratio = ratio_ci(ours["search"], peer["search"])
        if ratio is None:
            print(f"ours / {peer['label']}: not measured ({peer['search'].reason})")
            continue
        r, lo, hi = ratio
        tie = " (a tie: the interval holds 1)" if lo <= 1 <= hi else ""
        print(f"QPS at the SLO, ours / {peer['label']} = {r:.2f} [{lo:.2f}–{hi:.2f}]{tie}  (target >= 1.0)")
        if hi < 1.0:
            misses.append(f"ours / {peer['label']} = {r:.2f} [{lo:.2f}–{hi:.2f}]: {likely_cause(ours, peer)}")
    return misses


def likely_cause(ours: dict, peer: dict) -> str:
    """Where our service loses, from what was measured beside it."""
    if ours["server_cpu_ms"] and peer["server_cpu_ms"] and ours["server_cpu_ms"] > 1.1 * peer["server_cpu_ms"]:
        return (f"our service spends {ours['server_cpu_ms']:.1f} ms of CPU per request, the peer "
                f"{peer['server_cpu_ms']:.1f}: its HTTP and batching path costs more")
    if ours["tax"] and peer["tax"] and ours["tax"] < peer["tax"]:
        return f"serving tax {ours['tax']:.2f} vs the peer's {peer['tax']:.2f} of the same engine"
    return "its tail at the SLO rate is longer (see the search paths in the report)"
