"""Real-GPU tests: the CUDA backends measured for real. Skipped with the reason on hosts without CUDA
(the CUDA/NVML code paths are covered here by fakes in test_measure_gpu_power.py and test_gpu_paths.py)."""

import pytest

from bench import backends
from bench.artifacts import model_file
from bench.measure.gpu import probe_gpu
from bench.measure.stats import StopRule
from bench.records import CellSpec
from bench.runner import WorkerLimits, WorkerRequest, run_cell


def cuda_reason() -> str | None:
    gpu = probe_gpu()
    if gpu is None:
        return "no NVIDIA GPU/driver on this host (NVML unavailable)"
    gpu.close()
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (make install-gpu)"
    return None


REASON = cuda_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@pytest.mark.parametrize("backend", ["torch-fp32-cuda", "torch-fp16-cuda", "ort-fp32-cuda", "ort-fp16-cuda"])
def request(tiny_onnx, backend: str, batch: int) -> WorkerRequest:
    onnx_dir, manifest = tiny_onnx
    b = backends.resolve(backend)
    path = model_file(onnx_dir, b.engine, b.precision, b.device)
    return WorkerRequest(CellSpec(backend, batch), manifest["model_dir"], str(path) if path else None,
                         stop=StopRule(min_iters=10, min_time_s=0.5, max_time_s=2.0))


def test_cuda_backend_measures_with_vram_and_nvml_energy(tiny_onnx, backend):
    cell = run_cell(request(tiny_onnx, backend, 4), WorkerLimits(timeout_s=300))
    assert cell.status == "ok", cell.reason
    assert cell.meta.timer == "CudaTimer" and cell.energy.source in ("nvml", "estimate")
    if backend.startswith("torch"):
        assert cell.meta.torch_max_memory_allocated_bytes > 0


def test_int8_on_cuda_is_skipped_not_published(tiny_onnx):
    cell = run_cell(request(tiny_onnx, "ort-int8-cuda", 1), WorkerLimits(timeout_s=120))
    assert cell.status == "skipped" and "not a real INT8 path" in cell.reason
