"""Dynamic INT8 quantisation following ONNX Runtime's recipe: optimise first, then QInt8 weights."""

from __future__ import annotations

from pathlib import Path

from bench.measure.host import cpu_flags


def choose_settings(flags: set[str] | None = None) -> dict:
    """reduce_range/per_channel from the CPU's flags, with the reason recorded.

    Without VNNI, the u8×s8 AVX2/AVX-512 kernels (vpmaddubsw) can saturate 16-bit intermediates;
    ONNX Runtime advises 7-bit weights (reduce_range) there. With VNNI the full 8-bit range is safe.
    Per-channel measured no better than per-tensor on this model (docs/measurements.md), so it stays off.
    """
    flags = cpu_flags() if flags is None else flags
    vnni = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
    return {
        "weight_type": "QInt8",
        "per_channel": False,
        "reduce_range": not vnni,
        "reason": ("CPU has VNNI: full 8-bit weights" if vnni else
                   "no VNNI on this CPU: 7-bit weights (reduce_range) avoid u8s8 saturation"),
    }


def quantize(src: Path, out_path: Path, settings: dict) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(out_path), weight_type=QuantType.QInt8, per_channel=settings["per_channel"],
                     reduce_range=settings["reduce_range"],
                     # SDPA-style exports otherwise fail with "Unable to find data type for weight_name=…"
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
