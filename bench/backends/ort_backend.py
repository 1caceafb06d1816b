"""ONNX Runtime backends: CPU (fp32, fused fp32, int8), CUDA with IO binding (fp32, fp16), TensorRT.

options: device_id (the CUDA device, default 0), tf32 (default False: fp32 cells are IEEE float32),
shape_profile (min/opt/max per input, for TensorRT; see ort_gpu.shape_profile), trt_cache_dir (default: under the
artifacts folder), cpu_fallback (default 0: a GPU session whose graph puts a node on the CPU is refused, in ORT's
words, instead of running slower than the figure it is published as; 1 allows it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import numpy as np

from bench.backends import ort_gpu
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
        self.session = self._create(ort, provider)

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
                                          cpu=not self._strict)
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
        if self.config.spec.device == "cpu":
            return self.session.run(["logits"], dict(inputs))[0]
        return self._infer_bound(inputs)

    def _infer_bound(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """IO binding with explicit synchronisation: inputs are on the device before the run starts, the output
        is complete before it is copied back, so a host clock around this call times the whole inference
        without torch (ORT runs on its own CUDA stream)."""
        binding = self.session.io_binding()
        for name, array in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        binding.bind_output("logits", "cuda", self._device_id)
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return binding.copy_outputs_to_cpu()[0]

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
        self.session = None
