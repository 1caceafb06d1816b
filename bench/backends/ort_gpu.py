"""ONNX Runtime on NVIDIA GPUs, correct by construction: provider options built from the cell (device, TF32,
TensorRT caches and shape profiles), and the check that the provider asked for is the one the session uses.

`get_available_providers()` lists what the wheel was built with, not what can load: when the CUDA provider's
libraries (libcudart, cuDNN) or TensorRT's libnvinfer are missing, ORT logs a warning on the C++ side and runs on
the next provider in the list. Only `session.get_providers()` after creation says what runs; a fallback makes the
cell unavailable with ORT's own words, never a CPU (or CUDA) number published as CUDA (or TensorRT).
No onnxruntime import here: the caller passes the module.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
PROVIDERS = {"cpu": CPU, "cuda": CUDA, "tensorrt": TRT}


def cuda_options(device_id: int, tf32: bool, graphs: bool = False) -> dict:
    """The CUDA provider on `device_id`. ORT enables TF32 by default while torch's matmul does not: both engines
    get it set explicitly, so an "fp32" cell is IEEE float32 on either. `graphs`: CUDA graph capture, one graph per
    `gpu_graph_id` run option (OrtBackend gives each bucket shape its own)."""
    return {"device_id": device_id, "use_tf32": int(tf32), **({"enable_cuda_graph": 1} if graphs else {})}


GRAPH_ID = "gpu_graph_id"  # ORT's run option (kOrtRunOptionsConfigCudaGraphAnnotation); -1: no capture or replay


def bucket_profiles(shapes, names: Sequence[str], per_batch: bool = True) -> list[dict[str, list[list[int]]]]:
    """TensorRT optimisation profiles for a service's bucket shapes: one per batch bucket, from its shortest to its
    longest length bucket, optimised at the median one; every bucket shape is inside a profile built for its batch,
    and the engine needs a handful of profiles rather than one per shape (each profile is built and tuned). ORT's
    provider reads repeated input names as further profiles. `per_batch` False: one profile spanning every bucket
    shape, optimised at the largest batch and the median length (fewer engines to build, one tuning point)."""
    if not per_batch:
        rows_all, lengths_all = sorted({int(r) for r, _ in shapes}), sorted(int(n) for _, n in shapes)
        low, high = [rows_all[0], lengths_all[0]], [rows_all[-1], lengths_all[-1]]
        opt = [rows_all[-1], lengths_all[len(lengths_all) // 2]]
        return [{name: [low, opt, high] for name in names}]
    by_rows: dict[int, list[int]] = {}
    for rows, length in shapes:
        by_rows.setdefault(int(rows), []).append(int(length))
    out = []
    for rows, lengths in sorted(by_rows.items()):
        lengths.sort()
        low, opt, high = [rows, lengths[0]], [rows, lengths[len(lengths) // 2]], [rows, lengths[-1]]
        out.append({name: [low, opt, high] for name in names})
    return out


def shape_profile(batches: Sequence[Mapping[str, object]]) -> dict[str, list[list[int]]]:
    """min / opt / max shape of every input over the batches a cell feeds (opt: the median width), so one
    TensorRT engine covers every shape of the timed loop instead of rebuilding inside it."""
    out = {}
    for name in batches[0]:
        shapes = sorted((tuple(b[name].shape) for b in batches), key=lambda s: s[::-1])
        low = [min(s[i] for s in shapes) for i in range(len(shapes[0]))]
        high = [max(s[i] for s in shapes) for i in range(len(shapes[0]))]
        out[name] = [low, list(shapes[len(shapes) // 2]), high]
    return out


def trt_profile_options(profile: Mapping | Sequence[Mapping]) -> dict:
    """ORT's explicit-profile options: "input_ids:8x17,attention_mask:8x17" for each of min, opt and max; several
    profiles (a list) repeat the input names in profile order, as ORT's TensorRT provider reads them."""
    profiles = [profile] if isinstance(profile, Mapping) else list(profile)
    profiles = [p for p in profiles if p]
    text = lambda k: ",".join(f"{n}:{'x'.join(map(str, s[k]))}" for p in profiles for n, s in p.items())  # noqa: E731
    return {f"trt_profile_{kind}_shapes": text(k) for k, kind in enumerate(("min", "opt", "max"))} if profiles else {}


def trt_options(device_id: int, fp16: bool, cache_dir: Path, profile: Mapping) -> dict:
    """TensorRT with its engine and timing caches under `cache_dir` (built once, reused by later workers) and an
    explicit shape profile. There is no TF32 switch for TensorRT in ORT: its builder decides ("trt-default")."""
    return {"device_id": device_id, "trt_fp16_enable": int(fp16), "trt_engine_cache_enable": 1,
            "trt_engine_cache_path": str(cache_dir), "trt_timing_cache_enable": 1,
            "trt_timing_cache_path": str(cache_dir), **trt_profile_options(profile)}


DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"  # ORT's session config key (kOrtSessionOptions…)


def provider_list(device: str, fp16: bool, device_id: int, tf32: bool, cache_dir: Path | None,
                  profile: Mapping | Sequence[Mapping], cpu: bool = True, graphs: bool = False) -> list:
    """The providers to ask for, best first: TensorRT falls back to CUDA for nodes it cannot take. `cpu` False
    (the CPU fallback disabled): no CPU provider, as ORT refuses a session that lists it and disables it.
    `graphs`: CUDA graphs on the CUDA provider (a cuda session only)."""
    if device == "cpu":
        return [CPU]
    cuda = (CUDA, cuda_options(device_id, tf32, graphs and device == "cuda"))
    tail = [CPU] if cpu else []
    if device == "tensorrt":
        return [(TRT, trt_options(device_id, fp16, cache_dir, profile)), cuda, *tail]
    return [cuda, *tail]


def refusal_reason(wanted: str, error: str, strict: bool, log: str = "") -> str:
    """Why ORT refused to create the session, in its words (the exception, then what it logged: a provider that
    did not load leaves every node to the CPU); with the CPU fallback disabled, how to allow it."""
    logged = log_lines(log)
    if f"Failed to create {wanted}" in logged or "EP Error" in logged:  # the provider itself did not load
        return f"{wanted} did not load, so ONNX Runtime refused the session ({error.strip()[:200]}): {logged[:600]}"
    hint = "; a node of the graph would run on the CPU: --backend-option cpu_fallback=1 allows that, and the " \
           "figure then includes those CPU nodes" if strict and "CPU EP" in error else ""
    return f"{wanted} session refused by ONNX Runtime: {error.strip()[:400]}" + \
        (f" (ORT logged: {logged[:400]})" if logged else "") + hint


def fallback_reason(wanted: str, used: Sequence[str], log: str) -> str | None:
    """None when `wanted` is among the providers the session uses; else why not, in ORT's own words."""
    if wanted in used:
        return None
    why = log_lines(log) or "ONNX Runtime logged no reason"
    return f"{wanted} did not load; the session runs on {', '.join(used) or 'nothing'}: {why[:600]}"


def log_lines(log: str) -> str:
    """ORT's error and warning lines from a captured log, without timestamps, colours and banners."""
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # ORT colours its log lines on a terminal
    keep = (":onnxruntime:", "EP Error", "Warning")
    lines = [ln.split("] ", 1)[-1].strip() for ln in log.splitlines()
             if any(k in ln for k in keep) and not ln.startswith("*")]  # "**** EP Error ****" is a banner
    return "; ".join(dict.fromkeys(ln for ln in lines if ln))


@contextlib.contextmanager
def native_stderr() -> Iterator[dict]:
    """Capture what ORT says while a session is created: file descriptor 2 (its C++ logger, unseen by
    sys.stderr), Python prints (its "EP Error … Falling back" notice goes to stdout, which carries a worker's
    result) and Python warnings. The text is passed on to stderr and kept in the yielded dict under "text"."""
    out = {"text": ""}
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp, warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stdout(io.StringIO()) as printed:
        warnings.simplefilter("always")
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            py = "".join(f"Warning: {w.message}\n" for w in caught)
            out["text"] = printed.getvalue() + tmp.read().decode("utf-8", "replace") + py
            sys.stderr.write(out["text"])


def preload_cuda_libraries(ort) -> None:
    """onnxruntime-gpu's [cuda,cudnn] extras install CUDA and cuDNN as pip packages the loader does not search;
    `preload_dlls()` loads them before the first session. It prints to stdout, which carries the worker's result."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    with contextlib.redirect_stdout(sys.stderr):
        try:
            preload()
        except (OSError, RuntimeError) as exc:  # missing libraries: the session's provider check reports it
            print(f"onnxruntime.preload_dlls: {exc}", file=sys.stderr)


def trt_cache_dir(model_file: Path, fp16: bool, root: Path | None = None) -> Path:
    """One engine + timing cache folder per exported model file and precision, under the artifacts folder. ORT
    names engines after the graph's structure, not its weights: the file's size and modification time are part
    of the folder name, so a re-export (new weights, same graph) never runs a stale engine."""
    import hashlib

    from bench.core.paths import artifacts_dir

    model_file = Path(model_file)
    st = model_file.stat()
    stamp = hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:10]
    base = root or artifacts_dir() / "tensorrt-cache"
    return base / f"{model_file.parent.name}-{model_file.stem}-{'fp16' if fp16 else 'fp32'}-{stamp}"


def engine_files(cache_dir: Path | None) -> int:
    """How many serialized TensorRT engines the cache holds (ORT writes one `.engine` file per TensorRT subgraph)."""
    return len(list(Path(cache_dir).glob("*.engine"))) if cache_dir and Path(cache_dir).is_dir() else 0
