"""OpenVINO CPU backends: FP32 and BF16 from the FP32 IR (BF16 through the inference precision hint, on AMX or
AVX512-BF16 only), INT8 from the NNCF-calibrated IR.

options: hint ("latency" default | "throughput"), streams (default 1: one synchronous request uses one stream).
Threads, hint, streams and the precision the compiled model really runs are set explicitly and recorded.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from bench.backends.base import Backend, Unavailable
from bench.core.errors import ConfigError
from bench.measure.isa import CpuIsa, bf16_reason

HINTS = ("latency", "throughput")
# What the compiled model computes in: FP32 is forced to f32 (OpenVINO would otherwise pick bf16 on BF16 hardware
# and publish a BF16 figure as FP32); INT8 keeps the runtime's choice for its non-quantised ops, recorded.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": None}


def compile_settings(precision: str, threads: int | None, options: Mapping[str, object]) -> dict:
    """The CPU plugin's properties for one backend (validated: a bad hint is a ConfigError, not OpenVINO's)."""
    hint = str(options.get("hint", "latency")).lower()
    if hint not in HINTS:
        raise ConfigError(f"OpenVINO hint must be one of {', '.join(HINTS)} (got {hint!r})")
    streams = int(options.get("streams", 1))
    if streams < 1:
        raise ConfigError(f"OpenVINO streams must be >= 1 (got {streams})")
    settings = {"PERFORMANCE_HINT": hint.upper(), "NUM_STREAMS": streams}
    if threads:
        settings["INFERENCE_NUM_THREADS"] = int(threads)
    if PRECISION_HINTS.get(precision):
        settings["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision]
    return settings


class OvBackend(Backend):
    """One compiled model and one synchronous infer request."""

    compiled = None

    def load(self) -> None:
        spec = self.config.spec
        if spec.device != "cpu":
            raise Unavailable(f"the OpenVINO backends run on the CPU only (asked for {spec.device})")
        if spec.precision == "bf16" and (why := bf16_reason(CpuIsa.here())):
            raise Unavailable(why)
        try:
            import openvino as ov
        except ImportError:
            raise Unavailable("openvino is not installed (make install installs it)") from None
        if self.config.model_file is None:
            raise ConfigError(f"{spec.name} needs an OpenVINO IR file (BackendConfig.model_file); none was given")
        self._settings = compile_settings(spec.precision, self.config.threads, self.config.options)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(self.config.model_file)), "CPU", self._settings)
        self.request = self.compiled.create_infer_request()
        self._version = ov.get_version()
        self._inputs = {name for port in self.compiled.inputs for name in port.get_names()}

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        self.request.infer({k: v for k, v in inputs.items() if k in self._inputs})
        return self.finish(np.array(self.request.get_output_tensor(0).data, dtype=np.float32), inputs)

    def run_info(self) -> dict:
        """The settings asked for and what the compiled model reports it runs with."""
        if self.compiled is None:
            return {}
        got = {key: str(self.compiled.get_property(key))
               for key in ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS")}
        return {"openvino": self._version, "openvino_settings": got}

    def close(self) -> None:
        self.request = None
        self.compiled = None
