"""ONNX Runtime backends: CPU (fp32, fused fp32, int8), CUDA with IO binding (fp32, fp16), TensorRT."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from bench.backends.base import Backend, Unavailable
from bench.errors import ConfigError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
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
        self.session = ort.InferenceSession(str(self.config.model_file), self._session_options(ort), providers=self._providers(provider))
        self._device_id = int(self.config.options.get("device_id", 0))

    def _session_options(self, ort):
        opts = ort.SessionOptions()
        if self.config.threads:
            opts.intra_op_num_threads = self.config.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return opts

    def _providers(self, provider: str) -> list:
        if provider == "TensorrtExecutionProvider":
            fp16 = self.config.spec.precision == "fp16"
            return [(provider, {"trt_fp16_enable": fp16}), "CUDAExecutionProvider", "CPUExecutionProvider"]
        return [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.config.spec.device == "cpu":
            return self.session.run(["logits"], dict(inputs))[0]
        return self._infer_bound(inputs)

    def _infer_bound(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """IO binding: copy inputs to the GPU once, keep the output there, copy back explicitly.
        copy_outputs_to_cpu() blocks until the GPU is done, so host timers see the whole inference."""
        binding = self.session.io_binding()
        for name, array in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        binding.bind_output("logits", "cuda", self._device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def close(self) -> None:
        self.session = None
