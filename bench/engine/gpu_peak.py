"""The GPU's own dense GEMM peak in FP32 (TF32 off), TF32 and FP16: what GPU cells are judged against in the
roofline (a CPU's peak says nothing about a GPU cell). Measured once per run, in its own process, so the parent
never holds a CUDA context: `python -m bench.engine.gpu_peak --gpu N` prints the figures as JSON.

torch is used where it is installed (cuBLAS through torch.matmul, timed with CUDA events), else ONNX Runtime's
CUDA provider (a MatMul graph with IO binding, inputs already on the device); the best engine per precision wins.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

PRECISIONS = ("fp32", "tf32", "fp16")


def best_rate(run_once: Callable[[], float], flop: float, repeats: int = 10) -> float:
    """FLOP/s of the fastest of `repeats` calls after two warm-ups; `run_once()` returns one call's seconds."""
    run_once(), run_once()
    return flop / max(min(run_once() for _ in range(repeats)), 1e-9)


def torch_rates(ordinal: int, n: int = 8192) -> dict[str, float]:
    """n×n×n matmuls with torch on CUDA device `ordinal`, one per precision."""
    import torch

    torch.cuda.set_device(ordinal)
    out = {}
    for precision in PRECISIONS:
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        dtype = torch.float16 if precision == "fp16" else torch.float32
        a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
        out[precision] = best_rate(lambda: _torch_seconds(torch, a, b), 2.0 * n**3)
    torch.backends.cuda.matmul.allow_tf32 = False
    return out


def _torch_seconds(torch, a, b) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.matmul(a, b)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0


def ort_rates(ordinal: int, n: int = 4096) -> dict[str, float]:
    """The same with ONNX Runtime's CUDA provider (use_tf32 off / on; a float16 graph), for hosts without torch."""
    import numpy as np
    import onnxruntime as ort

    from bench.backends.ort_gpu import CUDA, cuda_options, fallback_reason, native_stderr, preload_cuda_libraries

    if CUDA not in ort.get_available_providers():
        raise RuntimeError(f"onnxruntime {ort.__version__} is a build without {CUDA}")
    preload_cuda_libraries(ort)
    out = {}
    for precision in PRECISIONS:
        dtype = np.float16 if precision == "fp16" else np.float32
        with native_stderr() as log:
            sess = ort.InferenceSession(_matmul_graph(n, dtype), providers=[(CUDA, cuda_options(
                ordinal, precision == "tf32"))])
        reason = fallback_reason(CUDA, sess.get_providers(), log["text"])
        if reason:
            raise RuntimeError(reason)
        feeds = [ort.OrtValue.ortvalue_from_numpy(np.ones((n, n), dtype), "cuda", ordinal) for _ in range(2)]
        out[precision] = best_rate(lambda: _ort_seconds(sess, feeds, ordinal), 2.0 * n**3)
    return out


def _ort_seconds(sess, feeds: list, ordinal: int) -> float:
    binding = sess.io_binding()
    binding.bind_ortvalue_input("a", feeds[0])
    binding.bind_ortvalue_input("b", feeds[1])
    binding.bind_output("c", "cuda", ordinal)
    t0 = time.perf_counter()
    sess.run_with_iobinding(binding)
    binding.synchronize_outputs()
    return time.perf_counter() - t0


def _matmul_graph(n: int, dtype) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper

    from bench.measure.roofline import small_model

    kind = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    io = [helper.make_tensor_value_info(name, kind, [n, n]) for name in ("a", "b", "c")]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", io[:2], io[2:])
    return small_model(graph).SerializeToString()


ENGINES = {"torch": torch_rates, "onnxruntime": ort_rates}


def measure_gpu_peak(ordinal: int = 0, engines: dict | None = None) -> dict:
    """{"fp32", "tf32", "fp16"}: the best FLOP/s over the engines that ran; `by_engine` keeps each engine's
    figures or why it could not run (not installed, no CUDA provider), so a report can say where a peak came from."""
    by_engine: dict[str, dict | str] = {}
    for name, rates in (engines or ENGINES).items():
        try:
            by_engine[name] = rates(ordinal)
        except ImportError as exc:
            by_engine[name] = f"not installed ({exc.name or exc})"
        except RuntimeError as exc:  # CUDA errors from torch, a provider that did not load in ORT
            by_engine[name] = f"failed: {str(exc)[:300]}"
    measured = [r for r in by_engine.values() if isinstance(r, dict)]
    peak = {p: max((r[p] for r in measured), default=None) for p in PRECISIONS}
    return {**peak, "by_engine": by_engine, "device": ordinal, "kernel": "dense square GEMM"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device (CUDA's numbering)")
    args = parser.parse_args(argv)
    result = measure_gpu_peak(args.gpu)
    print(json.dumps(result))
    return 0 if any(result[p] for p in PRECISIONS) else 1


if __name__ == "__main__":
    sys.exit(main())
