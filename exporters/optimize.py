"""Graph fusion with ONNX Runtime's transformer optimizer, and the FP16 conversion for GPU use."""

from __future__ import annotations

from pathlib import Path

FUSED_OPS = ("Attention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu", "Gelu",
             "FastGelu", "LayerNormalization", "MultiHeadAttention")


def fuse(src: Path, out_path: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """optimize_model(model_type='bert') and return the fused-operator counts we care about."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    stats = model.get_fused_operator_statistics()
    model.save_model_to_file(str(out_path), use_external_data_format=False)
    return {op: int(stats.get(op, 0)) for op in FUSED_OPS if stats.get(op)}


def to_fp16(fused_path: Path, out_path: Path) -> None:
    """FP16 weights and compute, FP32/int64 graph inputs and outputs (keep_io_types) so callers stay the same."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fused_path)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out_path), use_external_data_format=False)
