"""Upgrades of older results files to the current schema, one version step each (see bench.core.results)."""

from __future__ import annotations

from typing import Any

from bench.core.records import (
    CacheFigures,
    Energy,
    LoadLevel,
    LoadPhases,
    ProcessRun,
    Resources,
    ServiceSetup,
    WorkerMeta,
    known,
)

V1_CELL_RUN_KEYS = ("latencies_s", "warmup_s", "window_s", "stop_reason")


def v1_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """A version 1 cell (one worker, dicts for load/resources/energy/meta) as a version 2 cell with one run."""
    meta = {**(cell.get("meta") or {}), **(cell.get("device_memory") or {})}
    run = {**{k: cell[k] for k in V1_CELL_RUN_KEYS if k in cell}, "load": known(LoadPhases, cell.get("load")),
           "resources": known(Resources, cell.get("resources")), "energy": known(Energy, cell.get("energy")),
           "meta": known(WorkerMeta, meta)}
    measured = cell.get("status") == "ok" or cell.get("latencies_s")
    return {"spec": cell["spec"], "status": cell["status"], "reason": cell.get("reason"),
            "runs": [known(ProcessRun, run)] if measured else [],
            **{k: cell[k] for k in ("items_per_batch", "tokens_per_item", "flops_per_batch") if k in cell}}


def v1_level(level: dict[str, Any]) -> dict[str, Any]:
    """A version 1 load-test dict as a LoadLevel dict. Its percentiles were Locust's rounded CSV figures (closed
    loop) or the client's own (open loop), without CIs; they are kept, and said to be so in `source`."""
    out = known(LoadLevel, level)
    out["config"] = known(ServiceSetup, level.get("config"))
    out["cache"] = known(CacheFigures, level["cache"]) if level.get("cache") else None
    if level.get("status") != "failed" and level.get("mode") == "closed":
        out["locust_csv"] = {k: level.get(k) for k in ("qps", "p50_ms", "p95_ms", "p99_ms")}
    out["source"] = f"schema 1 ({level.get('source') or 'locust csv'}): single window, no CIs"
    return out


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "schema_version": 2, "cells": [v1_cell(c) for c in data.get("cells", [])],
            "loadtests": [v1_level(lv) for lv in data.get("loadtests", [])]}


def v2_model(model: dict[str, Any]) -> dict[str, Any]:
    """A version 2 model block (dicts, as copied from the manifest) in version 3's shape, which
    bench.core.run_records reads: the exported graph's inputs beside the signature, not inside it; no signature
    (runs made before models carried one) as None; a source recorded as a bare string as a source.json object."""
    out = dict(model)
    signature = dict(out.get("signature") or {})
    out["graph_inputs"] = signature.pop("graph_inputs", [])
    out["signature"] = signature or None
    if isinstance(out.get("source"), str):
        out["source"] = {"source": out["source"]}
    return out


def upgrade_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2's host block already has version 3's keys (HostRecord's fields; others go to its `extra`)."""
    return {**data, "schema_version": 3, "host": dict(data.get("host") or {}),
            "model": v2_model(data.get("model") or {})}


UPGRADES = {1: upgrade_v1, 2: upgrade_v2}  # version -> function(dict) -> dict of version + 1
