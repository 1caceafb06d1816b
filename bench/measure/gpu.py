"""NVML (nvidia-ml-py, module `pynvml`) wrapper: GPU identity, memory, utilisation, power and energy.

The nvml module is injectable so tests run against `tests.fakes.FakeNvml`; pynvml is imported only when a GPU
is actually probed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

# pynvml's value for NVML_ERROR_NOT_SUPPORTED, used when a fake module does not define the constant.
_NOT_SUPPORTED = 3


class NvmlGpu:
    """One NVIDIA GPU seen through NVML. Call `open()` first (or use it as a context manager).

    Found by `uuid` or `pci_bus_id` when given (the identity of a CUDA device: see `open_cuda_gpu`), else by NVML
    `index`. NVML numbers boards by PCI bus and ignores CUDA_VISIBLE_DEVICES, so an index is only right when
    nothing else is known; `matched_by` says which was used."""

    def __init__(self, index: int = 0, nvml: Any = None, *, uuid: str | None = None,
                 pci_bus_id: str | None = None) -> None:
        self.index = index
        self.uuid, self.pci_bus_id = uuid, pci_bus_id
        self.matched_by: str | None = None
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
            self._handle, self.matched_by = self._lookup()
            self.index = int(self.nvml.nvmlDeviceGetIndex(self._handle))  # NVML's own number, for the record
        except self.nvml.NVMLError:
            self.nvml.nvmlShutdown()  # nvmlInit is reference counted: undo ours before reporting the failure
            raise
        return self

    def _lookup(self) -> tuple[Any, str]:
        """By UUID, else PCI bus id; by index only when neither is known (never as a silent fallback: the
        index of another board would measure the wrong GPU)."""
        tries = [(self.nvml.nvmlDeviceGetHandleByUUID, self.uuid, "uuid"),
                 (self.nvml.nvmlDeviceGetHandleByPciBusId, self.pci_bus_id, "pci bus id")]
        tries = [t for t in tries if t[1]] or [(self.nvml.nvmlDeviceGetHandleByIndex, self.index, "index")]
        for get, key, how in tries[:-1]:
            try:
                return get(key), how
            except self.nvml.NVMLError:
                continue
        get, key, how = tries[-1]
        return get(key), how

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
            "uuid": self._optional(lambda: _text(self.nvml.nvmlDeviceGetUUID(self.handle))),
            "matched_by": self.matched_by,
        }

    def describe(self) -> str:
        """Which board this is and how it was found, for the record of a cell."""
        key = self.uuid or self.pci_bus_id
        return f"NVML GPU {self.index}{' ' + key if key else ''} (matched by {self.matched_by})"

    def memory_used(self) -> int:
        """Device memory in use by all processes, in bytes."""
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def process_memory(self, pid: int) -> int | None:
        """Device memory used by compute process `pid` in bytes; None if it has none or NVML cannot tell. Inside a
        container NVML lists host PIDs, which never equal ours: callers then fall back to device-wide memory and
        must say so (the sampler's `vram_scope`)."""
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


def probe_gpu(index: int = 0, nvml: Any = None, **identity: str | None) -> NvmlGpu | None:
    """An opened NvmlGpu (by NVML index, or by `uuid=` / `pci_bus_id=`), or None when pynvml is missing or NVML
    cannot start (no driver, no such GPU)."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None
    try:
        return NvmlGpu(index, nvml, **identity).open()
    except nvml.NVMLError:
        return None


def cuda_identity(ordinal: int = 0, driver_loader: Callable[[], tuple] | None = None,
                  env: Mapping[str, str] = os.environ) -> dict:
    """How to find CUDA device `ordinal` in NVML: its UUID and PCI bus id from the CUDA driver, else what
    CUDA_VISIBLE_DEVICES says (a UUID, or a number that is NVML's only when CUDA_DEVICE_ORDER=PCI_BUS_ID)."""
    from bench.measure.cuda_driver import load_driver

    driver, _ = (driver_loader or load_driver)()
    if driver is not None:
        try:
            return {"uuid": driver.uuid(ordinal), "pci_bus_id": driver.pci_bus_id(ordinal)}
        except OSError:
            pass
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    entry = visible[ordinal] if ordinal < len(visible) else str(ordinal)
    if entry.startswith(("GPU-", "MIG-")):
        return {"uuid": entry}
    if entry.isdigit() and env.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":
        return {"index": int(entry)}
    return {}  # CUDA's default order is fastest-first: a bare number cannot be mapped to NVML's


def open_cuda_gpu(ordinal: int = 0, nvml: Any = None, driver_loader: Callable[[], tuple] | None = None,
                  env: Mapping[str, str] = os.environ) -> NvmlGpu | None:
    """NVML's view of CUDA device `ordinal` (the one `--gpu N` and the backends use), or None when NVML is
    missing or the device cannot be identified. Never NVML index 0 by default: that may be another board."""
    identity = cuda_identity(ordinal, driver_loader, env)
    if not identity:
        return None
    return probe_gpu(identity.pop("index", 0), nvml, **identity)


def _is_not_supported(nvml: Any, exc: BaseException) -> bool:
    code = getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", _NOT_SUPPORTED)
    return getattr(exc, "value", None) == code


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
