"""CUDA graphs per bucket shape (torch CUDA, ORT's CUDA provider) and TensorRT profiles from the bucket set, with
torch.cuda and onnxruntime-gpu faked (no GPU here) in the shape of the real APIs: captured shapes replay without
calling the model, a shape whose capture fails runs eagerly with its reason, the others keep their graphs."""

from __future__ import annotations

import inspect
import logging
import sys

import numpy as np
import pytest

from bench.backends import BackendConfig, create, resolve
from bench.backends.cuda_graphs import CudaGraphs
from bench.service.config import ServiceConfig
from tests.fakes_gpu import (
    CAPTURE_REFUSED,
    CPU,
    CUDA,
    FakeGraphModel,
    FakeOrt,
    FakeOrtValue,
    FakeRunOptions,
    FakeTensor,
    FakeTorchCuda,
)


def _params(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def ids(rows: int, length: int, seed: int) -> dict:
    data = np.random.default_rng(seed).integers(1, 100, (rows, length))
    return {"input_ids": FakeTensor(data), "attention_mask": FakeTensor(np.ones((rows, length), np.int64))}


def test_torch_fakes_match_the_real_torch_cuda_graph_api():
    import torch

    assert _params(FakeTorchCuda().graph.__init__) == _params(torch.cuda.graph.__init__)
    assert _params(FakeTorchCuda.CUDAGraph.__init__) == _params(torch.cuda.CUDAGraph.__new__)[1:]  # after cls
    for name in ("stream", "current_stream", "graph_pool_handle", "synchronize"):
        assert _params(getattr(FakeTorchCuda, name)) == _params(getattr(torch.cuda, name)), name
    assert _params(FakeTorchCuda.Stream.wait_stream) == _params(torch.cuda.Stream.wait_stream)


def test_each_bucket_shape_is_captured_once_and_replayed_with_new_inputs():
    cuda = FakeTorchCuda()
    torch = type("torch", (), {"cuda": cuda})
    model = FakeGraphModel(cuda)
    graphs = CudaGraphs(torch, shapes=[(1, 64), (4, 64)])
    first = graphs.call(model, ids(4, 64, 0))  # eager, then side-stream warm-up, then the capture
    assert model.calls == 3 and list(graphs.graphs) == [(4, 64)]
    calls = model.calls
    for seed in (1, 2, 3):
        batch = ids(4, 64, seed)
        out = graphs.call(model, batch)
        expected = batch["input_ids"].data.sum(axis=1)
        assert np.array_equal(out.data[:, 0], expected)  # the replay read this call's inputs, not the captured ones
    assert model.calls == calls  # replays launch no model code
    assert graphs.graphs[(4, 64)][0].replays == 3
    assert np.array_equal(first.data[:, 0], ids(4, 64, 0)["input_ids"].data.sum(axis=1))


def test_a_shape_whose_capture_fails_runs_eagerly_with_its_reason_and_the_others_keep_graphs(caplog):
    caplog.set_level(logging.WARNING, logger="bench.backends")
    cuda = FakeTorchCuda()
    torch = type("torch", (), {"cuda": cuda})
    model = FakeGraphModel(cuda, syncs={(1, 64)})
    graphs = CudaGraphs(torch, shapes=[(1, 64), (4, 64)])
    out = graphs.call(model, ids(1, 64, 0))
    assert out.data.shape == (1, 2) and cuda.synchronized == 1  # answered eagerly; the device settled after
    graphs.call(model, ids(4, 64, 0))
    graphs.call(model, ids(2, 64, 0))  # not a bucket shape: eager, never captured
    before = model.calls
    graphs.call(model, ids(1, 64, 5))
    assert model.calls == before + 1  # the failed shape stays eager (one model call, no new capture)
    summary = graphs.summary()
    assert summary["captured"] == ["4x64"]
    assert CAPTURE_REFUSED in summary["eager"]["1x64"] and summary["eager"]["1x64"].startswith("capture failed")
    assert "not a bucket shape" in summary["eager"]["2x64"]
    assert "CUDA graph for shape 1x64 not used" in caplog.text


def test_the_torch_backend_serves_through_graphs_only_when_asked(tmp_path):
    from bench.backends.torch_backend import TorchBackend

    off = TorchBackend(BackendConfig(resolve("torch-fp16-cuda"), tmp_path))
    assert off.serving_info() == {"cuda_graphs": "off"}
    assert TorchBackend(BackendConfig(resolve("torch-fp32-cpu"), tmp_path)).serving_info() == {}


# --- ORT: one graph id per bucket shape ----------------------------------------------------------------------

def test_ort_fakes_match_the_real_graph_api():
    ort = pytest.importorskip("onnxruntime")
    assert _params(FakeOrtValue.ortvalue_from_shape_and_type) == _params(ort.OrtValue.ortvalue_from_shape_and_type)
    for name in ("update_inplace", "numpy"):
        assert _params(getattr(FakeOrtValue, name)) == _params(getattr(ort.OrtValue, name)), name
    assert _params(FakeRunOptions.add_run_config_entry) == ["arg0", "arg1"]
    assert "add_run_config_entry(self: onnxruntime.capi.onnxruntime_pybind11_state.RunOptions, arg0: str, arg1: str)" \
        in ort.RunOptions.add_run_config_entry.__doc__
    for name in ("bind_ortvalue_input", "bind_ortvalue_output"):
        assert _params(getattr(ort.IOBinding, name)) == ["name", "ortvalue"]


def ort_session(monkeypatch, tmp_path, fake: FakeOrt, **options):
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read by the fake")
    backend = create(BackendConfig(resolve("ort-fp16-cuda"), tmp_path, model,
                                   options={"cuda_graphs": "1", "graph_shapes": ((1, 64), (4, 64)), **options}))
    backend.load()
    return backend


def arrays(rows: int, length: int, seed: int) -> dict:
    data = np.random.default_rng(seed).integers(1, 100, (rows, length))
    return {"input_ids": data, "attention_mask": np.ones_like(data), "token_type_ids": np.zeros_like(data)}


def test_ort_gives_each_bucket_shape_its_own_graph_and_never_captures_other_shapes(monkeypatch, tmp_path):
    fake = FakeOrt(loads={CUDA, CPU})
    backend = ort_session(monkeypatch, tmp_path, fake)
    session = fake.sessions[-1]
    assert dict(session.requested)[CUDA]["enable_cuda_graph"] == 1
    for seed in range(3):
        for shape in ((1, 64), (4, 64)):
            x = arrays(*shape, seed)
            assert np.array_equal(backend.infer(x)[:, 0], x["input_ids"].sum(axis=1))
    x = arrays(2, 64, 0)
    backend.infer(x)  # not a bucket shape: runs with gpu_graph_id -1, so ORT neither captures nor replays it
    assert session.captured == {"1": (1, 64), "2": (4, 64)}
    assert session.calls.count("run_with_iobinding:graph=-1") == 3  # each shape's first call, and the stray one
    assert backend.serving_info()["cuda_graphs"]["captured"] == ["1x64", "4x64"]


def test_ort_capture_failure_leaves_that_shape_without_a_graph(monkeypatch, tmp_path):
    fake = FakeOrt(loads={CUDA, CPU}, capture_fails={(1, 64)})
    backend = ort_session(monkeypatch, tmp_path, fake)
    for seed in range(3):
        x = arrays(1, 64, seed)
        assert np.array_equal(backend.infer(x)[:, 0], x["input_ids"].sum(axis=1))
        backend.infer(arrays(4, 64, seed))
    info = backend.serving_info()["cuda_graphs"]
    assert info["captured"] == ["4x64"] and CAPTURE_REFUSED in info["eager"]["1x64"]


def test_ort_session_that_refuses_graphs_serves_without_them_and_says_why(monkeypatch, tmp_path):
    fake = FakeOrt(loads={CUDA, CPU}, refuse_graphs=True)
    backend = ort_session(monkeypatch, tmp_path, fake)
    x = arrays(4, 64, 0)
    assert np.array_equal(backend.infer(x)[:, 0], x["input_ids"].sum(axis=1))
    info = backend.serving_info()["cuda_graphs"]
    assert info.startswith("off: ONNX Runtime refused CUDA graphs") and "partitioned to the CUDA EP" in info
    assert "enable_cuda_graph" not in dict(fake.sessions[-1].requested)[CUDA]


# --- what the service asks of each GPU backend ---------------------------------------------------------------

def test_the_service_asks_for_graphs_of_its_warmed_shapes_and_tensorrt_profiles_per_batch_bucket(tiny_model):
    from functools import partial

    from bench.backends.ort_gpu import trt_profile_options
    from bench.service.backend_setup import gpu_options as options_for

    gpu_options = partial(options_for, model_dir=tiny_model)  # TensorRT profiles name the model's inputs

    cuda = gpu_options(ServiceConfig(backend="torch-fp16-cuda", max_batch=32))
    shapes = ServiceConfig(backend="torch-fp16-cuda", max_batch=32).buckets.warmed(None)
    assert cuda["cuda_graphs"] == "1" and cuda["graph_shapes"] == tuple(shapes)
    assert gpu_options(ServiceConfig(backend="torch-fp16-cuda", cuda_graphs=False))["cuda_graphs"] == "0"
    assert "cuda_graphs" not in gpu_options(ServiceConfig(backend="torch-fp16-cuda", shape_buckets=False))
    assert gpu_options(ServiceConfig(backend="ort-int8-cpu")) == {}
    given = gpu_options(ServiceConfig(backend="ort-fp16-cuda", backend_options=(("cuda_graphs", "0"),)))
    assert given["cuda_graphs"] == "0"  # an option given on the command line wins

    trt = gpu_options(ServiceConfig(backend="ort-fp16-tensorrt", max_batch=8))
    profiles = trt["shape_profile"]
    assert [p["input_ids"][2][0] for p in profiles] == [1, 2, 4, 8]  # one profile per batch bucket
    assert all(p["input_ids"][0][1] == 64 and p["input_ids"][2][1] == 512 for p in profiles)
    text = trt_profile_options(profiles)["trt_profile_max_shapes"]
    assert text.split(",")[:4] == ["input_ids:1x512", "attention_mask:1x512", "token_type_ids:1x512",
                                   "input_ids:2x512"]  # profiles in order, each naming every input
    [one] = gpu_options(ServiceConfig(backend="ort-fp16-tensorrt", max_batch=8, trt_bucket_profiles=False))[
        "shape_profile"]  # off: still an explicit profile (none would rebuild engines while serving), one for all
    assert one["input_ids"] == [[1, 64], [8, one["input_ids"][1][1]], [8, 512]] and 64 < one["input_ids"][1][1] < 512


def test_gpu_services_default_to_two_instances_and_cpu_services_to_one():
    assert ServiceConfig(backend="torch-fp16-cuda").effective_replicas == 2
    assert ServiceConfig(backend="ort-int8-cpu").effective_replicas == 1
    assert ServiceConfig(backend="torch-fp16-cuda", replicas=1).effective_replicas == 1
