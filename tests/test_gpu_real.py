"""Real-GPU tests: the CUDA backends measured for real. Skipped with the reason on hosts without CUDA
(the CUDA/NVML code paths are covered here by fakes in test_measure_gpu_power.py and test_gpu_paths.py)."""

import pytest

from bench.measure.gpu import probe_gpu
from bench.runner import WorkerLimits, run_cell


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
def test_cuda_backend_measures_with_vram_and_nvml_energy(tiny_onnx, backend):
    onnx_dir, manifest = tiny_onnx
    req = {"spec": {"backend": backend, "batch": 4, "workload": "corpus", "seq_len": None, "threads": None},
           "model_dir": manifest["model_dir"], "onnx_dir": str(onnx_dir), "seed": 0,
           "stop": {"min_iters": 10, "min_time_s": 0.5, "max_time_s": 2.0}, "options": {}}
    cell = run_cell(req, WorkerLimits(timeout_s=300))
    assert cell.status == "ok", cell.reason
    assert cell.meta["timer"] == "CudaTimer" and cell.energy["source"] in ("nvml", "estimate")
    if backend.startswith("torch"):
        assert cell.device_memory["torch_max_memory_allocated_bytes"] > 0


def test_int8_on_cuda_is_skipped_not_published(tiny_onnx):
    onnx_dir, manifest = tiny_onnx
    req = {"spec": {"backend": "ort-int8-cuda", "batch": 1, "workload": "corpus", "seq_len": None, "threads": None},
           "model_dir": manifest["model_dir"], "onnx_dir": str(onnx_dir), "seed": 0, "stop": {}, "options": {}}
    cell = run_cell(req, WorkerLimits(timeout_s=120))
    assert cell.status == "skipped" and "not a real INT8 path" in cell.reason
