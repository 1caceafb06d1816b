"""Backend names: engine × precision × device, e.g. ort-int8-cpu. In the core because stored results, the store
and the reports name backends too; the backends themselves (bench.backends) build on it."""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.errors import ConfigError

ENGINES = ("torch", "ort", "ov", "fake")
PRECISIONS = ("fp32", "fp32-fused", "int8", "fp16", "bf16")
DEVICES = ("cpu", "cuda", "tensorrt")
GPU_DEVICES = ("cuda", "tensorrt")


@dataclass(frozen=True)
class BackendSpec:
    """What to run: engine × precision × device. Validated, but free of side effects."""

    engine: str
    precision: str
    device: str = "cpu"

    def __post_init__(self) -> None:
        for value, allowed, what in ((self.engine, ENGINES, "engine"), (self.precision, PRECISIONS, "precision"),
                                     (self.device, DEVICES, "device")):
            if value not in allowed:
                raise ConfigError(f"unknown {what} '{value}' (choose from {', '.join(allowed)})")

    @property
    def on_gpu(self) -> bool:
        """Runs on an NVIDIA GPU (CUDA or TensorRT): priced per GPU hour, measured with NVML, synchronised timers."""
        return self.device in GPU_DEVICES

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.precision}-{self.device}"

    @classmethod
    def parse(cls, name: str) -> "BackendSpec":
        """'ort-int8-cpu' → BackendSpec('ort', 'int8', 'cpu'); the device defaults to cpu."""
        parts = name.split("-")
        if parts[-1] in DEVICES and len(parts) >= 3:
            return cls(parts[0], "-".join(parts[1:-1]), parts[-1])
        if len(parts) < 2:
            raise ConfigError(f"backend '{name}' must look like ENGINE-PRECISION[-DEVICE], e.g. ort-int8-cpu")
        return cls(parts[0], "-".join(parts[1:]), "cpu")
