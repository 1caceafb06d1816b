"""What this CPU's instruction sets let each CPU backend do, and which backends can win here.

The rules are the measured ones (docs/measurements.md): BF16 is only real with AVX512-BF16 or AMX-BF16 (elsewhere a
runtime emulates it, and an emulated figure is not published), and without AMX it lost to VNNI INT8; OpenVINO's
INT8 beats ORT's dynamic INT8 where the CPU has VNNI or AMX and loses to it on AVX2-only CPUs; torch's dynamic
INT8 lost to ORT's on every CPU measured; ORT's plain FP32 graph is its fused graph before optimisation. The
default plan keeps the contenders and the FP32 baselines the article compared (PyTorch FP32, ORT FP32 fused);
`--profile full` measures every backend.
"""

from __future__ import annotations

from dataclasses import dataclass

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class CpuIsa:
    """The instruction sets that decide which CPU engine can win (from /proc/cpuinfo's flags)."""

    flags: frozenset[str]

    @classmethod
    def here(cls) -> "CpuIsa":
        from bench.measure.host import cpu_flags

        return cls(frozenset(cpu_flags()))

    @property
    def amx(self) -> bool:
        return bool({"amx_int8", "amx_bf16"} & self.flags)

    @property
    def bf16(self) -> str | None:
        """The BF16 hardware this CPU has (amx_bf16 / avx512_bf16), None when BF16 would be emulated."""
        return next((f for f in BF16_FLAGS if f in self.flags), None)

    @property
    def int8_dot(self) -> str | None:
        """The INT8 dot-product hardware (AMX, AVX512-VNNI, AVX-VNNI), None on AVX2/AVX-512F alone."""
        return next((f for f in INT8_FLAGS if f in self.flags), None)

    def describe(self) -> str:
        have = [f for f in ("amx_int8", "amx_bf16", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")
                if f in self.flags]
        return ", ".join(have) or "none of AVX2/AVX-512/VNNI/BF16/AMX"


def bf16_reason(isa: CpuIsa) -> str | None:
    """Why a BF16 cell cannot run here (None: it can)."""
    if isa.bf16:
        return None
    return ("no BF16 hardware on this CPU (neither amx_bf16 nor avx512_bf16 in its flags): BF16 would be emulated "
            "in software, and an emulated figure is not published")


def left_out(name: str, isa: CpuIsa, batch: int = 1) -> str | None:
    """Why the default plan leaves a CPU backend (at `batch`) out on this CPU (None: it is planned). Every backend
    can still be measured with --backends or --profile full, except BF16 without BF16 hardware (skipped, never
    emulated)."""
    engine, precision = name.split("-")[0], name.split("-")[1]
    if precision == "bf16" and (why := bf16_reason(isa)):
        return why
    if precision == "bf16" and not isa.amx:
        return ("BF16 without AMX (AVX512-BF16 only) measured slower than VNNI INT8 at batch 1 and 8; "
                "--profile full measures it")
    if name == "torch-int8-cpu":
        return ("torch's dynamic INT8 measured slower than ONNX Runtime's on every CPU so far; --profile full "
                "measures it")
    if name == "ort-fp32-cpu":
        return ("the fused graph (ort-fp32-fused-cpu) is ONNX Runtime's FP32 at its best; --profile full measures "
                "the plain graph")
    if engine == "ov" and precision == "int8" and not isa.int8_dot:
        return ("no VNNI/AMX on this CPU: OpenVINO INT8 measured slower than ONNX Runtime's dynamic INT8 on such "
                "CPUs; --backends ov-int8-cpu measures it anyway")
    if engine == "ov" and precision == "fp32":
        return ("OpenVINO FP32 is the baseline of OpenVINO's INT8 and BF16, which run on this CPU natively; "
                "--profile full measures it")
    return None


__all__ = ["CpuIsa", "bf16_reason", "left_out", "BF16_FLAGS", "INT8_FLAGS"]
