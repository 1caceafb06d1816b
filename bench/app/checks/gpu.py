"""`python -m bench check gpu`: every GPU path briefly, on the GPU, with one verdict per check.

What each check proves: the CUDA driver sees the device; NVML finds that very board (by UUID / PCI bus id) and
reads its energy; torch runs on it with TF32 off; ONNX Runtime's CUDA provider really loads (the providers the
session uses, not the wheel's list) and IO binding returns right numbers; TensorRT builds an engine into its cache
and a second session reuses it; the GPU's GEMM peak is measured; and, where the export stack is installed, every
GPU backend measures a cell in a fresh worker (providers used, sane timings, NVML energy, VRAM and its scope), the
costs of new shapes, other threads and a busy Python thread are measured on torch FP16, and the service's model
side is set against its own engine (bench.app.checks.gpu_service).

Runs on a bare GPU host too (`PYTHONPATH=. python3 -m bench check gpu` with only torch, onnx, onnxruntime,
nvidia-ml-py, numpy, scipy): each check imports what it needs when it runs, and one whose package is missing is
skipped with that reason. Exit codes: 0 every check passed or was skipped with its reason, 1 a check failed,
3 not available (no usable CUDA device on this host: nothing was checked).
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOT_AVAILABLE = 3
EXPORT_STACK = ("transformers", "tokenizers", "tqdm", "psutil")


@dataclass(frozen=True)
class Verdict:
    check: str
    status: str  # "pass" | "fail" | "skip"
    detail: str


@dataclass
class Context:
    ordinal: int
    model: str
    tmp: Path


def check_gpu(model: str = "twin", ordinal: int = 0) -> int:
    """Run every check on CUDA device `ordinal`; the exit code as documented above."""
    from bench.measure.cuda_driver import cuda_device_reason

    reason = cuda_device_reason(ordinal)
    if reason:
        print(f"check gpu: not available on this host: {reason}")
        print(f"exit code {NOT_AVAILABLE}: no usable CUDA device, nothing was checked")
        return NOT_AVAILABLE
    print(f"check gpu on CUDA device {ordinal}")
    with tempfile.TemporaryDirectory(prefix="structbench-gpu-check-") as tmp:
        ctx = Context(ordinal, model, Path(tmp))
        verdicts = [v for name, check in CHECKS for v in run_check(name, check, ctx)]
    counts = {s: sum(v.status == s for v in verdicts) for s in ("pass", "skip", "fail")}
    print(f"result: {counts['pass']} passed, {counts['skip']} skipped (reason given), {counts['fail']} failed")
    return 1 if counts["fail"] else 0


def run_check(name: str, check, ctx: Context) -> list[Verdict]:
    """One check's verdicts, printed as they come: a missing package is a skip with its name, any other error
    a failure with its message (the check goes on with the next one)."""
    try:
        out = check(ctx)
        verdicts = out if isinstance(out, list) else [out]
    except ImportError as exc:
        verdicts = [Verdict(name, "skip", f"needs {exc.name or exc} (not installed)")]
    except Exception as exc:  # noqa: BLE001  a broken path is this check's verdict, not the end of the others
        verdicts = [Verdict(name, "fail", f"{type(exc).__name__}: {str(exc)[:400]}")]
    for v in verdicts:
        print(f"  {v.status.upper():<4}  {v.check:<28} {v.detail}", flush=True)
    return verdicts


def cuda_driver(ctx: Context) -> Verdict:
    from bench.measure.cuda_driver import load_driver

    driver, _ = load_driver()
    n = ctx.ordinal
    return Verdict("cuda driver", "pass", f"CUDA {driver.version()}, {driver.device_count()} device(s); device {n}: "
                                          f"{driver.name(n)} {driver.uuid(n)} at {driver.pci_bus_id(n)}")


def nvml(ctx: Context) -> Verdict:
    from bench.measure.gpu import open_cuda_gpu

    if importlib.util.find_spec("pynvml") is None:  # a missing package is a skip, not "board not found"
        raise ImportError("No module named 'pynvml'", name="nvidia-ml-py")

    gpu = open_cuda_gpu(ctx.ordinal)
    if gpu is None:
        return Verdict("nvml board", "fail", f"NVML finds no board for CUDA device {ctx.ordinal}")
    try:
        energy = gpu.energy_j()
        what = "total-energy counter readable" if energy is not None else "no energy counter: power sampling"
        ok = gpu.matched_by in ("uuid", "pci bus id")
        return Verdict("nvml board", "pass" if ok else "fail", f"{gpu.describe()}; {what}; "
                                                              f"{gpu.memory_used() / 2**20:.0f} MiB in use")
    finally:
        gpu.close()


def torch_cuda(ctx: Context) -> Verdict:
    import torch

    from bench.backends.torch_backend import set_tf32
    from bench.measure.timer import CudaTimer

    if not torch.cuda.is_available():
        return Verdict("torch cuda", "fail", f"torch {torch.__version__} sees no CUDA device (a CPU build?)")
    torch.cuda.set_device(ctx.ordinal)
    set_tf32(torch, False)
    a = torch.randn(1024, 1024, device="cuda")
    seconds = min(CudaTimer(torch.cuda).measure(lambda: a @ a) for _ in range(5))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    return Verdict("torch cuda", "pass" if not tf32 else "fail",
                   f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}) "
                   f"on {torch.cuda.get_device_name()}; TF32 {'on' if tf32 else 'off'}; 1024² matmul "
                   f"{seconds * 1e3:.3f} ms")


def tiny_model(tmp: Path) -> tuple[Path, Any]:
    """A one-MatMul graph ("x" [batch, 256] → "y" [batch, 2]) and its weight, for provider checks that need
    no model export."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    from bench.measure.roofline import small_model

    weight = np.random.default_rng(0).standard_normal((256, 2), dtype=np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny", [x], [y],
                              initializer=[numpy_helper.from_array(weight, "w")])
    path = tmp / "tiny.onnx"
    save(small_model(graph), str(path))
    return path, weight


def ort_backend(ctx: Context, device: str, **options):
    from bench.backends import BackendConfig, BackendSpec, create

    path, weight = tiny_model(ctx.tmp)
    backend = create(BackendConfig(BackendSpec("ort", "fp32", device), ctx.tmp, path,
                                   options={"device_id": ctx.ordinal, **options}))
    return backend, weight


def ort_cuda(ctx: Context) -> Verdict:
    import numpy as np
    import onnxruntime as ort

    from bench.backends import Unavailable
    from bench.measure.timer import SyncedCallTimer

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return Verdict("ort cuda provider", "skip", f"onnxruntime {ort.__version__} is a build without CUDA "
                                                    f"(make install-gpu installs onnxruntime-gpu)")
    backend, weight = ort_backend(ctx, "cuda")
    try:
        backend.load()
    except Unavailable as exc:
        return Verdict("ort cuda provider", "fail", str(exc))
    x = np.random.default_rng(1).standard_normal((8, 256), dtype=np.float32)
    out = backend.infer({"x": x})
    times = [SyncedCallTimer().measure(lambda: backend.infer({"x": x})) for _ in range(20)]
    right = np.allclose(out, x @ weight, rtol=1e-3, atol=1e-3)
    sane = all(math.isfinite(t) and t > 0 for t in times)
    info = backend.run_info()
    return Verdict("ort cuda provider", "pass" if right and sane else "fail",
                   f"providers used: {', '.join(info['providers'])}; TF32 {info['tf32']}; IO-bound call "
                   f"{sorted(times)[10] * 1e3:.3f} ms median; logits {'match' if right else 'DIFFER from'} numpy")


def ort_tensorrt(ctx: Context) -> Verdict:
    import numpy as np
    import onnxruntime as ort

    from bench.backends import Unavailable

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return Verdict("ort tensorrt engine cache", "skip", f"onnxruntime {ort.__version__} has no TensorRT provider")
    profile = {"x": [[1, 256], [4, 256], [8, 256]]}
    builds = []
    for _ in range(2):  # the second session must reuse the first one's engine
        backend, _w = ort_backend(ctx, "tensorrt", shape_profile=profile, trt_cache_dir=str(ctx.tmp / "trt"))
        try:
            backend.load()
        except Unavailable as exc:
            return Verdict("ort tensorrt engine cache", "fail", str(exc))
        t0 = time.perf_counter()
        backend.infer({"x": np.ones((4, 256), np.float32)})
        builds.append(backend.engine_build_s(time.perf_counter() - t0))
        backend.close()
    ok = builds[0] > 0 and builds[1] == 0.0
    return Verdict("ort tensorrt engine cache", "pass" if ok else "fail",
                   f"engine built in {builds[0]:.2f} s; second session: "
                   f"{'reused the cached engine' if builds[1] == 0.0 else f'rebuilt it ({builds[1]:.2f} s)'}")


def gpu_peak(ctx: Context) -> Verdict:
    from bench.engine.gpu_peak import PRECISIONS, measure_gpu_peak

    peak = measure_gpu_peak(ctx.ordinal)
    figures = ", ".join(f"{p.upper()} {peak[p] / 1e12:.1f}" for p in PRECISIONS if peak[p])
    engines = "; ".join(f"{k}: {'measured' if isinstance(v, dict) else v}" for k, v in peak["by_engine"].items())
    return Verdict("gpu gemm peak", "pass" if figures else "fail", f"{figures or 'nothing measured'} TFLOP/s "
                                                                   f"({engines})")


def backends(ctx: Context) -> list[Verdict]:
    """Every GPU backend on the exported model, one fresh worker each, briefly."""
    missing = [m for m in EXPORT_STACK if importlib.util.find_spec(m) is None]
    if missing:
        return [Verdict("gpu backends", "skip", f"needs {', '.join(missing)} to export the model (not installed)")]
    from bench.app.checks.common import prepare_model
    from bench.backends import GPU_BACKENDS

    model_dir, onnx_dir, _ = prepare_model(ctx.model)
    return [backend_verdict(name, measure_backend(name, model_dir, onnx_dir, ctx.ordinal)) for name in GPU_BACKENDS]


def measure_backend(name: str, model_dir: Path, onnx_dir: Path, ordinal: int):
    from bench.backends import resolve
    from bench.core.errors import BenchError
    from bench.core.records import CellResult, CellSpec
    from bench.core.stats import StopRule
    from bench.engine.harness import gpu_for
    from bench.engine.runner import WorkerLimits, WorkerRequest, run_cell
    from bench.measure.sampler import ResourceSampler
    from bench.model import artifacts

    b, spec = resolve(name), CellSpec(name, 8)
    try:
        path = artifacts.model_file(onnx_dir, b.engine, b.precision, b.device)
    except BenchError as exc:
        return CellResult(spec, "failed", str(exc))
    req = WorkerRequest(spec, str(model_dir), str(path) if path else None, gpu=ordinal, gpu_warmup_s=0.5,
                        stop=StopRule(min_iters=10, min_time_s=0.5, max_time_s=2.0))
    return run_cell(req, WorkerLimits(timeout_s=600),
                    sampler_factory=lambda pid: ResourceSampler(pid, 0.01, gpu=gpu_for(True, ordinal)))


def backend_verdict(name: str, cell) -> Verdict:
    """ok cells must show the provider they asked for, sane latencies, NVML energy and a labelled VRAM figure."""
    from bench.backends import resolve
    from bench.backends.ort_gpu import PROVIDERS

    if cell.status != "ok":
        return Verdict(f"backend {name}", "skip" if cell.status == "skipped" else "fail", cell.reason or "")
    b, lat = resolve(name), cell.latencies_s
    wanted = PROVIDERS[b.device] if b.engine == "ort" else None
    problems = {f"{wanted} not among the providers used": wanted and wanted not in cell.meta.providers,
                "latencies not all finite and > 0": not all(math.isfinite(x) and x > 0 for x in lat),
                f"energy source {cell.energy.source}, not NVML": not str(cell.energy.source).startswith("nvml"),
                "no VRAM figure": cell.resources.peak_vram_bytes is None}
    problems = [what for what, bad in problems.items() if bad]
    vram = (cell.resources.peak_proc_vram_bytes or cell.resources.peak_vram_bytes or 0) / 2**20
    detail = (f"P50 {cell.stats['p50'] * 1e3:.2f} ms ({cell.meta.timer}); providers {', '.join(cell.meta.providers)}"
              f"; TF32 {cell.meta.tf32}; energy {cell.energy.source}; VRAM {vram:.0f} MiB "
              f"({cell.resources.vram_scope})") + (f"; PROBLEMS: {'; '.join(problems)}" if problems else "")
    return Verdict(f"backend {name}", "fail" if problems else "pass", detail)


def service(ctx: Context) -> Verdict:
    """The service's model side (two instances, buckets, CUDA graphs) against its own engine on torch FP16."""
    from bench.app.checks.gpu_service import service_figures, service_verdict

    missing = [m for m in EXPORT_STACK if importlib.util.find_spec(m) is None]
    if missing:
        return Verdict("gpu service", "skip", f"needs {', '.join(missing)} (not installed)")
    figures = service_figures(ctx.model, "torch-fp16-cuda", options=(("device_id", str(ctx.ordinal)),))
    return Verdict("gpu service torch-fp16-cuda", *service_verdict(figures))


def shapes(ctx: Context) -> Verdict:
    from bench.app.checks.gpu_service import shape_text

    return Verdict("shape costs torch-fp16-cuda", "pass", shape_text(ctx.model, ctx.ordinal))


CHECKS = (("cuda driver", cuda_driver), ("nvml board", nvml), ("torch cuda", torch_cuda),
          ("ort cuda provider", ort_cuda), ("ort tensorrt engine cache", ort_tensorrt), ("gpu gemm peak", gpu_peak),
          ("gpu backends", backends), ("shape costs", shapes), ("gpu service", service))
