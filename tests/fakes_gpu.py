"""Fakes of onnxruntime's GPU surface and of libcuda, shaped like the real ones (same names, same parameter names;
test_gpu_construction checks the ORT ones against the installed onnxruntime).

`FakeOrt` behaves like onnxruntime-gpu on a host where some providers cannot load: `get_available_providers()`
lists what the wheel was built with, while a session gets only the providers in `loads`, after writing ORT's own
warning to file descriptor 2 (where ORT's C++ logger writes), exactly as the real library falls back.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
# What onnxruntime-gpu 1.2x logs when the CUDA provider's libraries are missing (format of its C++ logger).
CUDA_FAILED = ("2026-11-25 13:01:04.28 [E:onnxruntime:Default, provider_bridge_ort.cc:2251 TryGetProviderInfo_CUDA] "
               "Failed to load library libonnxruntime_providers_cuda.so with error: libcudart.so.13: cannot open "
               "shared object file: No such file or directory\n"
               "2026-11-25 13:01:04.28 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1013 "
               "CreateExecutionProviderInstance] Failed to create CUDAExecutionProvider. Require cuDNN 9.* and "
               "CUDA 13.*. Please install all dependencies as mentioned in the GPU requirements page.\n")
TRT_FAILED = ("2026-11-25 13:01:04.28 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:965 "
              "CreateExecutionProviderInstance] Failed to create TensorrtExecutionProvider. Please reference "
              "https://onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html#requirements to "
              "ensure all dependencies are met.\n")

TRT_EP_ERROR = ("EP Error /onnxruntime_src/onnxruntime/python/onnxruntime_pybind_state.cc:729 void onnxruntime::"
                "python::RegisterTensorRTPluginsAsCustomOps(PySessionOptions&, const onnxruntime::ProviderOptions&) "
                "Please install TensorRT libraries as mentioned in the GPU requirements page, make sure they're in "
                "the PATH or LD_LIBRARY_PATH, and that your GPU is supported.")


CPU_NODES_REFUSED = ("[ONNXRuntimeError] : 1 : FAIL : This session contains graph nodes that are assigned to the "
                     "default CPU EP, but fallback to CPU EP has been explicitly disabled by the user.")
CPU_LISTED_REFUSED = ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Conflicting session configuration: explicitly "
                      "added the CPU EP to the list of session providers, but also disabled fallback to the CPU EP "
                      "via session options.")


class Fail(Exception):
    """Like onnxruntime.capi.onnxruntime_pybind11_state.Fail (what InferenceSession raises)."""


class FakeIOBinding:
    """Like onnxruntime.IOBinding; every call is logged, in order, to the session's `calls`."""

    def __init__(self, session: FakeOrtSession) -> None:
        self._session = session
        self.inputs: dict = {}

    def bind_cpu_input(self, name, arr_on_cpu):
        self._session.calls.append(f"bind_cpu_input:{name}")
        self.inputs[name] = arr_on_cpu

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None):
        self._session.calls.append(f"bind_output:{name}:{device_type}:{device_id}")

    def bind_ortvalue_input(self, name, ortvalue):
        self._session.calls.append(f"bind_ortvalue_input:{name}")
        self.inputs[name] = ortvalue

    def bind_ortvalue_output(self, name, ortvalue):
        self._session.calls.append(f"bind_ortvalue_output:{name}")
        self.output = ortvalue

    def synchronize_inputs(self):
        self._session.calls.append("synchronize_inputs")

    def synchronize_outputs(self):
        self._session.calls.append("synchronize_outputs")

    def copy_outputs_to_cpu(self):
        self._session.calls.append("copy_outputs_to_cpu")
        batch = len(next(iter(self.inputs.values())))
        out = np.zeros((batch, 2), dtype=np.float32)
        if isinstance(self.inputs.get("input_ids"), np.ndarray):
            out[:, 0] = self.inputs["input_ids"].sum(axis=1)  # the same logits the graph path computes
        return [out]


class FakeOrtSession:
    """Like onnxruntime.InferenceSession: keeps the requested providers that `module.loads`, logs the others'
    failures to fd 2 as ORT does, and (TensorRT) writes an engine file into its cache when it builds one."""

    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
        module = kwargs.pop("_module")
        self.requested = [p if isinstance(p, tuple) else (p, {}) for p in providers or [CPU]]
        self.calls: list[str] = []
        failed = [name for name, _ in self.requested if name not in module.loads]
        if TRT in failed:  # onnxruntime's Python layer prints this notice to stdout, then retries without TRT
            print(f"*************** EP Error ***************\n{TRT_EP_ERROR}\n when using {providers}\n"
                  f"Falling back to {[p for p in self.requested if p[0] != TRT]} and retrying.")
        for name in failed:
            os.write(2, (CUDA_FAILED if name == CUDA else TRT_FAILED).encode())
        loaded = [name for name, _ in self.requested if name in module.loads]
        self._providers = loaded + ([CPU] if CPU not in loaded else [])  # ORT always adds the CPU EP implicitly
        strict = getattr(sess_options, "entries", {}).get("session.disable_cpu_ep_fallback") == "1"
        if strict and CPU in dict(self.requested):
            raise Fail(CPU_LISTED_REFUSED)
        if strict and (not loaded or module.cpu_nodes):  # a node left to the (implicit) CPU EP
            raise Fail(CPU_NODES_REFUSED)
        self.module, self.captured = module, {}
        cuda_opts = dict(self.requested).get(CUDA, {})
        self.graphs = str(cuda_opts.get("enable_cuda_graph", "0")) == "1" and CUDA in self._providers
        if self.graphs and module.refuse_graphs:
            raise Fail(GRAPHS_REFUSED)
        if TRT in self._providers and module.trt_builds_engine:
            self._build_engine(dict(self.requested)[TRT], module.build_s)
        module.sessions.append(self)

    def _build_engine(self, options: dict, build_s: float) -> None:
        cache = Path(options["trt_engine_cache_path"])
        engine = cache / "TensorrtExecutionProvider_TRTKernel_graph_main_0_0_sm90.engine"
        if not engine.exists():
            time.sleep(build_s)
            engine.write_bytes(b"engine")

    def get_providers(self):
        return list(self._providers)

    def get_inputs(self):  # NodeArg-like: the graph's inputs and outputs by name, as a BERT classifier export has
        return [FakeNodeArg(n) for n in ("input_ids", "attention_mask", "token_type_ids")]

    def get_outputs(self):
        return [FakeNodeArg("logits")]

    def get_provider_options(self):
        return {name: {k: str(v) for k, v in opts.items()} for name, opts in self.requested if name in self._providers}

    def io_binding(self):
        return FakeIOBinding(self)

    def run_with_iobinding(self, iobinding, run_options=None):
        graph = (run_options.entries if run_options is not None else {}).get("gpu_graph_id", "0")
        self.calls.append("run_with_iobinding" + (f":graph={graph}" if self.graphs else ""))
        if not self.graphs or graph == "-1":
            return
        shape = next(iter(iobinding.inputs.values())).shape
        if shape in self.module.capture_fails:
            raise Fail(f"[ONNXRuntimeError] : 1 : FAIL : {CAPTURE_REFUSED}")
        if graph not in self.captured:
            self.captured[graph] = shape
        elif self.captured[graph] != shape:  # a graph replays what it captured: a shape change is a bug
            raise Fail(f"graph {graph} was captured at {self.captured[graph]}, run at {shape}")
        ids = iobinding.inputs["input_ids"].data
        iobinding.output.data[:, 0] = ids.sum(axis=1)

    def run(self, output_names, input_feed, run_options=None):
        self.calls.append("run")
        return [np.zeros((len(next(iter(input_feed.values()))), 2), dtype=np.float32)]


class FakeNodeArg:
    """Like onnxruntime.NodeArg: a graph input's or output's name."""

    def __init__(self, name: str) -> None:
        self.name = name


GRAPHS_REFUSED = ("[ONNXRuntimeError] : 1 : FAIL : This session cannot use the CUDA Graph feature as requested by the "
                  "user as all the graph nodes have not been partitioned to the CUDA EP.")


class FakeOrtValue:
    """Like onnxruntime.OrtValue for device buffers: a fixed buffer, refilled in place."""

    def __init__(self, data, device) -> None:
        self.data, self.device = data, device

    @staticmethod
    def ortvalue_from_shape_and_type(shape, element_type, device_type="cpu", device_id=0, vendor_id=-1,
                                     memory_info=None):
        return FakeOrtValue(np.zeros(shape, dtype=element_type), f"{device_type}:{device_id}")

    @property
    def shape(self):
        return self.data.shape

    def update_inplace(self, data):
        if np.shape(data) != self.data.shape:
            raise ValueError("update_inplace: the shape must not change")
        self.data[...] = data

    def numpy(self):
        return self.data.copy()


class FakeRunOptions:
    def __init__(self) -> None:
        self.entries: dict[str, str] = {}

    def add_run_config_entry(self, arg0: str, arg1: str) -> None:  # pybind11's parameter names
        self.entries[arg0] = arg1


class FakeSessionOptions:
    intra_op_num_threads = 0
    inter_op_num_threads = 0
    graph_optimization_level = None

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}

    def add_session_config_entry(self, arg0: str, arg1: str) -> None:  # pybind11's parameter names
        self.entries[arg0] = arg1


class FakeOrt:
    """A stand-in for the `onnxruntime` module (onnxruntime-gpu on a host where only `loads` can load)."""

    __version__ = "1.31.1"
    SessionOptions = FakeSessionOptions
    OrtValue = FakeOrtValue
    RunOptions = FakeRunOptions
    GraphOptimizationLevel = SimpleNamespace(ORT_ENABLE_ALL=99, ORT_DISABLE_ALL=0)

    def __init__(self, available=(TRT, CUDA, CPU), loads=(CPU,), trt_builds_engine: bool = True,
                 build_s: float = 0.02, cpu_nodes: bool = False, refuse_graphs: bool = False,
                 capture_fails=()) -> None:
        self.available, self.loads = list(available), set(loads)
        self.refuse_graphs, self.capture_fails = refuse_graphs, set(capture_fails)  # CUDA graphs
        self.cpu_nodes = cpu_nodes  # the graph has a node no GPU provider takes
        self.trt_builds_engine, self.build_s = trt_builds_engine, build_s
        self.sessions: list[FakeOrtSession] = []
        self.preloaded = 0

    def get_available_providers(self):
        return list(self.available)

    def InferenceSession(self, path_or_bytes, sess_options=None, providers=None, provider_options=None,  # noqa: N802
                         **kwargs):
        return FakeOrtSession(path_or_bytes, sess_options, providers, provider_options, _module=self, **kwargs)

    def preload_dlls(self, cuda=True, cudnn=True, msvc=True, directory=None):
        self.preloaded += 1
        print("preload_dlls writes to stdout")  # as the real one does: must not reach the worker's stdout


class FakeLibcuda:
    """A stand-in for ctypes.CDLL("libcuda.so.1"): the driver API's C signatures, results written through the
    pointers (ctypes byref / string buffers) as libcuda does; returns CUresult codes (0 = CUDA_SUCCESS)."""

    def __init__(self, devices: list[tuple[str, bytes, str]], version: int = 13000) -> None:
        self.devices, self.version = devices, version  # (name, 16-byte uuid, pci bus id)

    def cuInit(self, flags):  # noqa: N802
        return 0

    def cuDriverGetVersion(self, driverVersion):  # noqa: N802, N803
        driverVersion._obj.value = self.version
        return 0

    def cuDeviceGetCount(self, count):  # noqa: N802
        count._obj.value = len(self.devices)
        return 0

    def cuDeviceGet(self, device, ordinal):  # noqa: N802
        if not 0 <= ordinal < len(self.devices):
            return 101  # CUDA_ERROR_INVALID_DEVICE
        device._obj.value = ordinal
        return 0

    def cuDeviceGetName(self, name, len, dev):  # noqa: N802, A002
        name.value = self.devices[dev.value][0].encode()
        return 0

    def cuDeviceGetPCIBusId(self, pciBusId, len, dev):  # noqa: N802, N803, A002
        pciBusId.value = self.devices[dev.value][2].encode()
        return 0

    def cuDeviceGetUuid(self, uuid, dev):  # noqa: N802
        for i, byte in enumerate(self.devices[dev.value][1]):
            uuid._obj[i] = byte
        return 0


# --- CUDA graphs: torch.cuda's graph API and ORT's graph surface ------------------------------------------------

CAPTURE_REFUSED = "CUDA error: operation not permitted when stream is capturing"  # what torch raises on a host sync


class FakeTensor:
    """A device tensor stand-in (numpy inside): shape, clone(), copy_() as torch.Tensor has them."""

    def __init__(self, data) -> None:
        self.data = np.array(data)

    @property
    def shape(self):
        return self.data.shape

    def clone(self, *, memory_format=None):
        return FakeTensor(self.data.copy())

    def copy_(self, src, non_blocking=False):
        self.data[...] = src.data
        return self


class FakeCUDAGraph:
    """Like torch.cuda.CUDAGraph: work recorded while capturing runs again, on the same tensors, at replay()."""

    def __init__(self, keep_graph=False) -> None:
        self.recorded: list = []
        self.replays = 0

    def replay(self):
        self.replays += 1
        for op in self.recorded:
            op()


class FakeStream:
    def wait_stream(self, stream):
        return None


class FakeTorchCuda:
    """torch.cuda's graph surface (same names and parameter names; test_cuda_graphs checks them against torch)."""

    CUDAGraph = FakeCUDAGraph
    Stream = FakeStream

    def __init__(self) -> None:
        self.capturing: FakeCUDAGraph | None = None
        self.synchronized = 0
        fake = self

        class graph:  # noqa: N801  torch.cuda.graph is a lower-case context-manager class
            def __init__(self, cuda_graph, pool=None, stream=None, capture_error_mode="global",
                         enable_annotations=False, check_input_liveness=False):
                self.cuda_graph = cuda_graph

            def __enter__(self):
                fake.capturing = self.cuda_graph

            def __exit__(self, *exc):
                fake.capturing = None

        self.graph = graph

    @contextlib.contextmanager
    def stream(self, stream):
        yield

    def current_stream(self, device=None):
        return FakeStream()

    def graph_pool_handle(self):
        return ("pool", id(self))

    def synchronize(self, device=None):
        self.synchronized += 1


class FakeGraphModel:
    """A model call on fake tensors: logits = (sum of ids, −sum) per row. Captured calls record themselves into the
    graph being captured; a shape in `syncs` synchronises with the host, which a capture refuses (as torch does)."""

    def __init__(self, cuda: FakeTorchCuda, syncs=()) -> None:
        self.cuda, self.syncs, self.calls = cuda, set(syncs), 0

    def __call__(self, tensors: dict) -> FakeTensor:
        self.calls += 1
        ids = tensors["input_ids"]
        if tuple(ids.shape) in self.syncs and self.cuda.capturing is not None:
            raise RuntimeError(CAPTURE_REFUSED)
        out = FakeTensor(np.zeros((ids.shape[0], 2)))

        def compute() -> None:
            total = ids.data.sum(axis=1)
            out.data[:, 0], out.data[:, 1] = total, -total

        compute()
        if self.cuda.capturing is not None:
            self.cuda.capturing.recorded.append(compute)
        return out
