"""The article's multi-dimension summary (3.4): measured cells from data, qualitative cells marked as judgement."""

from __future__ import annotations

from bench.core.results import CellResult, RunResult
from reports import fmt, gpu
from reports.common import (
    backend_parts,
    batch1_corpus,
    cell_label,
    column,
    judgement,
    label,
    na,
    num,
    on_gpu,
    table,
    text,
    why_not,
)
from reports.service import scaling

DEPLOY = {"torch": "torch + transformers wheels; no export step",
          "ort": "onnxruntime + the exported .onnx file",
          "ov": "openvino + the exported IR (.xml + .bin); INT8 calibrated by NNCF at export"}
GPU_DEPLOY = {"cuda": "NVIDIA driver + CUDA-matched wheel",
              "tensorrt": "driver + CUDA + TensorRT; engine built per GPU model"}
MAINTAIN = {"torch": "fewest moving parts",
            "ort": "re-export + parity gate on each model update",
            "ov": "re-export, re-calibrate + parity gate on each model update"}


def judgements(backend: str) -> tuple[str, str]:
    """Deployment difficulty and maintainability: qualitative, from the backend's engine/device/precision."""
    p = backend_parts(backend)
    if p is None:
        return "unknown backend", "unknown backend"
    deploy = GPU_DEPLOY.get(p.device) or DEPLOY.get(p.engine, "unknown engine")
    maintain = MAINTAIN.get(p.engine, "unknown engine")
    if p.precision in ("int8", "bf16"):
        maintain += "; re-check quantised accuracy" if p.precision == "int8" else "; BF16 needs AMX / AVX512-BF16"
    if on_gpu(backend):
        maintain += "; watch VRAM, driver, temperature"
    return deploy, maintain


def summary_table(run: RunResult) -> dict:
    cols = [column("Backend", False), column("Speed: P50 ms [95% CI]"),
            column("Resource cost: memory MiB (CPU: peak RSS; GPU: peak VRAM)"),
            column("Resource cost: host CPU J / inference"), column("Resource cost: GPU board J / inference (NVML)"),
            column("Deployment difficulty (judgement, not measured)", False),
            column("Maintainability (judgement, not measured)", False),
            column("Scaling: QPS at max users / at 1 user", False)]
    scale = scaling(run)
    rows, gaps = [], {}
    for cell in batch1_corpus(run):
        scaled = [f"{name}: {fmt.ratio(s.ratio)} (1→{s.users} users)" for name, s in scale.items()
                  if s.backend == cell.spec.backend]
        tail = (*judgements(cell.spec.backend), "; ".join(scaled))
        if cell.status != "ok":  # backends skipped for one reason and judged alike share a row
            gaps.setdefault((why_not(cell), *tail), []).append(cell_label(cell))
            continue
        rows.append([*measured_part(cell), *summary_tail(*tail)])
    rows += [[text(", ".join(names)), na(reason, span=4), *summary_tail(*tail)]
             for (reason, *tail), names in gaps.items()]
    notes = ["Italic cells are judgement, not measured (文章 3.4: 部署难度, 可维护性). Everything else comes from "
             "this run's data; scaling comes from the service load tests. (est.): energy estimated, not read "
             "from a counter. A GPU row's energy is the board's (NVML), its host CPU's in its own column; its "
             "memory is VRAM, per-process or device-wide as labelled."]
    return table("summary", "Multi-dimension summary (batch 1)", cols, rows, notes, empty="no batch-1 corpus cells")


def measured_part(cell: CellResult) -> list[dict]:
    return [label(cell_label(cell)), num(fmt.ms_ci(cell.stats["p50"], cell.stats["p50_ci95"])),
            gpu.memory_cell(cell), gpu.cpu_energy_cell(cell, 1), gpu.gpu_energy_cell(cell, 1)]


def summary_tail(deploy: str, maintain: str, scaled: str) -> list[dict]:
    return [judgement(deploy), judgement(maintain), text(scaled) if scaled else na("no load test")]
