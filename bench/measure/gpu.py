"""NVML (nvidia-ml-py, module `pynvml`) wrapper: GPU identity, memory, utilisation, power and energy.

The nvml module is injectable so tests run against `tests.fakes.FakeNvml`; pynvml is imported only when a GPU
is actually probed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# pynvml's value for NVML_ERROR_NOT_SUPPORTED, used when a fake module does not define the constant.
_NOT_SUPPORTED = 3


class NvmlGpu:
    """One NVIDIA GPU seen through NVML. Call `open()` first (or use it as a context manager)."""

    def __init__(self, index: int = 0, nvml: Any = None) -> None:
        self.index = index
        self._nvml = nvml
        self._handle: Any = None

    @property
    def nvml(self) -> Any:
        if self._nvml is None:
            import pynvml  # lazy: hosts without a GPU never need it

            self._nvml = pynvml
        return self._nvml

    def open(self) -> NvmlGpu:
        self.nvml.nvmlInit()
        try:
            self._handle = self.nvml.nvmlDeviceGetHandleByIndex(self.index)
        except self.nvml.NVMLError:
            self.nvml.nvmlShutdown()  # nvmlInit is reference counted: undo ours before reporting the failure
            raise
        return self

    def close(self) -> None:
        if self._handle is not None:
            self._handle = None
            self.nvml.nvmlShutdown()

    def __enter__(self) -> NvmlGpu:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict:
        """Name, driver version, CUDA driver version ("12.4") and total memory in bytes."""
        cuda = int(self.nvml.nvmlSystemGetCudaDriverVersion())
        return {
            "index": self.index,
            "name": _text(self.nvml.nvmlDeviceGetName(self.handle)),
            "driver": _text(self.nvml.nvmlSystemGetDriverVersion()),
            "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}",
            "total_memory_bytes": int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).total),
        }

    def memory_used(self) -> int:
        """Device memory in use by all processes, in bytes."""
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def process_memory(self, pid: int) -> int | None:
        """Device memory used by compute process `pid` in bytes; None if it has none or NVML cannot tell."""
        for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
            if proc.pid == pid:
                return None if proc.usedGpuMemory is None else int(proc.usedGpuMemory)
        return None

    def utilization(self) -> int:
        """Percent of the last sample period in which a kernel was running."""
        return int(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def power_w(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # NVML reports milliwatts

    def energy_j(self) -> float | None:
        """Energy counter since the driver loaded, in joules; None where the GPU has no counter (pre-Volta)."""
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0  # millijoules
        except self.nvml.NVMLError as exc:
            if _is_not_supported(self.nvml, exc):
                return None
            raise

    def sample(self, pid: int) -> dict:
        """One reading of everything the resource sampler tracks; a field NVML cannot give is None."""
        return {
            "vram_bytes": self._optional(self.memory_used),
            "proc_vram_bytes": self._optional(lambda: self.process_memory(pid)),
            "gpu_util_percent": self._optional(self.utilization),
            "power_w": self._optional(self.power_w),
        }

    def _optional(self, read: Callable[[], Any]) -> Any:
        # Only NVML errors become None (e.g. power not supported on this board); bugs still raise.
        try:
            return read()
        except self.nvml.NVMLError:
            return None

    @property
    def handle(self) -> Any:
        if self._handle is None:
            raise RuntimeError("NvmlGpu is not open: call open() first")
        return self._handle


def probe_gpu(index: int = 0, nvml: Any = None) -> NvmlGpu | None:
    """An opened NvmlGpu, or None when pynvml is missing or NVML cannot start (no driver, no such GPU)."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None
    try:
        return NvmlGpu(index, nvml).open()
    except nvml.NVMLError:
        return None


def _is_not_supported(nvml: Any, exc: BaseException) -> bool:
    code = getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", _NOT_SUPPORTED)
    return getattr(exc, "value", None) == code


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
