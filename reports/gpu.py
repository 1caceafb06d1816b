"""GPU rows in the report. A GPU cell's energy is the board's (NVML: idle included, host CPU excluded) with the host
CPU's measured or estimated beside it, so the two go in separate columns, never one; a GPU row's memory is its
VRAM (per process where NVML matched the worker's PID, else the whole board's, labelled so), a CPU row's its RSS;
and the environment names the GPU stack (driver, CUDA, cuDNN, TensorRT, ORT providers) the GPU cells used."""

from __future__ import annotations

from bench.core.results import CellResult, RunResult
from bench.core.summary import board_energy, covers_gpu, host_cpu_energy, peak_vram
from reports import fmt
from reports.common import backend_parts, na, num, on_gpu, text

CPU_ROW = "n/a (CPU)"
CPU_SOURCES = {"rapl": "measured (RAPL)", "estimate": "estimated"}
NO_BOARD = "NVML gave neither energy nor power"


def vram(cell: CellResult) -> tuple[int | None, str]:
    """(peak VRAM bytes, whose: "per-process", "device-wide" or "torch allocator"), or (None, why not)."""
    value, scope = peak_vram(cell)
    return (value, scope) if value else (None, "no NVML or framework memory reading")


def vram_cell(cell: CellResult) -> dict:
    """Peak VRAM MiB with whose it is; "n/a (CPU)" on a CPU row."""
    if not on_gpu(cell.spec.backend):
        return text(CPU_ROW)
    value, scope = vram(cell)
    return num(f"{fmt.mib(value)} ({scope})" if value else None, scope)


def memory_cell(cell: CellResult) -> dict:
    """A row's memory: peak RSS on a CPU row, peak VRAM (labelled) on a GPU row."""
    if not on_gpu(cell.spec.backend):
        return num(fmt.mib(cell.resources.peak_rss_bytes), "no RSS reading")
    value, scope = vram(cell)
    return num(f"{fmt.mib(value)} VRAM, {scope}" if value else None, scope)


def cpu_energy_cell(cell: CellResult, scale: float) -> dict:
    """The host CPU's energy per item × `scale`, "(est.)" where it is the TDP estimate."""
    per_item, source = host_cpu_energy(cell)
    value = fmt.num(per_item * scale) if per_item is not None else None
    return num(f"{value}{' (est.)' if source == 'estimate' else ''}" if value else None, "no host CPU energy reading")


def gpu_energy_cell(cell: CellResult, scale: float) -> dict:
    """The GPU board's energy per item × `scale` (NVML); "n/a (CPU)" on a CPU row."""
    if not on_gpu(cell.spec.backend):
        return text(CPU_ROW)
    per_item, _ = board_energy(cell)
    return num(fmt.num(per_item * scale) if per_item is not None else None, NO_BOARD)


def cpu_power_cell(cell: CellResult) -> dict:
    """The host CPU's mean power over the timed windows (a GPU cell's host share: its joules over the windows)."""
    e, source = cell.energy, host_cpu_energy(cell)[1]
    watts = e.mean_power_w
    if covers_gpu(e):
        watts = e.host_cpu_energy_j / cell.window_s if e.host_cpu_energy_j is not None and cell.window_s > 0 else None
    value = fmt.num(watts)
    return num(f"{value}{' (est.)' if source == 'estimate' else ''}" if value else None, "no power reading")


def gpu_power_cell(cell: CellResult) -> dict:
    """The board's mean power: from its energy over the windows, else NVML's sampled power; n/a on a CPU row."""
    if not on_gpu(cell.spec.backend):
        return text(CPU_ROW)
    watts = cell.energy.mean_power_w if board_energy(cell)[0] is not None else cell.resources.mean_power_w
    return num(fmt.num(watts), "no NVML power reading")


def cpu_source_cell(cell: CellResult) -> dict:
    source = host_cpu_energy(cell)[1]
    return text(CPU_SOURCES.get(source, str(source))) if source else na("no host CPU energy reading")


def gpu_stack(run: RunResult) -> list[tuple[str, str | None]]:
    """The environment's GPU rows: what the run's measured GPU cells ran on (None: not recorded)."""
    cells = [c for c in run.cells if c.status == "ok" and on_gpu(c.spec.backend)]
    if not cells:
        return [("GPU stack", "n/a: no GPU cell was measured in this run")]
    host = run.host
    pip = lambda *names: [(installed(run, p), f"pip {p}") for p in names]  # noqa: E731
    trt = any(backend_parts(c.spec.backend).device == "tensorrt" for c in cells)
    return [("NVIDIA driver", host.gpu_driver),
            ("CUDA", joined((loaded(cells, "cuda_runtime"), "runtime loaded by the GPU cells"),
                            (host.gpu_cuda, "the driver's CUDA version"))),
            ("cuDNN", joined((loaded(cells, "cudnn"), "loaded by the GPU cells"),
                             *pip("nvidia-cudnn-cu13", "nvidia-cudnn-cu12"))),
            ("TensorRT", joined((loaded(cells, "tensorrt"), "loaded by the TensorRT cells"),
                                *pip("tensorrt", "tensorrt-cu13", "tensorrt-cu12"))
             if trt else "n/a: no TensorRT cell was measured"),
            ("ONNX Runtime providers used", providers_used(cells))]


def loaded(cells: list[CellResult], library: str) -> str | None:
    """The versions of `library` the cells' workers loaded (bench.measure.gpu_libs), None where none recorded one."""
    return ", ".join(sorted({c.meta.gpu_libraries[library] for c in cells if library in c.meta.gpu_libraries})) or None


def installed(run: RunResult, package: str) -> str | None:
    return run.host.libraries.get(package)


def joined(*parts: tuple[str | None, str]) -> str | None:
    """"12.4 (runtime loaded by the GPU cells); 13.0 (the driver's CUDA version)", None when no part is known."""
    return "; ".join(f"{value} ({what})" for value, what in parts if value) or None


def providers_used(cells: list[CellResult]) -> str:
    """Each ORT GPU backend's providers as its sessions reported them (session.get_providers())."""
    seen: dict = {}
    for c in cells:
        if backend_parts(c.spec.backend).engine == "ort":
            seen.setdefault(c.spec.backend, set()).add(", ".join(c.meta.providers) or "not recorded")
    if not seen:
        return "n/a: no ONNX Runtime GPU cell was measured"
    return "; ".join(f"{backend}: {' | '.join(sorted(used))}" for backend, used in seen.items())
