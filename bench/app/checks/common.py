"""What every check shares: one cell in a fresh worker, the verdict and exit code, the saved check.json."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench import backends
from bench.core import paths
from bench.core.errors import BenchError
from bench.core.fmt import interval
from bench.core.results import CellResult, CellSpec, cell_to_dict
from bench.core.stats import StopRule
from bench.engine.runner import WorkerLimits, WorkerRequest, run_cell
from bench.model import artifacts

STOP = StopRule(min_iters=30, min_time_s=5.0, max_time_s=15.0, target_rel_halfwidth=0.03)


def measure_cell(spec: CellSpec, model_dir: Path, onnx_dir: Path, model_file: Path | None = None,
                 stop: StopRule = STOP, sampled: bool = True) -> CellResult:
    """One cell in one fresh worker (`sampled`: with the resource sampler watching it, as every run's cells are);
    a cell that does not measure is a BenchError (one line, exit 2)."""
    from bench.measure.sampler import ResourceSampler

    b = backends.resolve(spec.backend)
    path = model_file or artifacts.model_file(onnx_dir, b.engine, b.precision, b.device)
    req = WorkerRequest(spec, str(model_dir), str(path) if path else None, stop=stop)
    print(f"[check] measuring {spec.key}{' on ' + path.name if model_file else ''} …", file=sys.stderr, flush=True)
    cell = run_cell(req, WorkerLimits(timeout_s=300),
                    sampler_factory=(lambda pid: ResourceSampler(pid, 0.01)) if sampled else None)
    if cell.status != "ok":
        raise BenchError(f"check cell {spec.key} {cell.status}: {cell.reason}")
    return cell


def verdict(misses: list[str]) -> int:
    """Exit code of a check: 1 with the missed targets named, 0 when all were met."""
    if misses:
        print(f"MISSED: {'; '.join(misses)}")
        return 1
    print("all targets met")
    return 0


def prepare_model(model: str) -> tuple[Path, Path, dict]:
    """Export (or reuse) the model; the third value says what was measured (for check.json)."""
    from bench.app.pipeline import export_model

    model_dir, onnx_dir, block = export_model(model)
    source = asdict(block.source) if block.source else None
    return model_dir, onnx_dir, {"model": model, "source": source, "synthetic_weights": block.synthetic}


def unoptimised_int8(onnx_dir: Path) -> Path:
    """INT8 quantised straight from the plain FP32 export, skipping ORT's optimiser (the article's recipe)."""
    from bench.model.artifacts import ONNX_FILES
    from exporters.quantize import choose_settings, quantize

    out = onnx_dir / "model-int8-noopt.onnx"
    if not out.exists():
        quantize(onnx_dir / ONNX_FILES["fp32"], out, choose_settings())
    return out


def p50(cell: CellResult) -> float:
    return cell.stats["p50"]


def ci_text(cell: CellResult) -> str:
    return f"P50 {p50(cell) * 1000:.1f} ms {interval([x * 1000 for x in cell.stats['p50_ci95']])}"


def save(name: str, model: dict, figures: dict, **records) -> Path:
    """check.json: what was measured (model, synthetic weights or not), the figures, and the raw records."""
    out = paths.ensure_writable(paths.results_dir() / f"check-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    paths.atomic_write_text(out / "check.json", json.dumps({**model, "figures": figures, **records},
                                                           ensure_ascii=False, indent=1))
    return out / "check.json"


def cells_json(cells: dict) -> dict:
    return {k: cell_to_dict(c) for k, c in cells.items()}


