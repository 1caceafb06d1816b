"""FP32 ONNX export with the TorchScript exporter (dynamo=False), dynamic batch and sequence axes; the graph's
inputs and output are the model's signature (bench.core.signature), the dummy inputs real tokenised texts."""

from __future__ import annotations

from pathlib import Path

OPSET = 17
# Real text for the trace: all-ones dummies index past a one-row token-type table (RoBERTa's) and give
# position-id logic (padding_idx) inputs it never sees
SAMPLE_TEXTS = ("这家店的菜很好吃，服务也很周到。", "质量一般")


def export_fp32(model_dir: Path, out_path: Path, opset: int = OPSET) -> None:
    """Export with eager attention: an SDPA graph leaves ORT's BERT optimizer with no Attention to fuse."""
    import torch

    from bench.backends.torch_backend import load_torch_model
    from bench.model.tokenize import encode, load_tokenizer

    model = load_torch_model(model_dir, "fp32", attn="eager")
    tokenizer = load_tokenizer(str(model_dir))
    signature = tokenizer.signature
    encoded = encode(tokenizer, SAMPLE_TEXTS)
    dummy = tuple(torch.from_numpy(encoded[name]) for name in signature.inputs)
    axes = {name: {0: "batch", 1: "sequence"} for name in signature.inputs}
    axes[signature.output] = {0: "batch"}
    with torch.inference_mode():
        torch.onnx.export(model, dummy, str(out_path), input_names=list(signature.inputs),
                          output_names=[signature.output], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
