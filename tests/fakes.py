"""Fakes shaped like real modules, for testing device code without a device.

`FakeNvml` mirrors `pynvml` (nvidia-ml-py) and `FakeTorchCuda` mirrors `torch.cuda`: same names, same parameter
names. Tests check both against the real modules, so a fake cannot drift into an API that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9


class FakeClock:
    """Time that moves only when told to. Callable for seconds; `ns()` for a perf_counter_ns stand-in."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def ns(self) -> int:
        return round(self.now_s * 1e9)

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


class NVMLError(Exception):
    """Like pynvml.NVMLError: carries the NVML return code as `.value`."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class NVMLError_Uninitialized(NVMLError):  # noqa: N801 - pynvml's spelling
    def __init__(self, *args: object) -> None:
        super().__init__(NVML_ERROR_UNINITIALIZED)


class NVMLError_InvalidArgument(NVMLError):  # noqa: N801
    def __init__(self, *args: object) -> None:
        super().__init__(NVML_ERROR_INVALID_ARGUMENT)


class NVMLError_NotSupported(NVMLError):  # noqa: N801
    def __init__(self, *args: object) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class NVMLError_NotFound(NVMLError):  # noqa: N801
    def __init__(self, *args: object) -> None:
        super().__init__(NVML_ERROR_NOT_FOUND)


class NVMLError_DriverNotLoaded(NVMLError):  # noqa: N801
    def __init__(self, *args: object) -> None:
        super().__init__(NVML_ERROR_DRIVER_NOT_LOADED)


@dataclass
class FakeGpuState:
    """What one fake GPU reports. Energy grows at `power_mw` with the fake clock."""

    name: str = "NVIDIA H100 80GB HBM3"
    total: int = 80 * 2**30
    used: int = 2 * 2**30
    processes: dict[int, int | None] = field(default_factory=dict)  # pid -> usedGpuMemory
    util_gpu: int = 70
    util_memory: int = 30
    power_mw: int = 250_000
    energy_supported: bool = True
    energy_base_mj: int = 1_000_000
    uuid: str = ""  # default: GPU-0000000<index>-…
    pci_bus_id: str = ""  # default: 00000000:<17 + index>:00.0 (NVML's form: 8-digit domain, upper case)
    power_supported: bool = True


class FakeNvml:
    """A stand-in for the `pynvml` module. Functions raise like NVML before nvmlInit or after nvmlShutdown."""

    NVMLError = NVMLError
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_NotFound = NVMLError_NotFound
    NVML_ERROR_NOT_FOUND = NVML_ERROR_NOT_FOUND
    NVML_ERROR_UNINITIALIZED = NVML_ERROR_UNINITIALIZED
    NVML_ERROR_INVALID_ARGUMENT = NVML_ERROR_INVALID_ARGUMENT
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_DRIVER_NOT_LOADED = NVML_ERROR_DRIVER_NOT_LOADED

    def __init__(
        self,
        gpus: list[FakeGpuState] | None = None,
        clock: FakeClock | None = None,
        *,
        names_as_bytes: bool = False,
        driver_loaded: bool = True,
        driver: str = "550.54.15",
        cuda: int = 12040,
    ) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpuState()]
        for i, gpu in enumerate(self.gpus):
            gpu.uuid = gpu.uuid or f"GPU-{i:08x}-0000-4000-8000-000000000000"
            gpu.pci_bus_id = gpu.pci_bus_id or f"00000000:{0x17 + i:02X}:00.0"
        self.clock = clock or FakeClock()
        self.names_as_bytes = names_as_bytes
        self.driver_loaded = driver_loaded
        self.driver = driver
        self.cuda = cuda
        self.init_count = 0  # NVML reference-counts init/shutdown

    def nvmlInit(self) -> None:
        if not self.driver_loaded:
            raise NVMLError_DriverNotLoaded()
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._check()
        self.init_count -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._check()
        if not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        return SimpleNamespace(index=index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> Any:
        self._check()
        key = uuid.decode() if isinstance(uuid, bytes) else uuid
        return self._handle_where(lambda g: g.uuid == key)

    def nvmlDeviceGetHandleByPciBusId(self, pciBusId: str | bytes) -> Any:  # noqa: N803 - pynvml's spelling
        """NVML parses the id as hex numbers: "0000:17:00.0" and "00000000:17:00.0" name the same board."""
        self._check()
        key = pciBusId.decode() if isinstance(pciBusId, bytes) else pciBusId
        return self._handle_where(lambda g: _pci_numbers(g.pci_bus_id) == _pci_numbers(key))

    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes:
        uuid = self._gpu(handle).uuid
        return uuid.encode() if self.names_as_bytes else uuid

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        self._gpu(handle)
        return handle.index

    def _handle_where(self, match) -> Any:
        for index, gpu in enumerate(self.gpus):
            if match(gpu):
                return SimpleNamespace(index=index)
        raise NVMLError_NotFound()

    def nvmlDeviceGetName(self, handle: Any) -> str | bytes:
        name = self._gpu(handle).name
        return name.encode() if self.names_as_bytes else name

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._check()
        return self.driver.encode() if self.names_as_bytes else self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check()
        return self.cuda

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        gpu = self._gpu(handle)
        return SimpleNamespace(total=gpu.total, used=gpu.used, free=gpu.total - gpu.used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        gpu = self._gpu(handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in gpu.processes.items()]

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        gpu = self._gpu(handle)
        return SimpleNamespace(gpu=gpu.util_gpu, memory=gpu.util_memory)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        gpu = self._gpu(handle)
        if not gpu.power_supported:
            raise NVMLError_NotSupported()
        return gpu.power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        gpu = self._gpu(handle)
        if not gpu.energy_supported:
            raise NVMLError_NotSupported()
        return gpu.energy_base_mj + round(gpu.power_mw * self.clock())  # mW × s = mJ

    def _check(self) -> None:
        if self.init_count <= 0:
            raise NVMLError_Uninitialized()

    def _gpu(self, handle: Any) -> FakeGpuState:
        self._check()
        return self.gpus[handle.index]


def _pci_numbers(bus_id: str) -> tuple[int, ...]:
    domain, bus, rest = bus_id.split(":")
    device, function = rest.split(".")
    return tuple(int(x, 16) for x in (domain, bus, device, function))


class FakeCudaEvent:
    """Like torch.cuda.Event: `record()` stamps the fake clock; `elapsed_time` is in milliseconds."""

    def __init__(self, owner: FakeTorchCuda, enable_timing: bool) -> None:
        self._owner = owner
        self._enable_timing = enable_timing
        self.recorded_at: float | None = None

    def record(self, stream: Any = None) -> None:
        self.recorded_at = self._owner.clock()
        self._owner.calls.append("event.record")

    def synchronize(self) -> None:
        self._owner.calls.append("event.synchronize")

    def elapsed_time(self, end_event: FakeCudaEvent) -> float:
        if not (self._enable_timing and end_event._enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'")
        if self.recorded_at is None or end_event.recorded_at is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time")
        return (end_event.recorded_at - self.recorded_at) * 1000.0


class FakeTorchCuda:
    """A stand-in for the `torch.cuda` module; `calls` logs synchronisation and event records in order."""

    def __init__(self, clock: FakeClock | None = None, name: str = "NVIDIA H100 80GB HBM3") -> None:
        self.clock = clock or FakeClock()
        self.name = name
        self.calls: list[str] = []
        self.peak_allocated = 0

    def is_available(self) -> bool:
        return True

    def synchronize(self, device: Any = None) -> None:
        self.calls.append("synchronize")

    def Event(  # noqa: N802 - torch's spelling
        self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False, external: bool = False
    ) -> FakeCudaEvent:
        return FakeCudaEvent(self, enable_timing)

    def max_memory_allocated(self, device: Any = None) -> int:
        return self.peak_allocated

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.peak_allocated = 0

    def get_device_name(self, device: Any = None) -> str:
        return self.name
