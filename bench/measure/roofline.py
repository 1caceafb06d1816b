"""Roofline helpers: the FLOPs a BERT-class forward pass needs and the GEMM peak this host reaches.

numpy only: measuring the peak must not import torch (no heavy imports on paths that do not need them).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.core.errors import BenchError
from bench.core.run_records import PeakGemm

_BERT_KEYS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_labels", "seq_len", "batch")


def bert_flops(config: Mapping[str, Any] | Any) -> int:
    """FLOPs of one BERT encoder + pooler + classifier forward pass, counting 2 FLOPs per multiply-add.

    With b = batch, s = seq_len, h = hidden_size, i = intermediate_size, L = num_hidden_layers,
    c = num_labels, multiply-adds per sequence are

        per layer:  3·s·h²  (Q, K, V projections)
                  + s²·h    (attention scores Q·Kᵀ, summed over heads)
                  + s²·h    (context: softmax(scores)·V)
                  + s·h²    (attention output projection)
                  + 2·s·h·i (FFN up and down)
        pooler:     h²      ([CLS] token only)
        classifier: h·c

        FLOPs = 2·b·(L·(4·s·h² + 2·s²·h + 2·s·h·i) + h² + h·c)

    Embeddings, layer norms, softmax, GELU, biases and residual adds are left out (O(s·h), a few percent).
    BERT-base (h=768, L=12, i=3072) at s=128, b=1 gives 22.4 GFLOP. `config` is a mapping or an object with
    these attributes (e.g. a transformers config with seq_len and batch set).
    """
    b, s, h = _positive(config, "batch"), _positive(config, "seq_len"), _positive(config, "hidden_size")
    i, layers = _positive(config, "intermediate_size"), _positive(config, "num_hidden_layers")
    c = _positive(config, "num_labels")
    per_layer = 4 * s * h * h + 2 * s * s * h + 2 * s * h * i
    return 2 * b * (layers * per_layer + h * h + h * c)


def _positive(config: Mapping[str, Any] | Any, key: str) -> int:
    value = config[key] if isinstance(config, Mapping) and key in config else getattr(config, key, None)
    if value is None:
        raise ValueError(f"bert_flops: config lacks {key!r} (needs {', '.join(_BERT_KEYS)})")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"bert_flops: {key} must be a positive integer, got {value!r}")
    return int(value)


def measure_peak_gemm_flops(size: int = 2048, repeats: int = 5, threads: int | None = None) -> float:
    """Best FLOP/s of a float32 `size`×`size` matmul over `repeats` runs, after one warm-up.

    `threads` caps the BLAS pool through threadpoolctl; without it the pool is whatever the environment set
    when numpy loaded (OMP_NUM_THREADS / OPENBLAS_NUM_THREADS), so asking for a cap then is an error rather
    than a silently wrong peak.
    """
    if size < 1 or repeats < 1:
        raise ValueError(f"size and repeats must be >= 1, got {size}, {repeats}")
    if threads is None:
        return _best_gemm_flops(size, repeats)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise BenchError(
            f"measure_peak_gemm_flops(threads={threads}) needs threadpoolctl; or set OMP_NUM_THREADS before start"
        ) from None
    with threadpool_limits(limits=threads, user_api="blas"):
        return _best_gemm_flops(size, repeats)


def _best_gemm_flops(size: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)  # the warm-up call also starts BLAS threads, faults `out` in
    return 2.0 * size**3 / best_seconds(lambda: np.matmul(a, b, out=out), repeats)


def efficiency(achieved: float, peak: float) -> float:
    """Achieved / peak as a fraction (0.42 = 42% of peak)."""
    if peak <= 0:
        raise ValueError(f"peak must be > 0, got {peak}")
    if achieved < 0:
        raise ValueError(f"achieved must be >= 0, got {achieved}")
    return achieved / peak


# Square GEMMs and BERT-base's FFN shapes at 256 tokens, with the weight a constant as in an exported model:
# MLAS packs constant weights once at session creation, and the model's MatMuls run on packed weights, so a
# peak measured with the weight as an input (re-packed every call) sits below what the model's own MatMul nodes
# reach (docs/measurements.md), and would flatter every cell's efficiency.
ORT_PEAK_SHAPES = ((2048, 2048, 2048), (1024, 1024, 1024), (256, 768, 3072), (256, 3072, 768))
INT8_PEAK_SHAPES = ((256, 768, 3072), (256, 3072, 768), (1024, 1024, 1024))


def best_seconds(call, repeats: int, min_time_s: float = 0.0) -> float:
    """Shortest time of `call()` over at least `repeats` runs and `min_time_s` seconds, after one warm-up."""
    call()
    best, runs, end = float("inf"), 0, time.perf_counter() + min_time_s
    while runs < repeats or time.perf_counter() < end:
        start = time.perf_counter()
        call()
        best, runs = min(best, time.perf_counter() - start), runs + 1
    return max(best, 1e-9)


def measure_peak_gemm_ort(m: int = 2048, k: int = 2048, n: int = 2048, repeats: int = 5,
                          threads: int | None = None, min_time_s: float = 0.5) -> float:
    """Best FLOP/s of one float32 MatMul (m×k by a constant k×n weight) in an ONNX Runtime CPU session: the
    same MLAS kernels the exported models use, so ORT cells are judged against what ORT itself can reach.
    Runs at least `repeats` times and `min_time_s` seconds after a warm-up."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(1).standard_normal((k, n), dtype=np.float32)
    nodes = [helper.make_node("MatMul", ["a", "w"], ["c"])]
    return _ort_gemm_rate(nodes, [numpy_helper.from_array(weight, "w")], TensorProto.FLOAT, (m, k, n),
                          repeats, min_time_s, threads)


def measure_peak_int8_ort(m: int = 256, k: int = 768, n: int = 3072, repeats: int = 5,
                          min_time_s: float = 0.5) -> float:
    """Best ops/s (2 per multiply-add) of the INT8 GEMM path the exported INT8 model runs: float activations
    quantised on the fly (DynamicQuantizeLinear, uint8) times a constant int8 weight (MatMulInteger → int32).
    Weights use 7 bits, as the quantiser's reduce_range does on hosts without VNNI."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(1).integers(-64, 64, (k, n), dtype=np.int8)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["a"], ["a_q", "a_scale", "a_zero"]),
             helper.make_node("MatMulInteger", ["a_q", "w", "a_zero", "w_zero"], ["c"])]
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zero")]
    return _ort_gemm_rate(nodes, inits, TensorProto.INT32, (m, k, n), repeats, min_time_s)


def small_model(graph):
    """An opset-17 model of `graph` that any ONNX Runtime we support loads. onnx's make_model stamps the installed
    onnx's newest IR version (onnx 1.23: IR 14), which an older runtime refuses: "Unsupported model IR version: 14,
    max supported IR version: 13" (onnxruntime 1.30 on the H100 machine). IR 9 holds opset 17; ORT 1.16+ reads it."""
    from onnx import helper

    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _ort_gemm_rate(nodes: list, initializers: list, out_type: int, shape: tuple[int, int, int], repeats: int,
                   min_time_s: float, threads: int | None = None) -> float:
    """2·m·k·n / best time of a one-input ORT CPU graph: float `a` (m×k) through `nodes` to `c` (m×n)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m, k, n = shape
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
    c = helper.make_tensor_value_info("c", out_type, [m, n])
    graph = helper.make_graph(nodes, "gemm", [a], [c], initializer=initializers)
    model = small_model(graph)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {"a": np.random.default_rng(0).standard_normal((m, k), dtype=np.float32)}
    return 2.0 * m * k * n / best_seconds(lambda: sess.run(None, feeds), repeats, min_time_s)


BF16_PEAK_SHAPES = ((256, 768, 3072), (256, 3072, 768), (1024, 1024, 1024))


def measure_peak_bf16_ov(m: int = 256, k: int = 768, n: int = 3072, repeats: int = 5, min_time_s: float = 0.5,
                         threads: int | None = None) -> float | None:
    """Best FLOP/s of one MatMul (m×k by a constant k×n weight) compiled by OpenVINO's CPU plugin with a BF16
    inference precision: the kernels the BF16 cells run (AMX or AVX512-BF16). None where OpenVINO is absent or the
    CPU has no BF16 hardware (an emulated peak would judge nothing)."""
    from bench.measure.isa import CpuIsa

    if not CpuIsa.here().bf16:
        return None
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None
    a = ops.parameter([m, k], np.float32, name="a")
    weight = np.random.default_rng(1).standard_normal((k, n), dtype=np.float32)
    model = ov.Model([ops.matmul(a, ops.constant(weight), False, False)], [a], "gemm")
    settings = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if threads:
        settings["INFERENCE_NUM_THREADS"] = threads
    request = ov.Core().compile_model(model, "CPU", settings).create_infer_request()
    feeds = {"a": np.random.default_rng(0).standard_normal((m, k), dtype=np.float32)}
    return 2.0 * m * k * n / best_seconds(lambda: request.infer(feeds), repeats, min_time_s)


def measure_peak(size: int = 2048, repeats: int = 5) -> dict:
    """Peak float32 GEMM FLOP/s of this host: the best of numpy's BLAS (size² square) and ONNX Runtime's MLAS
    over ORT_PEAK_SHAPES; plus the INT8 GEMM peak (`int8_peak_ops`), which INT8 cells are judged against,
    since a float32 peak is not their limit. Every figure is kept, so a report can show where a peak came from."""
    engines = {"numpy": measure_peak_gemm_flops(size, repeats)}
    shapes: dict[str, float] = {}
    int8: dict[str, float] = {}
    try:
        for m, k, n in ORT_PEAK_SHAPES:
            shapes[f"{m}x{k}x{n}"] = measure_peak_gemm_ort(m, k, n, repeats)
        engines["onnxruntime"] = max(shapes.values())
        for m, k, n in INT8_PEAK_SHAPES:
            int8[f"{m}x{k}x{n}"] = measure_peak_int8_ort(m, k, n, repeats)
    except ImportError:
        pass
    bf16 = {f"{m}x{k}x{n}": measure_peak_bf16_ov(m, k, n, repeats) for m, k, n in BF16_PEAK_SHAPES}
    bf16 = {shape: rate for shape, rate in bf16.items() if rate}
    return {"peak_flops": max(engines.values()), "by_engine": engines, "onnxruntime_by_shape": shapes,
            "bf16_peak_flops": max(bf16.values()) if bf16 else None, "bf16_by_shape": bf16,
            "bf16_kernel": "OpenVINO CPU MatMul, INFERENCE_PRECISION_HINT=bf16" if bf16 else None,
            "size": size, "dtype": "float32", "int8_peak_ops": max(int8.values()) if int8 else None,
            "int8_by_shape": int8, "int8_kernel": "ORT DynamicQuantizeLinear + MatMulInteger (u8 x s8, 7-bit weights)"}


def peak_for(precision: str, peak: PeakGemm | None, fallback: float | None = None, device: str = "cpu",
             tf32: str | None = None) -> tuple[float | None, str]:
    """The peak a cell of this precision is judged against, and its name: INT8 cells against the INT8 GEMM
    peak and BF16 cells against the BF16 one when the run measured them, everything else (and INT8 / BF16 in
    runs without that peak) against the float32 peak.
    GPU cells only against the GPU's own peak of their precision (`peak.gpu`, bench.engine.gpu_peak): FP16,
    TF32 where the cell allowed it, else FP32; None without one (never the host CPU's peak)."""
    peak = peak or PeakGemm()
    if device != "cpu":
        kind = "fp16" if precision == "fp16" else "tf32" if tf32 in ("on", "trt-default") else "fp32"
        return (peak.gpu.rate(kind) if peak.gpu else None), f"gpu-{kind}"
    if precision == "int8" and peak.int8_peak_ops:
        return peak.int8_peak_ops, "int8"
    if precision == "bf16" and peak.bf16_peak_flops:
        return peak.bf16_peak_flops, "bf16"
    return peak.peak_flops or fallback, "float32"
