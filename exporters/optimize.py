"""Graph fusion with ONNX Runtime's transformer optimizer, and the FP16 conversion for GPU use."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.core.signature import ModelSignature

FUSED_OPS = ("Attention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu", "Gelu",
             "FastGelu", "LayerNormalization", "MultiHeadAttention")


def fuse(src: Path, out_path: Path, signature: ModelSignature) -> str:
    """optimize_model with the family's model_type (bench.core.signature.FAMILIES); a family without a recipe is
    copied unfused. Returns what was done, for the manifest."""
    if signature.ort_model_type is None:
        shutil.copyfile(src, out_path)
        return f"not fused: {signature.fusion_note or 'no ONNX Runtime optimizer recipe for this family'}"
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(src), model_type=signature.ort_model_type, num_heads=signature.heads,
                           hidden_size=signature.hidden)
    model.save_model_to_file(str(out_path), use_external_data_format=False)
    return f"onnxruntime optimizer, model_type={signature.ort_model_type}"


def op_counts(path: Path) -> dict[str, int]:
    """How many of the fused operators (FUSED_OPS) a graph holds: the manifest records them per file, so a family
    whose fusion matched nothing shows it."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in FUSED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def to_fp16(fused_path: Path, out_path: Path) -> None:
    """FP16 weights and compute, FP32/int64 graph inputs and outputs (keep_io_types) so callers stay the same."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fused_path)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out_path), use_external_data_format=False)
