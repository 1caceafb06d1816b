"""ONNX Runtime backends: CPU (fp32, fused fp32, int8), CUDA with IO binding (fp32, fp16), TensorRT.

options: device_id (the CUDA device, default 0), tf32 (default False: fp32 cells are IEEE float32),
shape_profile (min/opt/max per input, for TensorRT; see ort_gpu.shape_profile), trt_cache_dir (default: under the
artifacts folder), cpu_fallback (default 0: a GPU session whose graph puts a node on the CPU is refused, in ORT's
words, instead of running slower than the figure it is published as; 1 allows it), cuda_graphs (1: on the CUDA
provider, a CUDA graph per shape of graph_shapes, each with its own gpu_graph_id and device buffers bound once; a
shape whose capture fails runs without, the reason kept; a session that refuses graphs runs without any, likewise).
"""

from __future__ import annotations

import time
from functools import cached_property
from pathlib import Path
from typing import Mapping

import numpy as np

from bench.backends import cuda_graphs, ort_gpu
from bench.backends.base import Backend, Unavailable
from bench.core.errors import ConfigError

PROVIDERS = ort_gpu.PROVIDERS
INT8_CUDA_REASON = ("INT8 on the CUDA provider is not a real INT8 path: dynamic-quantised MatMulInteger and "
                    "DynamicQuantizeLinear nodes fall back to the CPU, so its number would mislead")


class OrtBackend(Backend):
    """One InferenceSession. On CUDA/TensorRT inputs and outputs go through IO binding."""

    session = None

    def load(self) -> None:
        import onnxruntime as ort

        spec = self.config.spec
        if spec.precision == "int8" and spec.device != "cpu":
            raise Unavailable(INT8_CUDA_REASON)
        provider = PROVIDERS[spec.device]
        if provider not in ort.get_available_providers():
            raise Unavailable(f"{provider} is not available in onnxruntime {ort.__version__} "
                              f"(installed: {', '.join(ort.get_available_providers())})")
        if self.config.model_file is None:
            raise ConfigError(f"{spec.name} needs an ONNX file (BackendConfig.model_file); none was given")
        opts = self.config.options
        self._device_id, self._tf32 = int(opts.get("device_id", 0)), bool(opts.get("tf32", False))
        self._strict = spec.device != "cpu" and str(opts.get("cpu_fallback", "0")) != "1"
        self._cache = self._trt_cache() if spec.device == "tensorrt" else None
        self._ort, self._graphs = ort, None
        if spec.device == "cuda" and cuda_graphs.enabled(opts):
            self._graphs = OrtGraphs(opts.get("graph_shapes"))
            try:
                self.session = self._create(ort, provider)
                return
            except Unavailable as exc:  # e.g. a node not on the CUDA provider: graphs off, the reason kept
                self._graphs = OrtGraphs.off(f"ONNX Runtime refused CUDA graphs: {exc}")
        self.session = self._create(ort, provider)

    @cached_property
    def _inputs(self) -> set[str]:
        """The inputs the graph takes (an export may drop one its model ignores, as optimum's backend allows)."""
        return {i.name for i in self.session.get_inputs()}

    @cached_property
    def _output(self) -> str:
        """The graph's first output: the one the model's signature describes (bench.core.signature)."""
        return self.session.get_outputs()[0].name

    def _trt_cache(self) -> Path:
        fp16 = self.config.spec.precision == "fp16"
        given = self.config.options.get("trt_cache_dir")
        cache = Path(given) if given else ort_gpu.trt_cache_dir(self.config.model_file, fp16)
        cache.mkdir(parents=True, exist_ok=True)
        return cache

    def _create(self, ort, provider: str):
        """The session, refused (Unavailable, with ORT's reason) when the provider asked for did not load."""
        spec = self.config.spec
        providers = ort_gpu.provider_list(spec.device, spec.precision == "fp16", self._device_id, self._tf32,
                                          self._cache, self.config.options.get("shape_profile") or {},
                                          cpu=not self._strict, graphs=bool(self._graphs and self._graphs.on))
        if spec.device != "cpu":
            ort_gpu.preload_cuda_libraries(ort)
        self._engines_before = ort_gpu.engine_files(self._cache)
        t0 = time.perf_counter()
        session, error = None, None
        with ort_gpu.native_stderr() as log:
            try:
                session = ort.InferenceSession(str(self.config.model_file), self._session_options(ort),
                                               providers=providers)
            except Exception as exc:  # noqa: BLE001  ORT raises its own (pybind) types: its words, as Unavailable
                error = str(exc)
        if session is None:
            raise Unavailable(ort_gpu.refusal_reason(provider, error or "no session", self._strict, log["text"]))
        self._create_s = time.perf_counter() - t0
        self._engines_created = ort_gpu.engine_files(self._cache)
        reason = ort_gpu.fallback_reason(provider, session.get_providers(), log["text"])
        if reason:
            raise Unavailable(reason)
        return session

    def _session_options(self, ort):
        opts = ort.SessionOptions()
        if self.config.threads:
            opts.intra_op_num_threads = self.config.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self._strict:
            opts.add_session_config_entry(ort_gpu.DISABLE_CPU_FALLBACK, "1")
        return opts

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        feeds = {k: v for k, v in inputs.items() if k in self._inputs}
        if self.config.spec.device == "cpu":
            out = self.session.run([self._output], feeds)[0]
        else:
            out = self._infer_bound(feeds)
        return self.finish(out, inputs)

    def _infer_bound(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """IO binding with explicit synchronisation: inputs are on the device before the run starts, the output
        is complete before it is copied back, so a host clock around this call times the whole inference
        without torch (ORT runs on its own CUDA stream). With CUDA graphs, a shape that has one replays it."""
        if self._graphs is not None and self._graphs.on:
            shape = tuple(next(iter(inputs.values())).shape)
            if self._graphs.wanted(shape):
                return self._infer_graph(shape, inputs)
        return self._run_bound(inputs)

    def _run_bound(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        binding = self.session.io_binding()
        for name, array in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        binding.bind_output(self._output, "cuda", self._device_id)
        binding.synchronize_inputs()
        # a session with graphs on captures under id 0 unless told otherwise: -1 runs this call without a graph
        self.session.run_with_iobinding(binding, self._graphs.no_graph(self._ort) if self._graphs else None)
        binding.synchronize_outputs()
        return binding.copy_outputs_to_cpu()[0]

    def _infer_graph(self, shape: tuple, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The shape's graph: inputs copied into its device buffers (bound once, at fixed addresses as a graph
        needs), one run under its gpu_graph_id (ORT captures on the first runs, replays after), output read back.
        The first call at a shape runs without a graph to learn the output's shape; a failed capture leaves that
        shape without a graph, the reason kept."""
        held = self._graphs.bound.get(shape)
        if held is None:
            out = self._run_bound(inputs)
            try:
                self._graphs.bound[shape] = self._bind_graph(shape, inputs, out)
            except Exception as exc:  # noqa: BLE001  ORT's own error types
                self._graphs.fail(shape, exc)
            return out
        binding, values, output, run_options = held
        try:
            for name, array in inputs.items():
                values[name].update_inplace(np.ascontiguousarray(array))
            self.session.run_with_iobinding(binding, run_options)
            return output.numpy()
        except Exception as exc:  # noqa: BLE001  a capture ORT refused: this shape runs without a graph from now on
            self._graphs.fail(shape, exc)
            return self._run_bound(inputs)

    def _bind_graph(self, shape: tuple, inputs: Mapping[str, np.ndarray], out: np.ndarray):
        ort, device = self._ort, self._device_id
        values = {name: ort.OrtValue.ortvalue_from_shape_and_type(list(a.shape), a.dtype.type, "cuda", device)
                  for name, a in inputs.items()}
        output = ort.OrtValue.ortvalue_from_shape_and_type(list(out.shape), out.dtype.type, "cuda", device)
        binding = self.session.io_binding()
        for name, value in values.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_output(self._output, output)
        run_options = ort.RunOptions()
        run_options.add_run_config_entry(ort_gpu.GRAPH_ID, str(self._graphs.graph_id(shape)))
        return binding, values, output, run_options

    def serving_info(self) -> dict:
        if self.config.spec.device != "cuda":
            return {}
        return {"cuda_graphs": self._graphs.summary() if self._graphs else "off"}

    def run_info(self) -> dict:
        info = {"providers": tuple(self.session.get_providers())} if self.session is not None else {}
        if self.config.spec.device == "cuda":
            info["tf32"] = "on" if self._tf32 else "off"
        elif self.config.spec.device == "tensorrt":
            info["tf32"] = "trt-default"
        return info

    def engine_build_s(self, first_infer_s: float) -> float | None:
        """TensorRT: seconds spent building engines (at session creation with explicit profiles, else in the
        first inference), 0.0 when every engine came from the cache. No engine at all means TensorRT took none
        of the graph (the session would publish CUDA or CPU work as TensorRT): the cell is unavailable."""
        if self.config.spec.device != "tensorrt":
            return None
        now = ort_gpu.engine_files(self._cache)
        if now == 0:
            raise Unavailable(f"TensorRT built no engine in {self._cache}: it took none of the graph "
                              f"(providers {', '.join(self.session.get_providers())})")
        if self._engines_created > self._engines_before:
            return self._create_s
        return first_infer_s if now > self._engines_created else 0.0

    def close(self) -> None:
        self.session = self._graphs = None


class OrtGraphs(cuda_graphs.ShapeGraphs):
    """Which shapes have a CUDA graph in one ORT session: ids, bound buffers, and shapes left without one."""

    def __init__(self, shapes=None, reason: str | None = None) -> None:
        super().__init__(shapes)
        self.on, self.reason = reason is None, reason
        self.ids: dict[tuple, int] = {}
        self.bound: dict[tuple, tuple] = {}

    @classmethod
    def off(cls, reason: str) -> "OrtGraphs":
        return cls((), reason)

    def graph_id(self, shape: tuple) -> int:
        """1, 2, …: 0 is ORT's default id and -1 means no graph."""
        return self.ids.setdefault(shape, len(self.ids) + 1)

    def fail(self, shape: tuple, exc: Exception) -> None:
        self.bound.pop(shape, None)
        super().fail(shape, exc)

    def captured(self):
        return self.bound

    def no_graph(self, ort):
        """Run options for a call without a graph (None when the session has no graphs to avoid)."""
        if not self.on:
            return None
        run_options = ort.RunOptions()
        run_options.add_run_config_entry(ort_gpu.GRAPH_ID, "-1")
        return run_options

    def summary(self) -> dict | str:
        return f"off: {self.reason}" if self.reason else super().summary()
