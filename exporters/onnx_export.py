"""FP32 ONNX export with the TorchScript exporter (dynamo=False), dynamic batch and sequence axes."""

from __future__ import annotations

from pathlib import Path

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_fp32(model_dir: Path, out_path: Path, opset: int = OPSET) -> None:
    """Export with eager attention: an SDPA graph leaves ORT's BERT optimizer with no Attention to fuse."""
    import torch

    from bench.backends.torch_backend import load_torch_model

    model = load_torch_model(model_dir, "fp32", attn="eager")
    dummy = tuple(torch.ones((2, 16), dtype=torch.int64) for _ in INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    axes["logits"] = {0: "batch"}
    with torch.inference_mode():
        torch.onnx.export(model, dummy, str(out_path), input_names=list(INPUTS), output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
