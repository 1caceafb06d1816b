"""OpenVINO IRs: FP32 converted from the FP32 ONNX export, INT8 by NNCF post-training quantisation calibrated on
corpus texts (real Chinese reviews at their own lengths, never random ids).

`python -m exporters` builds them with the ONNX variants; each IR is an .xml graph and an .bin of weights, both
hashed in the manifest.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# SmoothQuant off: on the twin it moved logits more than ORT's dynamic INT8 and failed the parity gate;
# without it NNCF's INT8 agrees nearly as well as ORT's (docs/measurements.md, 2026-12-03, Zen 4 class host).
CALIBRATION = {"samples": 32, "seed": 1234, "max_length": 128, "model_type": "TRANSFORMER", "smooth_quant": False,
               "texts": "bench.model.corpus.length_workload (≈80-character reviews)"}


def calibration_settings(flags: set[str] | None = None) -> dict:
    """CALIBRATION plus NNCF's overflow fix for this CPU: without VNNI the u8×s8 kernels (AVX2, AVX-512) can
    saturate 16-bit intermediates, and NNCF's ENABLE quantises every MatMul's weights to half the 8-bit range, as
    ORT's reduce_range does (exporters.quantize); with VNNI, NNCF's default (the first layer only). On a Zen 3 host
    the twin's INT8 IR failed the parity gate without it (docs/measurements.md, 2026-12-07)."""
    from exporters.quantize import choose_settings

    vnni = not choose_settings(flags)["reduce_range"]
    return {**CALIBRATION, "overflow_fix": "first_layer_only" if vnni else "enable",
            "overflow_reason": "CPU has VNNI: NNCF's default" if vnni else
            "no VNNI on this CPU: half-range weights on every MatMul avoid u8s8 saturation"}


def missing() -> str | None:
    """Why the OpenVINO IRs cannot be built here (None: they can)."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"openvino/nncf not installed ({exc.name}): make install installs them"
    return None


def weights_of(xml: Path) -> Path:
    return xml.with_suffix(".bin")


def convert_fp32(onnx_path: Path, xml_out: Path) -> None:
    """The FP32 ONNX graph as an OpenVINO IR, weights kept in FP32 (no FP16 compression)."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_out), compress_to_fp16=False)


def calibration_inputs(model_dir: Path, settings: dict = CALIBRATION) -> list[dict]:
    """One encoded corpus text per calibration sample, each at its own length (as the service feeds them)."""
    from bench.model.corpus import length_workload
    from bench.model.tokenize import encode, load_tokenizer, model_dir_str

    tokenizer = load_tokenizer(model_dir_str(model_dir))
    texts = length_workload(settings["samples"], seed=settings["seed"]).texts
    return [dict(encode(tokenizer, [t], max_length=settings["max_length"])) for t in texts]


def quantize_int8(fp32_xml: Path, xml_out: Path, model_dir: Path, settings: dict | None = None) -> None:
    """NNCF's post-training INT8 (transformer preset, fast bias correction; SmoothQuant and the overflow fix as
    `settings` says, by default calibration_settings() for this CPU) of the FP32 IR."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    settings = settings or calibration_settings()

    logging.getLogger("nncf").setLevel(logging.WARNING)
    os.environ.setdefault("NNCF_DISABLE_PROGRESS", "1")
    model = ov.Core().read_model(str(fp32_xml))
    data = calibration_inputs(model_dir, settings)
    smooth = {} if settings["smooth_quant"] else {  # a negative alpha switches it off
        "smooth_quant_alphas": AdvancedSmoothQuantParameters(matmul=-1)}
    fix = OverflowFix(settings.get("overflow_fix", "first_layer_only"))
    advanced = AdvancedQuantizationParameters(overflow_fix=fix, **smooth)
    quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data),
                              model_type=getattr(nncf.ModelType, settings["model_type"]), advanced_parameters=advanced)
    ov.save_model(quantized, str(xml_out), compress_to_fp16=False)


__all__ = ["CALIBRATION", "calibration_settings", "missing", "weights_of", "convert_fp32", "quantize_int8",
           "calibration_inputs"]
