"""The one explicit table of backends. Modules are imported only when a backend is chosen, so the
ONNX Runtime path never imports torch."""

from __future__ import annotations

import importlib

from bench.backends.base import Backend, BackendConfig, Unavailable
from bench.core.errors import ConfigError
from bench.core.specs import BackendSpec

_TORCH = "bench.backends.torch_backend:TorchBackend"
_ORT = "bench.backends.ort_backend:OrtBackend"
_OV = "bench.backends.ov_backend:OvBackend"
_FAKE = "bench.backends.fake:FakeBackend"

REGISTRY: dict[str, str] = {
    "torch-fp32-cpu": _TORCH,
    "torch-int8-cpu": _TORCH,
    "torch-bf16-cpu": _TORCH,
    "torch-fp32-cuda": _TORCH,
    "torch-fp16-cuda": _TORCH,
    "ort-fp32-cpu": _ORT,
    "ort-fp32-fused-cpu": _ORT,
    "ort-int8-cpu": _ORT,
    "ov-fp32-cpu": _OV,
    "ov-bf16-cpu": _OV,
    "ov-int8-cpu": _OV,
    "ort-fp32-cuda": _ORT,
    "ort-fp16-cuda": _ORT,
    "ort-int8-cuda": _ORT,
    "ort-fp32-tensorrt": _ORT,
    "ort-fp16-tensorrt": _ORT,
    "fake-fp32-cpu": _FAKE,
}

CPU_BACKENDS = ("torch-fp32-cpu", "torch-int8-cpu", "torch-bf16-cpu", "ort-fp32-cpu", "ort-fp32-fused-cpu",
                "ort-int8-cpu", "ov-fp32-cpu", "ov-bf16-cpu", "ov-int8-cpu")
GPU_BACKENDS = ("torch-fp32-cuda", "torch-fp16-cuda", "ort-fp32-cuda", "ort-fp16-cuda", "ort-int8-cuda",
                "ort-fp32-tensorrt", "ort-fp16-tensorrt")


def resolve(name: str) -> BackendSpec:
    """Validate a backend name against the table (clear error for anything unknown)."""
    spec = BackendSpec.parse(name)
    if spec.name not in REGISTRY:
        raise ConfigError(f"unknown backend '{name}' (known: {', '.join(sorted(REGISTRY))})")
    return spec


def create(config: BackendConfig) -> Backend:
    module_name, _, cls_name = REGISTRY[config.spec.name].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(config)


__all__ = ["Backend", "BackendConfig", "BackendSpec", "Unavailable", "REGISTRY", "CPU_BACKENDS", "GPU_BACKENDS",
           "resolve", "create"]
