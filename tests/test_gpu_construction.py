"""The GPU half, correct by construction, proven without a GPU: one test per defect, against fakes shaped like
onnxruntime-gpu (a provider that is listed but cannot load), libcuda and torch.cuda (tests/fakes_gpu.py)."""

from __future__ import annotations

import contextlib
import inspect
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from bench.backends import BackendConfig, Unavailable, create, ort_gpu, resolve
from tests.fakes_gpu import CPU, CUDA, TRT, FakeIOBinding, FakeLibcuda, FakeOrt, FakeOrtSession

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_ort(monkeypatch):
    """onnxruntime-gpu on a host whose CUDA libraries are missing: CUDA and TensorRT listed, only the CPU loads."""
    fake = FakeOrt(loads={CPU})
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    return fake


def ort_cell(tmp_path, name: str, **options):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read by the fake")
    return create(BackendConfig(resolve(name), tmp_path, model, options=options))


def _params(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "_module")]


def test_ort_fakes_match_the_real_onnxruntime_api():
    ort = pytest.importorskip("onnxruntime")
    for name in ("bind_cpu_input", "bind_output", "synchronize_inputs", "synchronize_outputs", "copy_outputs_to_cpu"):
        assert _params(getattr(FakeIOBinding, name)) == _params(getattr(ort.IOBinding, name)), name
    for name in ("get_providers", "get_provider_options", "io_binding", "run_with_iobinding", "run"):
        assert _params(getattr(FakeOrtSession, name)) == _params(getattr(ort.InferenceSession, name)), name
    assert _params(FakeOrtSession.__init__) == _params(ort.InferenceSession.__init__)
    assert _params(FakeOrt.preload_dlls) == _params(ort.preload_dlls)


# --- defect 3: providers actually used -------------------------------------------------------------------------

def test_cuda_that_fell_back_is_unavailable_with_orts_own_reason(fake_ort, tmp_path):
    with pytest.raises(Unavailable) as err:
        ort_cell(tmp_path, "ort-fp32-cuda").load()
    # With the CPU fallback disabled ORT refuses the session itself; the reason is what it logged on fd 2.
    assert "CUDAExecutionProvider did not load, so ONNX Runtime refused the session" in str(err.value)
    assert "libcudart.so.13: cannot open shared object file" in str(err.value)  # ORT's words, from fd 2
    assert fake_ort.preloaded == 1  # preload_dlls() ran first (the pip CUDA libraries of the [cuda] extra)
    assert fake_ort.sessions == []  # no session at all, not a CPU one published as CUDA


def test_a_gpu_session_never_falls_back_to_the_cpu_unless_asked(fake_ort, tmp_path):
    """CPU fallback disabled (ORT's session.disable_cpu_ep_fallback), no CPU provider listed (ORT refuses both at
    once); a graph node left to the CPU fails the start with ORT's words and says how to allow it."""
    fake_ort.loads, fake_ort.cpu_nodes = {CUDA, CPU}, True
    with pytest.raises(Unavailable) as err:
        ort_cell(tmp_path, "ort-fp32-cuda").load()
    assert "assigned to the default CPU EP, but fallback to CPU EP has been explicitly disabled" in str(err.value)
    assert "--backend-option cpu_fallback=1" in str(err.value)
    allowed = ort_cell(tmp_path, "ort-fp32-cuda", cpu_fallback="1")
    allowed.load()  # asked for: the CPU provider is listed and the fallback allowed
    assert [p for p, _ in fake_ort.sessions[-1].requested] == [CUDA, CPU]
    fake_ort.cpu_nodes = False
    strict = ort_cell(tmp_path, "ort-fp32-cuda")
    strict.load()
    assert [p for p, _ in fake_ort.sessions[-1].requested] == [CUDA]


def test_tensorrt_that_fell_back_to_cuda_is_not_published_as_tensorrt(fake_ort, tmp_path, capsys):
    fake_ort.loads = {CUDA, CPU}
    with pytest.raises(Unavailable, match="TensorrtExecutionProvider did not load; the session runs on "
                                          "CUDAExecutionProvider, CPUExecutionProvider: EP Error") as err:
        ort_cell(tmp_path, "ort-fp16-tensorrt", trt_cache_dir=str(tmp_path / "trt")).load()
    assert "Please install TensorRT libraries" in str(err.value) and "Failed to create Tensorrt" in str(err.value)
    assert "EP Error" not in capsys.readouterr().out  # ORT's stdout notice is kept off the worker's stdout


def test_worker_turns_a_fallback_into_a_skipped_cell(fake_ort, tiny_onnx, capsys):
    from bench.core.records import CellSpec
    from bench.engine.runner import WorkerRequest
    from bench.engine.worker import outcome

    onnx_dir, manifest = tiny_onnx
    req = WorkerRequest(CellSpec("ort-fp32-cuda"), manifest["model_dir"], str(onnx_dir / "model-fp32-fused.onnx"))
    cell = outcome(req)
    assert cell["status"] == "skipped" and "Require cuDNN 9.* and CUDA 13.*" in cell["reason"]
    assert "preload_dlls" not in capsys.readouterr().out  # stdout carries the worker's result only


def test_parity_gate_records_fp16_as_not_measured_instead_of_aborting(fake_ort, tiny_model, monkeypatch, tmp_path):
    from bench.backends.fake import FakeBackend
    from exporters import pipeline

    (tmp_path / "model-fp16.onnx").write_bytes(b"not read by the fake")
    fp16 = BackendConfig(resolve("ort-fp16-cuda"), tiny_model, tmp_path / "model-fp16.onnx")
    monkeypatch.setattr(pipeline, "parity_runners", lambda *a, **k: {"fp16": fp16})
    real_create = create
    monkeypatch.setattr("bench.backends.create", lambda cfg: FakeBackend(cfg) if cfg.spec.engine == "torch"
                        else real_create(cfg))
    out = pipeline.run_parity(tiny_model, tmp_path, pipeline.ExportConfig(parity_n=4), synthetic=True)
    assert out["fp16"]["passed"] is None and "did not load" in out["fp16"]["not_measured"]


# --- defect 7: ORT GPU timing without torch, synchronised ------------------------------------------------------

def test_io_binding_synchronises_around_each_call_on_the_chosen_device(fake_ort, tmp_path):
    fake_ort.loads = {CUDA, CPU}
    backend = ort_cell(tmp_path, "ort-fp16-cuda", device_id=1)
    backend.load()
    backend.infer({"input_ids": np.zeros((2, 5), np.int64), "attention_mask": np.ones((2, 5), np.int64)})
    assert fake_ort.sessions[-1].calls == ["bind_cpu_input:input_ids", "bind_cpu_input:attention_mask",
                                           "bind_output:logits:cuda:1", "synchronize_inputs", "run_with_iobinding",
                                           "synchronize_outputs", "copy_outputs_to_cpu"]


def test_ort_gpu_timer_is_the_host_clock_and_never_imports_torch():
    code = ("import sys\nfrom bench.measure.timer import make_timer\n"
            "t = make_timer('cuda', engine='ort'), make_timer('tensorrt', engine='ort')\n"
            "print(type(t[0]).__name__, type(t[1]).__name__, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["SyncedCallTimer", "SyncedCallTimer", "False"], out.stderr[-400:]


def test_gpu_warm_up_covers_every_shape_and_lasts_its_time():
    from bench.engine.worker import warm_up
    from bench.measure.timer import CpuTimer

    batches = [{"input_ids": np.zeros((2, w), np.int64)} for w in (5, 9, 13, 21)]
    seen = []
    backend = SimpleNamespace(infer=lambda b: seen.append(b["input_ids"].shape[1]))
    req = SimpleNamespace(warmup_iters=3, gpu_warmup_s=0.05)
    t0 = time.perf_counter()
    warm = warm_up(req, backend, batches, CpuTimer(), on_gpu=True)
    assert set(seen) == {5, 9, 13, 21} and time.perf_counter() - t0 >= 0.05 and len(warm) == len(seen)
    seen.clear()
    warm_up(req, backend, batches, CpuTimer(), on_gpu=False)
    assert seen == [9, 13, 21]  # CPU cells keep their fixed warm-up


# --- defect 4/5: TensorRT caches, profiles, engine build as a load phase ---------------------------------------

def test_tensorrt_profile_is_built_from_the_shapes_the_cell_feeds():
    batches = [{"input_ids": np.zeros((8, w)), "attention_mask": np.zeros((8, w))} for w in (17, 40, 23, 31, 12)]
    profile = ort_gpu.shape_profile(batches)
    assert profile["input_ids"] == [[8, 12], [8, 23], [8, 40]]
    opts = ort_gpu.trt_profile_options(profile)
    assert opts == {"trt_profile_min_shapes": "input_ids:8x12,attention_mask:8x12",
                    "trt_profile_opt_shapes": "input_ids:8x23,attention_mask:8x23",
                    "trt_profile_max_shapes": "input_ids:8x40,attention_mask:8x40"}


def test_tensorrt_gets_engine_and_timing_caches_under_the_artifacts_folder(fake_ort, tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTBENCH_HOME", str(tmp_path))
    fake_ort.loads = {TRT, CUDA, CPU}
    backend = ort_cell(tmp_path, "ort-fp16-tensorrt", device_id=2,
                       shape_profile={"input_ids": [[1, 4], [1, 8], [1, 9]]})
    backend.load()
    trt, cuda = fake_ort.sessions[-1].requested  # no CPU provider: its fallback is disabled
    cache = next((tmp_path / "artifacts" / "tensorrt-cache").glob(f"{tmp_path.name}-model-fp16-*"))
    assert trt == (TRT, {"device_id": 2, "trt_fp16_enable": 1, "trt_engine_cache_enable": 1,
                         "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": 1,
                         "trt_timing_cache_path": str(cache), "trt_profile_min_shapes": "input_ids:1x4",
                         "trt_profile_opt_shapes": "input_ids:1x8", "trt_profile_max_shapes": "input_ids:1x9"})
    assert cuda == (CUDA, {"device_id": 2, "use_tf32": 0})
    assert backend.run_info() == {"providers": (TRT, CUDA, CPU), "tf32": "trt-default"}


def test_a_re_exported_model_never_runs_a_stale_engine(tmp_path):
    model = tmp_path / "model-fp32.onnx"
    model.write_bytes(b"weights v1")
    first = ort_gpu.trt_cache_dir(model, fp16=True, root=tmp_path / "cache")
    model.write_bytes(b"weights v2, same graph")
    assert ort_gpu.trt_cache_dir(model, fp16=True, root=tmp_path / "cache") != first


def test_engine_build_time_is_its_own_load_phase_and_a_cached_engine_costs_none(fake_ort, tmp_path):
    fake_ort.loads = {TRT, CUDA, CPU}
    first = ort_cell(tmp_path, "ort-fp32-tensorrt", trt_cache_dir=str(tmp_path / "trt"))
    first.load()
    assert first.engine_build_s(first_infer_s=0.001) >= 0.02  # built at session creation (explicit profile)
    second = ort_cell(tmp_path, "ort-fp32-tensorrt", trt_cache_dir=str(tmp_path / "trt"))
    second.load()
    assert second.engine_build_s(first_infer_s=0.001) == 0.0  # reused from the cache


def test_tensorrt_that_took_none_of_the_graph_is_unavailable(fake_ort, tmp_path):
    fake_ort.loads, fake_ort.trt_builds_engine = {TRT, CUDA, CPU}, False
    backend = ort_cell(tmp_path, "ort-fp32-tensorrt", trt_cache_dir=str(tmp_path / "trt"))
    backend.load()
    with pytest.raises(Unavailable, match="TensorRT built no engine"):
        backend.engine_build_s(first_infer_s=0.01)


# --- defect 6: TF32 explicit and equal, recorded; defect 8: --gpu -----------------------------------------------

def test_tf32_is_explicit_and_equal_for_both_engines(fake_ort, tmp_path):
    from bench.backends.torch_backend import set_tf32

    fake_ort.loads = {CUDA, CPU}
    for tf32, flag in ((False, 0), (True, 1)):
        backend = ort_cell(tmp_path, "ort-fp32-cuda", tf32=tf32)
        backend.load()
        assert fake_ort.sessions[-1].requested[0][1]["use_tf32"] == flag
        torch = SimpleNamespace(backends=SimpleNamespace(cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=None)),
                                                         cudnn=SimpleNamespace(allow_tf32=None)))
        set_tf32(torch, tf32)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
        assert backend.run_info()["tf32"] == ("on" if tf32 else "off")


def test_gpu_flag_reaches_the_backend_and_the_nvml_lookup(tiny_onnx):
    from bench.app.args import run_config
    from bench.app.cli import build_parser
    from bench.core.records import CellSpec
    from bench.engine.harness import cell_request
    from bench.engine.worker import backend_config

    args = build_parser(["run", "--gpu", "1"]).parse_args(["run", "--gpu", "1"])
    cfg = run_config(args)
    req = cell_request(cfg, CellSpec("ort-fp32-cuda"), tiny_onnx[1]["model_dir"], tiny_onnx[0])
    assert cfg.gpu == 1 and req.gpu == 1 and req.model_file.endswith("model-fp32-fused.onnx")
    batches = [{"input_ids": np.zeros((1, 6), np.int64)}]
    assert backend_config(req, resolve("ort-fp32-cuda"), batches).options["device_id"] == 1


# --- defects 10, 13 and the `check gpu` command -----------------------------------------------------------------

def test_nvml_missing_but_cuda_working_does_not_skip_gpu_cells(monkeypatch):
    from bench.engine.harness import host_gpu_reason
    from bench.measure.cuda_driver import CudaDriver

    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    lib = FakeLibcuda([("NVIDIA H100 80GB HBM3", bytes(range(16)), "0000:17:00.0")])
    assert host_gpu_reason(0, lambda: (CudaDriver(lib), None)) is None
    assert "lists 1 device(s), so there is no device 1" in host_gpu_reason(1, lambda: (CudaDriver(lib), None))
    assert host_gpu_reason(0, lambda: (None, "no usable CUDA driver")).startswith("no usable NVIDIA GPU")


def test_gpu_workers_get_no_address_space_cap():
    from bench.core.records import CellSpec
    from bench.engine.runner import WorkerLimits, WorkerRequest, memory_limit_mb

    limits = WorkerLimits(memory_limit_mb=4096)
    assert memory_limit_mb(WorkerRequest(CellSpec("torch-fp16-cuda"), "m"), limits) is None
    assert memory_limit_mb(WorkerRequest(CellSpec("ort-int8-cpu"), "m"), limits) == 4096


BLOCK = ("import sys, importlib.abc\n"
         "class Block(importlib.abc.MetaPathFinder):\n"
         "    def find_spec(self, name, path=None, target=None):\n"
         "        if name.split('.')[0] in {names!r}: raise ImportError(f'blocked: {{name}}', name=name)\n"
         "sys.meta_path.insert(0, Block())\n"
         "sys.argv = ['bench', 'check', 'gpu']\n"
         "import runpy\n"
         "try:\n    runpy.run_module('bench', run_name='__main__')\n"
         "except SystemExit as exc:\n    print('EXIT', exc.code)\n")


def test_check_gpu_on_a_host_without_gpu_says_so_and_exits_not_available():
    """Also on a bare GPU host: nothing beyond torch, onnx, onnxruntime, nvidia-ml-py, numpy and scipy may be
    imported on the way (the air-gapped `PYTHONPATH=. python3 -m bench check gpu`)."""
    from bench.measure.cuda_driver import cuda_device_reason

    if cuda_device_reason() is None:
        pytest.skip("this host has a CUDA device: `check gpu` runs its checks here")
    names = ("fastapi", "locust", "jinja2", "matplotlib", "transformers", "tokenizers", "psutil", "pandas", "tqdm",
             "uvicorn", "modelscope", "rich", "snownlp", "huggingface_hub", "safetensors", "onnxscript", "scipy")
    out = subprocess.run([sys.executable, "-c", BLOCK.format(names=set(names))], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert "not available on this host" in out.stdout and "EXIT 3" in out.stdout, out.stderr[-800:]


def test_check_verdicts_skip_missing_packages_and_fail_broken_paths(capsys):
    from bench.app.checks.gpu import Context, Verdict, run_check

    def missing(ctx):
        raise ImportError("No module named 'tensorrt'", name="tensorrt")

    def broken(ctx):
        raise RuntimeError("CUDA error: out of memory")

    ctx = Context(0, "twin", REPO)
    assert run_check("trt", missing, ctx) == [Verdict("trt", "skip", "needs tensorrt (not installed)")]
    assert run_check("peak", broken, ctx) == [Verdict("peak", "fail", "RuntimeError: CUDA error: out of memory")]
    assert "SKIP  trt" in capsys.readouterr().out


def test_gpu_record_fields_round_trip_and_older_files_still_load():
    from bench.core.records import CellResult, CellSpec, Energy, LoadPhases, ProcessRun, Resources, WorkerMeta
    from bench.core.results import cell_from_dict, cell_to_dict

    run = ProcessRun((0.01, 0.02), window_s=0.03, load=LoadPhases(0.1, 2.0, 0.5, engine_build_s=1.5),
                     resources=Resources(peak_vram_bytes=2**30, vram_scope="device"),
                     energy=Energy(3.0, "nvml", False, covers="gpu", host_cpu_energy_j=0.5, host_cpu_source="estimate"),
                     meta=WorkerMeta(providers=(TRT, CUDA, CPU), tf32="trt-default", gpu_device="NVML GPU 1"))
    cell = CellResult(CellSpec("ort-fp16-tensorrt"), "ok", runs=(run, run), items_per_batch=1)
    back = cell_from_dict(cell_to_dict(cell))
    assert back == cell and back.load.engine_build_s == 1.5 and back.meta.providers == (TRT, CUDA, CPU)
    assert back.energy.host_cpu_energy_j == 1.0 and back.energy.covers == "gpu"
    assert back.resources.vram_scope == "device"
    old = cell_to_dict(cell)
    for record, key in (("load", "engine_build_s"), ("energy", "covers"), ("meta", "providers")):
        for r in old["runs"]:
            del r[record][key]
    assert cell_from_dict(old).meta.providers == ()  # a file written before these fields reads with defaults


def test_torch_cuda_calls_name_the_loaded_device_on_whichever_thread_serves(tiny_model):
    """CUDA's current device is per thread and the service loads on one thread and serves on others, so every
    call names the device it was loaded on (torch.cuda faked: no GPU here; torch.device is the real one)."""
    import threading
    from types import SimpleNamespace

    import numpy as np
    import torch

    from bench.backends.torch_backend import TorchBackend

    seen = []

    class Tensor:
        def to(self, device, non_blocking=False):
            seen.append(("to", str(device), threading.current_thread().name))
            return self

    @contextlib.contextmanager
    def device(d):
        seen.append(("device", str(d), threading.current_thread().name))
        yield

    out = SimpleNamespace(numpy=lambda: np.zeros((1, 2), dtype=np.float32))
    backend = TorchBackend(BackendConfig(resolve("torch-fp32-cuda"), tiny_model, options={"device_id": 2}))
    backend._device = torch.device("cuda", 2)  # what load() sets
    backend._torch = SimpleNamespace(cuda=SimpleNamespace(device=device), inference_mode=torch.inference_mode,
                                     from_numpy=lambda _a: Tensor())
    backend.model = lambda *_t: SimpleNamespace(float=lambda: SimpleNamespace(cpu=lambda: out))  # the task's output
    feed = backend.signature.dummy(1, 4)
    serving = threading.Thread(target=backend.infer, args=(feed,), name="bench-batcher-0")
    serving.start()
    serving.join()
    assert seen == [("device", "cuda:2", "bench-batcher-0")] + [("to", "cuda:2", "bench-batcher-0")] * len(feed)
