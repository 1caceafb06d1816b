"""PyTorch backends: FP32, dynamic INT8 (Linear layers) and BF16 weights on CPU; FP32 and FP16 on CUDA.

options: device_id (CUDA), tf32 (default off), cuda_graphs (1: capture a CUDA graph per input shape, see
bench.backends.cuda_graphs; the service turns it on), graph_shapes (the shapes that may be captured; default any).
"""

from __future__ import annotations

import contextlib
from typing import Mapping

import numpy as np

from bench.backends import cuda_graphs
from bench.backends.base import Backend, Unavailable
from bench.core.signature import MASK


def load_torch_model(model_dir, precision: str = "fp32", attn: str = "sdpa"):
    """The model as its signature says (bench.core.signature), in eval mode, called with its inputs in the
    signature's order and returning the task's answer: the classifier's logits, or the sentence embedding pooled
    (and normalised) as its sentence-transformers config says. int8 = torch dynamic quantisation of every nn.Linear
    (qint8 weights); bf16 = the whole model in bfloat16 (oneDNN runs it on AMX or AVX512-BF16; the caller refuses
    other CPUs)."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    from bench.core.errors import BenchError
    from bench.core.signature import read_signature

    signature = read_signature(model_dir)
    auto = AutoModel if signature.is_embedding else AutoModelForSequenceClassification
    try:
        try:
            model = auto.from_pretrained(str(model_dir), attn_implementation=attn).eval()
        except ValueError as exc:  # a family without SDPA (MPNet): its own (eager) attention, as transformers says
            if "attention implementation" not in str(exc) or attn == "eager":
                raise
            model = auto.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    except Exception as exc:  # corrupt or truncated weights (SafetensorError, UnpicklingError…), bad config
        raise BenchError(f"cannot load the model in {model_dir}: {type(exc).__name__}: {str(exc)[:200]}") from None
    model = encoder_module(torch)(model, signature).eval()
    if precision == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif precision == "bf16":
        model = model.to(torch.bfloat16)
    return model


def encoder_module(torch):
    """The wrapper class (defined once torch is imported): positional inputs in the signature's order, so the
    ONNX export and every call agree on them; the output is the task's answer, never a model-output object."""

    class Encoder(torch.nn.Module):
        def __init__(self, model, signature) -> None:
            super().__init__()
            self.model, self.signature = model, signature

        def forward(self, *tensors):
            named = dict(zip(self.signature.inputs, tensors))
            out = self.model(**named)
            if not self.signature.is_embedding:
                return out.logits
            return pool_torch(torch, out.last_hidden_state, named[MASK], self.signature)

    return Encoder


def pool_torch(torch, hidden, mask, signature):
    """bench.core.signature.pool in torch, inside the graph: [batch, sequence, hidden] → [batch, hidden]."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if signature.pooling == "cls":
        out = hidden[:, 0]
    elif signature.pooling == "max":
        out = hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values
    elif signature.pooling == "last":
        last = (mask.sum(dim=1) - 1).clamp(min=0)
        out = hidden[torch.arange(hidden.shape[0]), last]
    else:
        out = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(out, p=2.0, dim=-1) if signature.normalize else out


def set_tf32(torch, on: bool) -> None:
    """TF32 for float32 matmuls and convolutions, set explicitly (ORT's CUDA provider gets the same setting
    through `use_tf32`), so "fp32" means IEEE float32 on both engines unless a cell asks for TF32."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


class TorchBackend(Backend):
    model = None
    graphs: cuda_graphs.CudaGraphs | None = None

    def load(self) -> None:
        if self.signature is not None and self.signature.source == "graph":
            raise Unavailable("the model was given as an ONNX file: there are no PyTorch weights to run")
        import torch

        spec = self.config.spec
        if spec.device == "cuda" and not torch.cuda.is_available():
            raise Unavailable(f"torch {torch.__version__} sees no CUDA device")
        if spec.device != "cpu" and spec.device != "cuda":
            raise Unavailable(f"torch has no '{spec.device}' device")
        if spec.precision == "bf16":
            from bench.measure.isa import CpuIsa, bf16_reason

            if spec.device != "cpu" or (why := bf16_reason(CpuIsa.here())):
                raise Unavailable(why or "torch BF16 is a CPU backend here (CUDA runs FP16)")
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        model = load_torch_model(self.config.model_dir, spec.precision)
        self._device = torch.device("cpu")
        if spec.device == "cuda":
            # The device by number, never "cuda": the current device is per thread, and the service loads on one
            # thread and serves on others (set_device here still serves the CUDA events of this thread's timer).
            self._device = torch.device("cuda", int(self.config.options.get("device_id", 0)))
            torch.cuda.set_device(self._device)
            set_tf32(torch, self._tf32)
            model = model.to(self._device)
            model = model.half() if spec.precision == "fp16" else model
            torch.cuda.reset_peak_memory_stats()
            if cuda_graphs.enabled(self.config.options):
                self.graphs = cuda_graphs.CudaGraphs(torch, self.config.options.get("graph_shapes"))
        self.model, self._torch = model, torch

    @property
    def _tf32(self) -> bool:
        return bool(self.config.options.get("tf32", False))

    def run_info(self) -> dict:
        if self.config.spec.precision == "bf16":
            return {"torch_dtype": str(next(self.model.parameters()).dtype)}
        return {"tf32": "on" if self._tf32 else "off"} if self.config.spec.device == "cuda" else {}

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        on_device = torch.cuda.device(self._device) if self._device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), on_device:  # whichever thread calls: the device the backend was loaded on
            tensors = {k: torch.from_numpy(inputs[k]).to(self._device, non_blocking=True)
                       for k in self.signature.inputs}
            logits = self.graphs.call(self._forward, tensors) if self.graphs else self._forward(tensors)
            return logits.float().cpu().numpy()  # .cpu() synchronises with the GPU stream (before any next replay)

    def _forward(self, tensors: dict):
        return self.model(*tensors.values())

    def serving_info(self) -> dict:
        if self.config.spec.device != "cuda":
            return {}
        return {"cuda_graphs": self.graphs.summary() if self.graphs else "off"}

    def device_memory(self) -> dict:
        if self.config.spec.device != "cuda":
            return {}
        return {"torch_max_memory_allocated_bytes": int(self._torch.cuda.max_memory_allocated())}

    def close(self) -> None:
        self.model = self.graphs = None
