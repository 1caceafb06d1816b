"""The decision: for a P95 SLO, the highest QPS each configuration sustains, its energy and cost per million
inferences, and a recommendation sentence derived from those numbers. Also the article's multi-dimension
summary (3.4), with measured cells from data and qualitative cells marked as judgement."""

from __future__ import annotations

from bench.results import RunResult
from reports import fmt
from reports.common import (backend_parts, batch1_corpus, cell_label, column, energy_per_item_j, judgement, label,
                            na, num, table, text, variant_of, why_not)
from reports.sections import load_point
from reports.service import failed_configs, label_of, measured, scaling, service_configs

ENGINE = "engine only, in-process, no HTTP"
SERVICE = "service, HTTP load test"


def candidates(run: RunResult, options: dict) -> list[dict]:
    """One dict per configuration: service configs from load tests, then engine cells of other backends."""
    # Backends with a measured service level are judged by it; a failed service leaves its engine cells in.
    served = {cfg.get("backend") for name, cfg in service_configs(run).items() if name not in failed_configs(run)}
    out = [service_candidate(run, name, cfg, options) for name, cfg in service_configs(run).items()]
    seen_unmeasured = set()
    for cell in run.cells:
        if cell.spec.workload != "corpus" or cell.spec.backend in served:
            continue
        if cell.status == "ok":
            out.append(engine_candidate(cell, options))
        elif cell.spec.backend not in seen_unmeasured:  # one line per backend, not per batch size
            seen_unmeasured.add(cell.spec.backend)
            row = base(cell.spec.backend, cell.spec.backend, ENGINE, options)
            out.append(row | {"reason": why_not(cell), "measured": False})
    return out


def base(name: str, backend: str | None, kind: str, options: dict) -> dict:
    gpu = backend_parts(backend or "")["gpu"]
    price = options["gpu_hour_usd"] if gpu else options["cpu_hour_usd"]
    return {"name": name, "backend": backend, "kind": kind, "device": "GPU" if gpu else "CPU", "price": price,
            "qps": None, "p95_ms": None, "at": None, "energy_per_m_j": None, "energy_estimated": False,
            "energy_reason": None, "cost_per_m": None, "reason": None, "measured": True}


def service_candidate(run: RunResult, name: str, cfg: dict, options: dict) -> dict:
    slo = options["slo_p95_ms"]
    row = base(name, cfg.get("backend"), SERVICE, options)
    row["energy_reason"] = "load tests record no energy"
    failed = failed_configs(run).get(name)
    if failed:
        return row | {"reason": f"failed: {failed}", "measured": False}
    points = [lt for lt in run.loadtests if label_of(lt) == name and measured(lt) and lt.get("p95_ms") is not None]
    # A level with failed or wrong answers does not count as sustained, however fast it was.
    meeting = [lt for lt in points if lt["p95_ms"] <= slo and not lt.get("failures")
               and not lt.get("invalid_answers") and lt["qps"] > 0]
    if not meeting:
        lowest = min((lt["p95_ms"] for lt in points), default=None)
        row["reason"] = f"no tested load meets P95 ≤ {slo:g} ms" + \
            (f" (lowest P95 {fmt.num(lowest)} ms)" if lowest is not None else "")
        return row
    best = max(meeting, key=lambda lt: lt["qps"])
    at = load_point(best) + (", client saturated" if best.get("client_saturated") else "")
    return row | {"qps": best["qps"], "p95_ms": best["p95_ms"], "at": at,
                  "cost_per_m": cost_per_million(row["price"], best["qps"])}


def engine_candidate(cell, options: dict) -> dict:
    slo = options["slo_p95_ms"]
    name = f"{cell_label(cell)} · batch {cell.spec.batch}"
    row = base(name, cell.spec.backend, ENGINE, options)
    per_item = energy_per_item_j(cell)
    row |= {"energy_per_m_j": per_item * 1e6 if per_item is not None else None,
            "energy_estimated": bool(cell.energy.get("estimated")), "energy_reason": "no energy reading",
            "p95_ms": cell.stats["p95"] * 1000, "at": "back to back"}
    if row["p95_ms"] > slo:
        return row | {"reason": f"P95 {fmt.num(row['p95_ms'])} ms exceeds the {slo:g} ms SLO"}
    return row | {"qps": cell.throughput, "cost_per_m": cost_per_million(row["price"], cell.throughput)}


def cost_per_million(price_per_hour: float, qps: float | None) -> float | None:
    """Dollars per 1M inferences on one device running flat out at `qps`: price / (qps × 3600) × 1e6."""
    return price_per_hour / (qps * 3600.0) * 1e6 if qps else None


def decision_order(c: dict) -> tuple:
    """Configurations that meet the SLO first, cheapest first; then too slow; then not measured."""
    if c["cost_per_m"] is not None:
        return (0, c["cost_per_m"])
    return (1, 0) if c["measured"] else (2, 0)


def decision_table(cands: list[dict], options: dict) -> dict:
    slo = options["slo_p95_ms"]
    cols = [column("Configuration", False), column("Kind", False), column("Device", False),
            column(f"Max QPS at P95 ≤ {slo:g} ms"), column("P95 ms there"), column("At", False),
            column("Energy kJ / 1M inferences"), column("Cost USD / 1M inferences")]
    ordered = sorted(cands, key=decision_order)
    rows = [decision_row(c) for c in ordered if c["measured"]]
    gaps: dict = {}  # one row per reason for what was not measured
    for c in ordered:
        if not c["measured"]:
            gaps.setdefault((c["reason"], c["kind"], c["device"]), []).append(c["name"])
    rows += [[text(", ".join(names)), text(SHORT[kind]), text(device), na(reason, span=5)]
             for (reason, kind, device), names in gaps.items()]
    notes = ["Kind: engine = back-to-back in-process calls with pre-tokenised inputs on all cores (an upper "
             "bound for a service on the same host); service = HTTP end to end under Locust.",
             f"Cost = device price per hour / (QPS × 3600) × 1,000,000, at CPU ${options['cpu_hour_usd']:.2f}/h "
             f"and GPU ${options['gpu_hour_usd']:.2f}/h (prices are inputs, not measurements)."]
    return table("decision", f"Decision table for the P95 ≤ {slo:g} ms SLO", cols, rows, notes,
                 empty="no configurations measured")


SHORT = {ENGINE: "engine", SERVICE: "service"}


def decision_row(c: dict) -> list:
    head = [label(c["name"]), text(SHORT[c["kind"]]), text(c["device"])]
    if c["qps"] is None:  # measured, but too slow for the SLO at every tested load
        p95 = num(fmt.num(c["p95_ms"])) if c["p95_ms"] is not None else text("")
        return head + [text(c["reason"]), p95, text(""), text(""), text("")]
    energy = fmt.num(c["energy_per_m_j"] / 1000) if c["energy_per_m_j"] is not None else None
    return head + [num(fmt.qps(c["qps"])), num(fmt.num(c["p95_ms"])), text(c["at"]),
                   num(f"{energy}{' (est.)' if c['energy_estimated'] else ''}" if energy else None, c["energy_reason"]),
                   num(fmt.usd(c["cost_per_m"]))]


def recommendation(run: RunResult, cands: list[dict], options: dict) -> list[str]:
    """Sentences derived from the decision table: the pick, then what limits it and what was not measured.

    Service rows (HTTP load tests) are preferred when any meets the SLO: engine-only throughput leaves out HTTP,
    tokenisation and queueing, so ranking it against end-to-end QPS would favour whatever was not load-tested.
    """
    slo = options["slo_p95_ms"]
    meeting = [c for c in cands if c["cost_per_m"] is not None]
    if not meeting:
        return [f"No measured configuration sustains P95 ≤ {slo:g} ms.", *not_measured(run, cands)]
    served = [c for c in meeting if c["kind"] == SERVICE]
    pool = served or meeting
    cheapest = min(pool, key=lambda c: c["cost_per_m"])
    fastest = max(pool, key=lambda c: c["qps"])
    out = [f"Cheapest {'service ' if served else ''}configuration meeting P95 ≤ {slo:g} ms: {cheapest['name']} "
           f"({cheapest['kind']}), {fmt.qps(cheapest['qps'])} inferences/s on one {cheapest['device']} at "
           f"{fmt.usd(cheapest['cost_per_m'])} per million inferences."]
    if fastest is not cheapest:
        out.append(f"Highest sustained throughput: {fastest['name']}, {fmt.qps(fastest['qps'])} inferences/s "
                   f"({fmt.usd(fastest['cost_per_m'])} per million).")
    if cheapest["kind"] == ENGINE:
        out.append("That figure is engine throughput without HTTP, tokenisation or queueing: confirm it with the "
                   "service load test before sizing a deployment.")
    engine_only = [c for c in meeting if c["kind"] == ENGINE]
    if served and engine_only:
        best = min(engine_only, key=lambda c: c["cost_per_m"])
        out.append(f"Not load-tested as a service: {', '.join(c['name'] for c in engine_only)}; of these, "
                   f"{best['name']} has the lowest engine-only cost ({fmt.usd(best['cost_per_m'])} per million, "
                   "an upper bound without HTTP).")
    out += parity_caveat(run, cheapest["backend"])
    return out + not_measured(run, cands)


def parity_caveat(run: RunResult, backend: str | None) -> list[str]:
    variant = variant_of(backend or "")
    parity = ((run.model.get("variants") or {}).get(variant) or {}).get("parity") or {}
    if "label_agreement" not in parity or parity["label_agreement"] >= 0.99:
        return []
    meaning = " With synthetic weights this says nothing about accuracy on real reviews: re-check with the real " \
              "model." if run.model.get("synthetic") else ""
    return [f"Its {variant} model agrees with PyTorch FP32 on {parity['label_agreement']:.1%} of "
            f"{parity.get('n')} labels.{meaning}"]


def not_measured(run: RunResult, cands: list[dict]) -> list[str]:
    out = []
    gpu_missing = sorted({c["backend"] for c in cands if not c["measured"] and c["device"] == "GPU"})
    gpu_measured = any(c["measured"] and c["device"] == "GPU" for c in cands)
    if gpu_missing and not gpu_measured:
        out.append(f"No GPU on this host: GPU configurations ({', '.join(gpu_missing)}) not measured, so this "
                   "run cannot say whether a GPU would be cheaper.")
    others = [c for c in cands if not c["measured"] and c["backend"] not in gpu_missing]
    out += [f"Not measured: {c['name']} ({c['reason']})." for c in others]
    if not run.loadtests:
        out.append("No service load tests in this run: every QPS above is engine throughput, not HTTP QPS.")
    if run.model.get("synthetic"):
        out.append("Weights are synthetic: accuracy is not part of this decision.")
    return out


DEPLOY = {"torch": "torch + transformers wheels; no export step",
          "ort": "onnxruntime + the exported .onnx file"}
GPU_DEPLOY = {"cuda": "NVIDIA driver + CUDA-matched wheel",
              "tensorrt": "driver + CUDA + TensorRT; engine built per GPU model"}
MAINTAIN = {"torch": "fewest moving parts",
            "ort": "re-export + parity gate on each model update"}


def judgements(backend: str) -> tuple[str, str]:
    """Deployment difficulty and maintainability: qualitative, from the backend's engine/device/precision."""
    p = backend_parts(backend)
    deploy = GPU_DEPLOY.get(p["device"]) or DEPLOY.get(p["engine"], "unknown engine")
    maintain = MAINTAIN.get(p["engine"], "unknown engine")
    if p["precision"] == "int8":
        maintain += "; re-check quantised accuracy"
    if p["gpu"]:
        maintain += "; watch VRAM, driver, temperature"
    return deploy, maintain


def summary_table(run: RunResult) -> dict:
    cols = [column("Backend", False), column("Speed: P50 ms"), column("Resource cost: peak RSS MiB"),
            column("Resource cost: J / inference"), column("Deployment difficulty (judgement, not measured)", False),
            column("Maintainability (judgement, not measured)", False),
            column("Scaling: QPS at max users / at 1 user", False)]
    scale = scaling(run)
    rows, gaps = [], {}
    for cell in batch1_corpus(run):
        deploy, maintain = judgements(cell.spec.backend)
        scaled = [f"{name}: {fmt.ratio(s['ratio'])} (1→{s['users']} users)" for name, s in scale.items()
                  if s["backend"] == cell.spec.backend]
        tail = (deploy, maintain, "; ".join(scaled))
        if cell.status != "ok":  # backends skipped for one reason and judged alike share a row
            gaps.setdefault((why_not(cell), *tail), []).append(cell_label(cell))
            continue
        per_item = energy_per_item_j(cell)
        est = " (est.)" if cell.energy.get("estimated") else ""
        rows.append([label(cell_label(cell)), num(fmt.ms(cell.stats["p50"])),
                     num(fmt.mib(cell.resources.get("peak_rss_bytes"))),
                     num(f"{fmt.num(per_item)}{est}" if per_item is not None else None, "no energy reading"),
                     *summary_tail(*tail)])
    rows += [[text(", ".join(names)), na(reason, span=3), *summary_tail(*tail)]
             for (reason, *tail), names in gaps.items()]
    notes = ["Italic cells are judgement, not measured (文章 3.4: 部署难度, 可维护性). Everything else comes from "
             "this run's data; scaling comes from the service load tests."]
    return table("summary", "Multi-dimension summary (batch 1)", cols, rows, notes, empty="no batch-1 corpus cells")


def summary_tail(deploy: str, maintain: str, scaled: str) -> list[dict]:
    return [judgement(deploy), judgement(maintain), text(scaled) if scaled else na("no load test")]
