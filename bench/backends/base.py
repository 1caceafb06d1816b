"""The backend protocol: a small class with load(), infer(inputs), close() and a name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from bench.errors import ConfigError

ENGINES = ("torch", "ort", "ov", "fake")
PRECISIONS = ("fp32", "fp32-fused", "int8", "fp16", "bf16")
DEVICES = ("cpu", "cuda", "tensorrt")


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


@dataclass(frozen=True)
class BackendConfig:
    """How to load it: model directory (tokenizer, torch weights), the resolved ONNX file an ORT backend runs,
    thread count and backend-specific options. Callers resolve the file (bench.artifacts.model_file)."""

    spec: BackendSpec
    model_dir: Path
    model_file: Path | None = None
    threads: int | None = None
    options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (got {self.threads})")


class Backend(ABC):
    """Load once, infer many batches of encoded inputs, close. infer() returns logits (batch, labels)."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.spec.name

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...

    def close(self) -> None:
        """Release the model; default is to drop references."""

    def device_memory(self) -> dict:
        """Framework-level device memory figures (e.g. torch.cuda.max_memory_allocated); empty on CPU."""
        return {}

    def run_info(self) -> dict:
        """What ran, for the record (WorkerMeta fields): providers actually used, the TF32 setting."""
        return {}

    def engine_build_s(self, first_infer_s: float) -> float | None:
        """Seconds spent building an engine during load (TensorRT); None where there is none to build."""
        return None


class Unavailable(Exception):
    """This backend cannot run on this host (no CUDA, provider missing, not a real path): a skip reason."""
