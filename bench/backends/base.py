"""The backend protocol: a small class with load(), infer(inputs), close() and a name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Mapping

import numpy as np

from bench.core.errors import ConfigError
from bench.core.signature import SIGNATURE_FILE, ModelSignature, read_signature
from bench.core.specs import BackendSpec


@dataclass(frozen=True)
class BackendConfig:
    """How to load it: model directory (tokenizer, torch weights), the resolved ONNX file an ORT backend runs,
    thread count and backend-specific options. Callers resolve the file (bench.model.artifacts.model_file)."""

    spec: BackendSpec
    model_dir: Path
    model_file: Path | None = None
    threads: int | None = None
    options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (got {self.threads})")


class Backend(ABC):
    """Load once, infer many batches of encoded inputs, close. infer() returns the task's answer: logits (batch,
    labels) for a classifier, one vector per text (batch, hidden) for an embedding model (bench.core.signature)."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.spec.name

    @cached_property
    def signature(self) -> ModelSignature | None:
        """The model's signature (its inputs, output and task), read from the model directory; None for a bare
        graph with neither config.json nor signature.json beside it (the GPU checks' one-MatMul graphs): its
        output is returned as it is."""
        folder = Path(self.config.model_dir)
        if not any((folder / name).exists() for name in ("config.json", SIGNATURE_FILE)):
            return None
        return read_signature(folder)

    def finish(self, raw: np.ndarray, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The task's answer from the graph's output (a token-level output pooled: ModelSignature.finish)."""
        return raw if self.signature is None else self.signature.finish(raw, inputs)

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

    def serving_info(self) -> dict:
        """How it serves, for the service's /healthz: CUDA graphs captured and shapes run eagerly with the reason."""
        return {}

    def engine_build_s(self, first_infer_s: float) -> float | None:
        """Seconds spent building an engine during load (TensorRT); None where there is none to build."""
        return None


class Unavailable(Exception):
    """This backend cannot run on this host (no CUDA, provider missing, not a real path): a skip reason."""
