"""The decision: for a P95 SLO, the highest QPS each configuration sustains, its energy and cost per million
inferences, and a recommendation sentence derived from those numbers. Also the article's multi-dimension
summary (3.4), with measured cells from data and qualitative cells marked as judgement."""

from __future__ import annotations

from bench.results import RunResult
from reports import fmt
from reports.common import (backend_parts, batch1_corpus, cell_label, column, energy_per_item_j, judgement, na,
                            num, table, text, variant_of, why_not)
from reports.service import closed, label_of, scaling, service_configs

ENGINE = "engine only (in-process, no HTTP)"
SERVICE = "service (HTTP load test)"


def candidates(run: RunResult, options: dict) -> list[dict]:
    """One dict per configuration: service configs from load tests, then engine cells of other backends."""
    served = {cfg.get("backend") for cfg in service_configs(run).values()}
    out = [service_candidate(run, label, cfg, options) for label, cfg in service_configs(run).items()]
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


def service_candidate(run: RunResult, label: str, cfg: dict, options: dict) -> dict:
    slo = options["slo_p95_ms"]
    row = base(label, cfg.get("backend"), SERVICE, options)
    row["energy_reason"] = "load tests record no energy"
    points = [lt for lt in run.loadtests if label_of(lt) == label and lt.get("p95_ms") is not None]
    meeting = [lt for lt in points if lt["p95_ms"] <= slo and not lt.get("failures") and lt.get("qps")]
    if not meeting:
        lowest = min((lt["p95_ms"] for lt in points), default=None)
        row["reason"] = f"no tested load meets P95 ≤ {slo:g} ms" + \
            (f" (lowest P95 {fmt.num(lowest)} ms)" if lowest is not None else "")
        return row
    from reports.sections import load_point

    best = max(meeting, key=lambda lt: lt["qps"])
    return row | {"qps": best["qps"], "p95_ms": best["p95_ms"], "at": load_point(best),
                  "cost_per_m": cost_per_million(row["price"], best["qps"])}


def engine_candidate(cell, options: dict) -> dict:
    slo = options["slo_p95_ms"]
    name = f"{cell_label(cell)} · batch {cell.spec.batch}"
    row = base(name, cell.spec.backend, ENGINE, options)
    per_item = energy_per_item_j(cell)
    row |= {"energy_per_m_j": per_item * 1e6 if per_item is not None else None,
            "energy_estimated": bool(cell.energy.get("estimated")), "energy_reason": "no energy reading",
            "p95_ms": cell.stats["p95"] * 1000, "at": f"batch {cell.spec.batch}, back to back"}
    if row["p95_ms"] > slo:
        return row | {"reason": f"P95 {fmt.num(row['p95_ms'])} ms exceeds the {slo:g} ms SLO"}
    return row | {"qps": cell.throughput, "cost_per_m": cost_per_million(row["price"], cell.throughput)}


def cost_per_million(price_per_hour: float, qps: float | None) -> float | None:
    """Dollars per 1M inferences on one device running flat out at `qps`: price / (qps × 3600) × 1e6."""
    return price_per_hour / (qps * 3600.0) * 1e6 if qps else None


def decision_table(cands: list[dict], options: dict) -> dict:
    slo = options["slo_p95_ms"]
    cols = [column("Configuration", False), column("Kind", False), column("Device", False),
            column(f"Max QPS at P95 ≤ {slo:g} ms"), column("P95 ms there"), column("At", False),
            column("Energy kJ / 1M inferences"), column("Cost USD / 1M inferences")]
    rows = []
    for c in cands:
        head = [text(c["name"]), text(c["kind"]), text(c["device"])]
        if not c["measured"]:
            rows.append(head + [na(c["reason"], span=5)])
            continue
        if c["qps"] is None:  # measured, but too slow for the SLO at every tested load
            p95 = num(fmt.num(c["p95_ms"])) if c["p95_ms"] is not None else text("")
            rows.append(head + [text(c["reason"]), p95, text(""), text(""), text("")])
            continue
        energy = fmt.num(c["energy_per_m_j"] / 1000) if c["energy_per_m_j"] is not None else None
        rows.append(head + [num(fmt.qps(c["qps"])), num(fmt.num(c["p95_ms"])), text(c["at"]),
                            num(f"{energy}{' (est.)' if c['energy_estimated'] else ''}" if energy else None,
                                c["energy_reason"]),
                            num(fmt.usd(c["cost_per_m"]))])
    notes = [f"Cost = device price per hour / (QPS × 3600) × 1,000,000, at CPU ${options['cpu_hour_usd']:g}/h "
             f"and GPU ${options['gpu_hour_usd']:g}/h (prices are inputs, not measurements).",
             "Engine-only QPS is back-to-back inference with pre-tokenised inputs on all cores: an upper bound for "
             "a service on the same host."]
    return table("decision", f"Decision table for the P95 ≤ {slo:g} ms SLO", cols, rows, notes,
                 empty="no configurations measured")


def recommendation(run: RunResult, cands: list[dict], options: dict) -> list[str]:
    """Sentences derived from the decision table: the pick, then what limits it and what was not measured."""
    slo = options["slo_p95_ms"]
    meeting = [c for c in cands if c["cost_per_m"] is not None]
    if not meeting:
        return [f"No measured configuration sustains P95 ≤ {slo:g} ms.", *not_measured(run, cands)]
    cheapest = min(meeting, key=lambda c: c["cost_per_m"])
    fastest = max(meeting, key=lambda c: c["qps"])
    out = [f"Cheapest configuration meeting P95 ≤ {slo:g} ms: {cheapest['name']} ({cheapest['kind']}), "
           f"{fmt.qps(cheapest['qps'])} inferences/s on one {cheapest['device']} at "
           f"{fmt.usd(cheapest['cost_per_m'])} per million inferences."]
    if fastest is not cheapest:
        out.append(f"Highest sustained throughput: {fastest['name']}, {fmt.qps(fastest['qps'])} inferences/s "
                   f"({fmt.usd(fastest['cost_per_m'])} per million).")
    if cheapest["kind"] == ENGINE:
        out.append("That figure is engine throughput without HTTP, tokenisation or queueing: confirm it with the "
                   "service load test before sizing a deployment.")
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


DEPLOY = {"torch": "pip install torch (CPU wheel) + transformers; no export step",
          "ort": "onnxruntime only at serving time; needs the exported .onnx file"}
MAINTAIN = {"torch": "weights used as published; fewest moving parts",
            "ort": "re-export and re-run the parity gate on every model update"}
GPU_DEPLOY = {"tensorrt": "NVIDIA driver + CUDA + TensorRT; engine built per GPU model",
              "cuda": "NVIDIA driver + a CUDA build matching the wheel"}


def judgements(backend: str) -> tuple[str, str]:
    """Deployment difficulty and maintainability: qualitative, from the backend's engine/device/precision."""
    p = backend_parts(backend)
    deploy = GPU_DEPLOY.get(p["device"]) or DEPLOY.get(p["engine"], "unknown engine")
    maintain = MAINTAIN.get(p["engine"], "unknown engine")
    if p["precision"] == "int8":
        maintain += "; quantised accuracy must be re-checked"
    if p["gpu"]:
        maintain += "; watch VRAM, driver and GPU temperature"
    return deploy, maintain


def summary_table(run: RunResult) -> dict:
    cols = [column("Backend", False), column("Speed: P50 ms"), column("Resource cost: peak RSS MiB"),
            column("Resource cost: J / inference"), column("Deployment difficulty (judgement, not measured)", False),
            column("Maintainability (judgement, not measured)", False),
            column("Scaling: QPS at max users / QPS at 1", False)]
    scale = scaling(run)
    rows = []
    for cell in batch1_corpus(run):
        deploy, maintain = judgements(cell.spec.backend)
        scaled = [f"{label}: {fmt.ratio(s['ratio'])} (1→{s['users']} users)" for label, s in scale.items()
                  if s["backend"] == cell.spec.backend]
        scaling_cell = text("; ".join(scaled)) if scaled else na("no load test of this backend")
        if cell.status != "ok":
            rows.append([text(cell_label(cell)), na(why_not(cell), span=3), judgement(deploy), judgement(maintain),
                         scaling_cell])
            continue
        per_item = energy_per_item_j(cell)
        est = " (est.)" if cell.energy.get("estimated") else ""
        rows.append([text(cell_label(cell)), num(fmt.ms(cell.stats["p50"])),
                     num(fmt.mib(cell.resources.get("peak_rss_bytes"))),
                     num(f"{fmt.num(per_item)}{est}" if per_item is not None else None, "no energy reading"),
                     judgement(deploy), judgement(maintain), scaling_cell])
    notes = ["Italic cells are judgement, not measured (文章 3.4: 部署难度, 可维护性). Everything else comes from "
             "this run's data."]
    return table("summary", "Multi-dimension summary (batch 1)", cols, rows, notes, empty="no batch-1 corpus cells")
