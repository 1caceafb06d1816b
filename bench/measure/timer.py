"""One timer that knows the device: perf_counter_ns on the CPU, CUDA events plus synchronise on the GPU."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

CUDA_DEVICES = ("cuda", "tensorrt")


class Timer(Protocol):
    """Times one call of `fn` and returns its duration in seconds."""

    device: str

    def measure(self, fn: Callable[[], Any]) -> float: ...


class CpuTimer:
    """Wall-clock time of `fn()` from a nanosecond monotonic clock (injectable so tests use a fake)."""

    device = "cpu"

    def __init__(self, clock_ns: Callable[[], int] = time.perf_counter_ns) -> None:
        self._clock_ns = clock_ns

    def measure(self, fn: Callable[[], Any]) -> float:
        start = self._clock_ns()
        fn()
        return (self._clock_ns() - start) / 1e9


class CudaTimer:
    """GPU time of `fn()` between two CUDA events on the current stream.

    Takes the `torch.cuda` module (or a fake with the same names) so it can be tested without a GPU.
    """

    device = "cuda"

    def __init__(self, cuda: Any) -> None:
        self._cuda = cuda

    def measure(self, fn: Callable[[], Any]) -> float:
        # Drain work queued before this call, or its tail would be billed to this iteration.
        self._cuda.synchronize()
        start = self._cuda.Event(enable_timing=True)
        end = self._cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0  # elapsed_time is in milliseconds


class SyncedCallTimer(CpuTimer):
    """Host clock around a GPU call that synchronises by itself: ONNX Runtime with IO binding calls
    `synchronize_inputs()` before and `synchronize_outputs()` after `run_with_iobinding`, then copies the logits
    to the host, so nothing of the call is still queued when the clock stops. ORT runs on its own CUDA stream:
    torch's events on torch's stream would time nothing of ORT's work, and the ORT path must not need torch."""

    device = "cuda"


def make_timer(device: str, cuda_module: Any = None, engine: str = "torch") -> CpuTimer | CudaTimer:
    """The timer for `device` ("cpu", "cuda", "cuda:1", "tensorrt") and `engine`: ORT GPU calls get the host clock
    around their own synchronisation; torch is imported only for torch GPU cells."""
    kind = device.split(":", 1)[0].lower()
    if kind == "cpu":
        return CpuTimer()
    if kind in CUDA_DEVICES and engine != "torch":
        return SyncedCallTimer()
    if kind in CUDA_DEVICES:
        if cuda_module is None:
            import torch.cuda as cuda_module  # lazy: CPU-only paths must not pay for (or need) torch
        return CudaTimer(cuda_module)
    raise ValueError(f"unknown device {device!r}; expected cpu, cuda or tensorrt")
