"""GPU code paths without a GPU: backends say why they cannot run (skips, never silent drops), the ORT path
never imports torch, and the CUDA timer/NVML sampler work against fakes shaped like the real APIs."""

import subprocess
import sys

import pytest

from bench.backends import BackendConfig, create, resolve
from bench.backends.base import Unavailable
from bench.measure.sampler import ResourceSampler
from bench.model.artifacts import model_file
from tests.fakes import FakeNvml


@pytest.mark.parametrize("name,reason", [("ort-fp32-cuda", "CUDAExecutionProvider is not available"),
                                         ("ort-fp32-tensorrt", "TensorrtExecutionProvider is not available"),
                                         ("ort-int8-cuda", "not a real INT8 path"),
                                         ("torch-fp16-cuda", "sees no CUDA device")])
def test_gpu_backends_are_unavailable_with_a_reason(tiny_onnx, name, reason, monkeypatch):
    """What a CPU-only install says, on any host: a CPU build of onnxruntime lists only the CPU provider, and
    torch without a usable CUDA device says so (faked here, so the test holds on a GPU host too)."""
    import onnxruntime
    import torch

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    onnx_dir, manifest = tiny_onnx
    spec = resolve(name)
    path = model_file(onnx_dir, spec.engine, spec.precision, spec.device)
    backend = create(BackendConfig(spec, manifest["model_dir"], path))
    with pytest.raises(Unavailable, match=reason):
        backend.load()


def test_ort_path_never_imports_torch(tiny_onnx):
    onnx_dir, manifest = tiny_onnx
    code = (
        "import sys\n"
        "from bench.backends import BackendConfig, create, resolve\n"
        "from bench.model.tokenize import encode, load_tokenizer\n"
        f"b = create(BackendConfig(resolve('ort-int8-cpu'), {manifest['model_dir']!r}, "
        f"{str(onnx_dir / 'model-int8.onnx')!r}))\n"
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
    # The fake's memory in use (not its 80 GiB total) and its 250,000 mW as watts.
    assert summary["peak_vram_bytes"] == 2 * 2**30 and summary["mean_power_w"] == pytest.approx(250.0)


@pytest.mark.parametrize("name,variant", [("ort-fp16-tensorrt", "model-fp32.onnx"),
                                          ("ort-fp32-tensorrt", "model-fp32.onnx"),
                                          ("ort-fp16-cuda", "model-fp16.onnx"),
                                          ("ort-fp32-cuda", "model-fp32-fused.onnx"),
                                          ("ort-fp32-cpu", "model-fp32.onnx"), ("ort-int8-cpu", "model-int8.onnx"),
                                          ("torch-fp32-cpu", None)])
def test_each_backend_gets_its_resolved_model_file(tiny_onnx, name, variant):
    """TensorRT parses standard ONNX only: it gets the plain FP32 export (FP16 via trt_fp16_enable), never the
    fused graph with com.microsoft nodes; on CUDA, FP32 and FP16 both run the fused graph (they differ in precision
    only); torch loads the model directory itself."""
    spec = resolve(name)
    path = model_file(tiny_onnx[0], spec.engine, spec.precision, spec.device)
    assert (path.name if path else None) == variant


def test_an_ort_backend_without_a_model_file_is_a_clear_error(tiny_onnx):
    from bench.core.errors import ConfigError

    backend = create(BackendConfig(resolve("ort-int8-cpu"), tiny_onnx[1]["model_dir"], None))
    with pytest.raises(ConfigError, match="needs an ONNX file"):
        backend.load()


def test_the_small_graphs_the_measurements_build_load_in_an_older_onnxruntime(tmp_path):
    """onnx stamps its newest IR version on a new model (1.23: IR 14); onnxruntime 1.30 on the H100 machine refused
    it ("max supported IR version: 13") and the run stopped at its roofline. Every graph we build carries IR 9."""
    import onnx

    from bench.app.checks.gpu import tiny_model
    from bench.engine.gpu_peak import _matmul_graph
    from bench.measure.roofline import small_model

    path, _ = tiny_model(tmp_path)
    graphs = [onnx.load(str(path)), onnx.load_from_string(_matmul_graph(8, "float32")),
              small_model(onnx.load(str(path)).graph)]
    assert [g.ir_version for g in graphs] == [9, 9, 9]
    onnx.checker.check_model(graphs[1])
