"""GPU code paths without a GPU: backends say why they cannot run (skips, never silent drops), the ORT path
never imports torch, and the CUDA timer/NVML sampler work against fakes shaped like the real APIs."""

import subprocess
import sys

import pytest

from bench.backends import BackendConfig, create, resolve
from bench.backends.base import Unavailable
from bench.measure.sampler import ResourceSampler
from tests.fakes import FakeNvml


@pytest.mark.parametrize("name,reason", [("ort-fp32-cuda", "CUDAExecutionProvider is not available"),
                                         ("ort-fp32-tensorrt", "TensorrtExecutionProvider is not available"),
                                         ("ort-int8-cuda", "not a real INT8 path"),
                                         ("torch-fp16-cuda", "sees no CUDA device")])
def test_gpu_backends_are_unavailable_with_a_reason(tiny_onnx, name, reason):
    onnx_dir, manifest = tiny_onnx
    backend = create(BackendConfig(resolve(name), manifest["model_dir"], onnx_dir))
    with pytest.raises(Unavailable, match=reason):
        backend.load()


def test_ort_path_never_imports_torch(tiny_onnx):
    onnx_dir, manifest = tiny_onnx
    code = (
        "import sys\n"
        "from bench.backends import BackendConfig, create, resolve\n"
        "from bench.tokenize import encode, load_tokenizer\n"
        f"b = create(BackendConfig(resolve('ort-int8-cpu'), {manifest['model_dir']!r}, {str(onnx_dir)!r}))\n"
        "b.load()\n"
        f"b.infer(encode(load_tokenizer({manifest['model_dir']!r}), ['很好']))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-500:]


def test_sampler_reads_gpu_figures_through_nvml_fake():
    import os

    from bench.measure.gpu import NvmlGpu

    gpu = NvmlGpu(0, nvml=FakeNvml()).open()
    with ResourceSampler(os.getpid(), 0.01, gpu=gpu) as sampler:
        import time

        time.sleep(0.2)
    summary = sampler.summary()
    assert summary["peak_vram_bytes"] > 0 and summary["mean_power_w"] > 0
