"""Roofline helpers: the FLOPs a BERT-class forward pass needs and the GEMM peak this host reaches.

numpy only: measuring the peak must not import torch (STYLE.md: no heavy imports on paths that do not need them).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.errors import BenchError

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
    out = np.empty((size, size), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm-up: BLAS thread pool start, page faults on `out`
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / max(best, 1e-9)


def efficiency(achieved: float, peak: float) -> float:
    """Achieved / peak as a fraction (0.42 = 42% of peak)."""
    if peak <= 0:
        raise ValueError(f"peak must be > 0, got {peak}")
    if achieved < 0:
        raise ValueError(f"achieved must be >= 0, got {achieved}")
    return achieved / peak


# Square GEMMs and BERT-base's FFN shapes at 256 tokens, with the weight a constant as in an exported model:
# MLAS packs constant weights once at session creation, and the model's MatMuls run on packed weights, so a
# peak measured with the weight as an input (re-packed every call) sits ~10 % below what the model's own
# MatMul nodes reach, and would flatter every cell's efficiency.
ORT_PEAK_SHAPES = ((2048, 2048, 2048), (1024, 1024, 1024), (256, 768, 3072), (256, 3072, 768))


def measure_peak_gemm_ort(m: int = 2048, k: int = 2048, n: int = 2048, repeats: int = 5,
                          threads: int | None = None, min_time_s: float = 0.5) -> float:
    """Best FLOP/s of one float32 MatMul (m×k by a constant k×n weight) in an ONNX Runtime CPU session: the
    same MLAS kernels the exported models use, so ORT cells are judged against what ORT itself can reach.
    Runs at least `repeats` times and `min_time_s` seconds after a warm-up."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "b")
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [a], [c], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {"a": rng.standard_normal((m, k), dtype=np.float32)}
    sess.run(None, feeds)  # warm-up
    best, runs, end = float("inf"), 0, time.perf_counter() + min_time_s
    while runs < repeats or time.perf_counter() < end:
        start = time.perf_counter()
        sess.run(None, feeds)
        best, runs = min(best, time.perf_counter() - start), runs + 1
    return 2.0 * m * k * n / max(best, 1e-9)


def measure_peak(size: int = 2048, repeats: int = 5) -> dict:
    """Peak float32 GEMM FLOP/s of this host: the best of numpy's BLAS (size² square) and ONNX Runtime's MLAS
    over ORT_PEAK_SHAPES. Every figure is kept, so a report can show where the peak came from."""
    engines = {"numpy": measure_peak_gemm_flops(size, repeats)}
    shapes: dict[str, float] = {}
    try:
        for m, k, n in ORT_PEAK_SHAPES:
            shapes[f"{m}x{k}x{n}"] = measure_peak_gemm_ort(m, k, n, repeats)
        engines["onnxruntime"] = max(shapes.values())
    except ImportError:
        pass
    return {"peak_flops": max(engines.values()), "by_engine": engines, "onnxruntime_by_shape": shapes,
            "size": size, "dtype": "float32"}
