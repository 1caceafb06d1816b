"""The CUDA driver API (libcuda, through ctypes): is there a CUDA device, which driver CUDA version, and the UUID and
PCI bus id of CUDA device N, so NVML can be asked about that very board.

Standard library only: the ORT-only worker, the harness and `make install-gpu` use it without torch. libcuda
numbers devices the way every CUDA program in this process does (it honours CUDA_VISIBLE_DEVICES and
CUDA_DEVICE_ORDER); NVML ignores both and numbers boards by PCI bus, so its index 0 need not be CUDA's device 0.

`python -m bench.measure.cuda_driver` prints the driver's CUDA version ("13.0"), or nothing and exit code 3.
"""

from __future__ import annotations

import ctypes
import os
import sys

_LIBRARY = "libcuda.so.1"


class CudaDriver:
    """The few libcuda calls we need. Every method raises OSError when the driver reports an error."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._check(lib.cuInit(0), "cuInit")

    def _check(self, status: int, call: str) -> None:
        if status != 0:  # CUDA_SUCCESS
            raise OSError(f"{call} failed with CUresult {status}")

    def version(self) -> str:
        """The CUDA version the driver supports, e.g. "12.4" (cuDriverGetVersion gives 12040)."""
        value = ctypes.c_int()
        self._check(self._lib.cuDriverGetVersion(ctypes.byref(value)), "cuDriverGetVersion")
        return f"{value.value // 1000}.{value.value % 1000 // 10}"

    def name(self, ordinal: int) -> str:
        buf = ctypes.create_string_buffer(256)
        self._check(self._lib.cuDeviceGetName(buf, 256, self._device(ordinal)), "cuDeviceGetName")
        return buf.value.decode("utf-8", "replace")

    def device_count(self) -> int:
        value = ctypes.c_int()
        self._check(self._lib.cuDeviceGetCount(ctypes.byref(value)), "cuDeviceGetCount")
        return value.value

    def _device(self, ordinal: int) -> ctypes.c_int:
        device = ctypes.c_int()
        self._check(self._lib.cuDeviceGet(ctypes.byref(device), ordinal), f"cuDeviceGet({ordinal})")
        return device

    def pci_bus_id(self, ordinal: int) -> str:
        """"0000:3b:00.0": the form nvmlDeviceGetHandleByPciBusId accepts."""
        buf = ctypes.create_string_buffer(32)
        self._check(self._lib.cuDeviceGetPCIBusId(buf, 32, self._device(ordinal)), "cuDeviceGetPCIBusId")
        return buf.value.decode("ascii")

    def uuid(self, ordinal: int) -> str:
        """"GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx": the form nvmlDeviceGetUUID returns for a whole GPU."""
        raw = (ctypes.c_ubyte * 16)()
        self._check(self._lib.cuDeviceGetUuid(ctypes.byref(raw), self._device(ordinal)), "cuDeviceGetUuid")
        return format_uuid(bytes(raw))


def format_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def load_driver(library: str = _LIBRARY) -> tuple[CudaDriver | None, str | None]:
    """(driver, None), or (None, why not): no libcuda (no NVIDIA driver) or a driver that cannot start."""
    try:
        return CudaDriver(ctypes.CDLL(library)), None
    except OSError as exc:
        return None, f"no usable CUDA driver ({library}: {exc})"


def cuda_device_reason(ordinal: int = 0, driver_loader=load_driver) -> str | None:
    """Why CUDA device `ordinal` cannot be used here, or None when libcuda lists it."""
    driver, why = driver_loader()
    if driver is None:
        return why
    try:
        count = driver.device_count()
    except OSError as exc:
        return f"the CUDA driver lists no devices ({exc})"
    if ordinal < count:
        return None
    return (f"the CUDA driver lists {count} device(s), so there is no device {ordinal} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})")


def main() -> int:
    driver, why = load_driver()
    if driver is None:
        print(why, file=sys.stderr)
        return 3
    print(driver.version())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
