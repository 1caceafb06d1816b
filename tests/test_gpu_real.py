"""Real-GPU tests: the CUDA backends measured for real. Skipped with the reason on hosts without CUDA
(the CUDA/NVML code paths are covered here by fakes in test_measure_gpu_power.py and test_gpu_paths.py)."""

import pytest

from bench import backends
from bench.core.records import CellSpec
from bench.core.stats import StopRule
from bench.engine.runner import WorkerLimits, WorkerRequest, run_cell
from bench.model.artifacts import model_file


def torch_cuda_reason() -> str | None:
    from bench.measure.cuda_driver import cuda_device_reason

    reason = cuda_device_reason()
    if reason:
        return f"no usable CUDA device on this host ({reason})"
    import torch

    return None if torch.cuda.is_available() else f"torch {torch.__version__} is a build without CUDA"


def ort_cuda_reason() -> str | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (make install-gpu)"
    return None


TORCH_REASON = torch_cuda_reason()
ORT_REASON = TORCH_REASON or ort_cuda_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(TORCH_REASON is not None, reason=TORCH_REASON or "")]
needs_ort_cuda = pytest.mark.skipif(ORT_REASON is not None, reason=ORT_REASON or "")


def request(tiny_onnx, backend: str, batch: int) -> WorkerRequest:
    onnx_dir, manifest = tiny_onnx
    b = backends.resolve(backend)
    path = model_file(onnx_dir, b.engine, b.precision, b.device)
    return WorkerRequest(CellSpec(backend, batch), manifest["model_dir"], str(path) if path else None,
                         stop=StopRule(min_iters=10, min_time_s=0.5, max_time_s=2.0))


@pytest.mark.parametrize("backend", ["torch-fp32-cuda", "torch-fp16-cuda",
                                     pytest.param("ort-fp32-cuda", marks=needs_ort_cuda),
                                     pytest.param("ort-fp16-cuda", marks=needs_ort_cuda)])
def test_cuda_backend_measures_with_its_provider_and_nvml_energy(tiny_onnx, backend):
    from bench.backends.ort_gpu import CUDA
    from bench.engine.harness import gpu_for
    from bench.measure.sampler import ResourceSampler

    cell = run_cell(request(tiny_onnx, backend, 4), WorkerLimits(timeout_s=300),
                    sampler_factory=lambda pid: ResourceSampler(pid, 0.01, gpu=gpu_for(True)))
    assert cell.status == "ok", cell.reason
    assert cell.energy.source in ("nvml", "nvml-power") and cell.energy.covers == "gpu"
    assert cell.resources.vram_scope in ("process", "device") and cell.meta.tf32 == "off"
    if backend.startswith("torch"):
        assert cell.meta.timer == "CudaTimer" and cell.meta.torch_max_memory_allocated_bytes > 0
    else:
        assert cell.meta.timer == "SyncedCallTimer" and CUDA in cell.meta.providers


def test_gpu_fp16_at_batch_32_beats_the_cpu_cell(tiny_onnx):
    gpu = run_cell(request(tiny_onnx, "torch-fp16-cuda", 32), WorkerLimits(timeout_s=300))
    cpu = run_cell(request(tiny_onnx, "ort-int8-cpu", 32), WorkerLimits(timeout_s=300))
    assert gpu.status == cpu.status == "ok", (gpu.reason, cpu.reason)
    assert gpu.throughput > cpu.throughput


@needs_ort_cuda
def test_int8_on_cuda_is_skipped_not_published(tiny_onnx):
    cell = run_cell(request(tiny_onnx, "ort-int8-cuda", 1), WorkerLimits(timeout_s=120))
    assert cell.status == "skipped" and "not a real INT8 path" in cell.reason
