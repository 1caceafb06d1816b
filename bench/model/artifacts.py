"""Where each exported variant lives inside an ONNX folder, and which file a backend runs (no heavy imports)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from bench.core.errors import BenchError
from bench.core.run_records import ModelRecord, VariantRecord

ONNX_FILES = {
    "fp32": "model-fp32.onnx",
    "fp32-fused": "model-fp32-fused.onnx",
    "int8": "model-int8.onnx",
    "fp16": "model-fp16.onnx",
}
# OpenVINO IRs (an .xml graph beside its .bin weights): FP32 converted from the FP32 ONNX export (the BF16 backend
# runs it with a BF16 inference precision), INT8 quantised by NNCF with calibration on corpus texts.
OV_FILES = {
    "ov-fp32": "model-ov-fp32.xml",
    "ov-int8": "model-ov-int8.xml",
}
ALL_FILES = {**ONNX_FILES, **OV_FILES}
MANIFEST = "manifest.json"
# 1 (2026-11-25) first version. 2 (2026-12-07): `signature`, the model's inputs, output and task
# (bench.core.signature); fused-operator counts on every ONNX file; `fusion` says what the optimizer did.
MANIFEST_VERSION = 2
GIVEN_ONNX = "given.onnx"  # an `onnx:PATH` model dir's copy of the user's graph (bench.model.sources)


def read_manifest(onnx_dir: Path) -> dict:
    path = Path(onnx_dir) / MANIFEST
    if not path.exists():
        raise BenchError(f"no {MANIFEST} in {onnx_dir}: run `python -m bench export` first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path} is corrupt ({exc}); delete the folder and re-export") from None
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise BenchError(f"{path} has manifest_version {manifest.get('manifest_version')!r}, "
                         f"this toolkit reads {MANIFEST_VERSION}; re-export")
    return manifest


def variant_path(onnx_dir: Path, precision: str) -> Path:
    """The ONNX file for `precision`, refusing variants that are missing or failed the parity gate."""
    manifest = read_manifest(onnx_dir)
    entry = manifest.get("variants", {}).get(precision)
    path = Path(onnx_dir) / ALL_FILES[precision]
    if entry is not None and entry.get("file") is None and entry.get("not_built"):
        raise BenchError(f"no {precision} model in {onnx_dir}: {entry['not_built']}")
    if entry is None or not path.exists():
        raise BenchError(f"no {precision} model in {onnx_dir}: run `python -m bench export`")
    if entry.get("parity", {}).get("passed") is False:
        raise BenchError(f"{precision} ONNX model in {onnx_dir} failed the parity gate; see {MANIFEST}")
    return path


def variant_for(engine: str, precision: str, device: str) -> str | None:
    """The exported variant a backend runs; None for torch (it loads the model directory itself). OpenVINO runs
    its own IRs: BF16 is the FP32 IR compiled with a BF16 inference precision.
    TensorRT parses only standard ONNX ops, so it gets the plain FP32 export (FP16 through `trt_fp16_enable`),
    never the ORT-fused graph with com.microsoft Attention / SkipLayerNormalization nodes. On CUDA, FP32 runs the
    fused graph as FP16 does (the FP16 file is the fused graph converted), so the two differ in precision only."""
    if engine == "ov":
        return "ov-int8" if precision == "int8" else "ov-fp32"
    if engine != "ort":
        return None
    if device == "tensorrt":
        return "fp32"
    return "fp32-fused" if device == "cuda" and precision == "fp32" else precision


def gate_variant(engine: str, precision: str, device: str) -> str | None:
    """The manifest entry whose parity gate (and accuracy) covers a backend: the file it runs, or the variant built
    at load time (torch INT8 / BF16, OpenVINO BF16); None for the reference (torch FP32) and unexported paths."""
    if engine == "torch":
        return f"torch-{precision}" if device == "cpu" and precision in ("int8", "bf16") else None
    if engine == "ov":
        return f"ov-{precision}"
    return variant_for(engine, precision, device)


def below_floor(variants: Mapping[str, VariantRecord]) -> dict[str, str]:
    """{variant: why} for every variant whose accuracy fell past the floor (a run's parity records)."""
    return {name: v.parity.floor.reason or "below the accuracy floor"
            for name, v in variants.items() if v.parity and v.parity.floor and v.parity.floor.passed is False}


def accuracy_records(model: ModelRecord) -> tuple[Mapping[str, VariantRecord], str]:
    """The variants whose accuracy judges the floor for a run's model block — the model's own when its weights are
    trained, else the trained twin's (bench.app.pipeline.accuracy) — and whose they are."""
    twin = model.trained_twin
    if model.synthetic and twin:
        return twin.variants, f"the trained twin ({twin.texts} held-out reviews)"
    return model.variants, f"this model on {model.accuracy_texts or 'held-out reviews'}"


def floor_exclusions(model: ModelRecord) -> dict[str, str]:
    """{backend: why} for every CPU backend whose variant fell below the accuracy floor."""
    from bench import backends

    records, whose = accuracy_records(model)
    below = below_floor(records)
    out = {}
    for name in backends.CPU_BACKENDS:
        spec = backends.resolve(name)
        variant = gate_variant(spec.engine, spec.precision, spec.device)
        if variant in below:
            out[name] = f"below the accuracy floor on {whose}: {below[variant]}"
    return out


def model_file(onnx_dir: Path | None, engine: str, precision: str, device: str) -> Path | None:
    """The ONNX file a backend runs, refusing missing or parity-failed variants (BenchError)."""
    variant = variant_for(engine, precision, device)
    if variant is None:
        return None
    if onnx_dir is None:
        raise BenchError(f"{engine}-{precision}-{device} needs an ONNX export: run `python -m bench export`")
    path = variant_path(onnx_dir, variant)
    gated = gate_variant(engine, precision, device)
    if gated != variant and gated is not None:  # a load-time variant of this file: its own gate counts too
        parity = (read_manifest(onnx_dir).get("variants", {}).get(gated) or {}).get("parity") or {}
        if parity.get("passed") is False:
            raise BenchError(f"{gated} in {onnx_dir} failed the parity gate; see {MANIFEST}")
    return path
