"""Measure one cell in this (fresh) process and print its CellResult JSON on the last stdout line.

Run by the runner as `python -m bench.engine.worker` with the request JSON on stdin. Phases are timed
separately: framework imports, session/model creation, first (cold) inference, warm-up, timed loop.
Progress goes to stderr as `PROGRESS <elapsed_s> <iterations>` lines the parent turns into a bar.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import replace

from bench.core.results import cell_to_dict
from bench.core.signature import MASK
from bench.engine.runner import WorkerRequest

T_START = time.perf_counter()

FRAMEWORKS = {"torch": ("torch", "transformers"), "ort": ("onnxruntime",), "ov": ("openvino",), "fake": ()}


def import_framework(engine: str) -> float:
    """Import the engine's framework now so its cost is the 'imports' phase, not 'create'."""
    import importlib

    t0 = time.perf_counter()
    for name in FRAMEWORKS[engine]:
        importlib.import_module(name)
    return time.perf_counter() - t0


def encoded_batches(req, spec, n_batches: int = 16) -> tuple[list, float]:
    """Pre-tokenised batches (tokenisation is not part of engine latency) and mean tokens per item. A service-shaped
    batch is the list of calls the service would make for it (bench.model.buckets)."""
    from bench.model.corpus import bucket_workload, length_workload
    from bench.model.tokenize import encode, load_tokenizer

    n = spec.batch * n_batches
    if spec.workload == "bucket":
        workload = bucket_workload(n, spec.seq_len, seed=req.seed)
    else:
        workload = length_workload(n, seed=req.seed)
    tok = load_tokenizer(req.model_dir)
    if spec.workload == "service":
        from bench import backends
        from bench.model.buckets import Buckets, max_padding_for, service_calls

        device = backends.resolve(spec.backend).device
        buckets, padding = Buckets.for_device(device, spec.batch), max_padding_for(device)
        batches = [service_calls(tok, workload.texts[i:i + spec.batch], spec.batch, padding, buckets)
                   for i in range(0, n, spec.batch)]
        tokens = sum(float(c.inputs[MASK][:c.items].sum()) for b in batches for c in b) / n
        return batches, tokens
    batches = [encode(tok, workload.texts[i:i + spec.batch], workload.max_length) for i in range(0, n, spec.batch)]
    tokens = sum(float(b[MASK].sum()) for b in batches) / n
    return batches, tokens


class CallSequence:
    """A backend fed service-shaped batches: `infer` runs each of a batch's calls in turn (what the service's
    batcher does with them) and returns the texts' logits; everything else is the backend's."""

    def __init__(self, backend) -> None:
        self.backend = backend

    def infer(self, calls):
        import numpy as np

        return np.concatenate([self.backend.infer(c.inputs)[:c.items] for c in calls])

    def __getattr__(self, name):
        return getattr(self.backend, name)


def progress(elapsed: float, n: int) -> None:
    print(f"PROGRESS {elapsed:.2f} {n}", file=sys.stderr, flush=True)


def measure_request(req) -> dict:
    from bench import backends
    from bench.core.records import CellResult

    spec = req.spec
    bspec = backends.resolve(spec.backend)
    # GPU cells encode first: ORT's TensorRT profile is built from the batches' shapes (CPU cells keep the order
    # their load phases were always measured in)
    batches, tokens = encoded_batches(req, spec) if bspec.on_gpu else (None, None)
    imports_s = import_framework(bspec.engine)
    backend = backends.create(backend_config(req, bspec, batches))
    t0 = time.perf_counter()
    backend.load()
    create_s = time.perf_counter() - t0
    if batches is None:
        batches, tokens = encoded_batches(req, spec)
    if spec.workload == "service":
        backend = CallSequence(backend)
    run = warm_and_time(req, backend, bspec, batches, create_s, imports_s)
    result = CellResult(spec=spec, status="ok", runs=(run,), items_per_batch=spec.batch, tokens_per_item=tokens,
                        flops_per_batch=flops(req.model_dir, spec.batch, tokens))
    backend.close()
    return cell_to_dict(result)


def backend_config(req, bspec, batches: list):
    """The backend's settings; GPU cells get the chosen device (`--gpu`) and, for ORT, the shape profile."""
    from bench.backends.base import BackendConfig

    options = dict(req.options)
    if bspec.on_gpu:
        options["device_id"] = req.gpu
        if bspec.engine == "ort":
            from bench.backends.ort_gpu import shape_profile

            flat = [c.inputs for b in batches for c in b] if req.spec.workload == "service" else batches
            options.setdefault("shape_profile", shape_profile(flat))
    return BackendConfig(bspec, req.model_dir, req.model_file, req.spec.threads, options)


def warm_and_time(req, backend, bspec, batches: list, create_s: float, imports_s: float):
    """First (cold) inference, warm-up, timed window: one ProcessRun with its load phases."""
    from bench.core.records import LoadPhases
    from bench.measure.timer import make_timer

    timer = make_timer(bspec.device, engine=bspec.engine)
    first_s = timer.measure(lambda: backend.infer(batches[0]))
    build_s = backend.engine_build_s(first_s)  # raises Unavailable when TensorRT took none of the graph
    warmup = warm_up(req, backend, batches, timer, on_gpu=bspec.on_gpu)
    run = timed_window(req, backend, batches, timer, bspec.device)
    return replace(run, warmup_s=tuple(warmup), load=LoadPhases(imports_s, create_s, first_s, build_s))


def warm_up(req, backend, batches: list, timer, on_gpu: bool) -> list[float]:
    """CPU: `warmup_iters` batches. GPU: every batch once (each shape the timed loop will feed, so no kernel
    selection, allocator growth or TensorRT profile switch lands in it), then on until `gpu_warmup_s` passed."""
    if not on_gpu:
        return [timer.measure(lambda b=b: backend.infer(b)) for b in batches[1:1 + req.warmup_iters]]
    out, end = [], time.perf_counter() + req.gpu_warmup_s
    for i in itertools.count():
        out.append(timer.measure(lambda b=batches[i % len(batches)]: backend.infer(b)))
        if i + 1 >= max(len(batches), req.warmup_iters) and time.perf_counter() >= end:
            return out


def timed_window(req, backend, batches: list, timer, device: str):
    """The timed loop under the stop rule, with the energy meter around it: one ProcessRun."""
    from bench.core.records import Energy, ProcessRun
    from bench.core.stats import run_until_stopped

    turn = itertools.count()  # cycle through the pre-encoded batches
    gpu = open_gpu(device, req.gpu)
    meter = energy_meter(req, gpu, device)
    cpu0, w0 = time.process_time(), time.perf_counter()
    meter.start()
    samples, reason = run_until_stopped(
        lambda: timer.measure(lambda: backend.infer(batches[next(turn) % len(batches)])), req.stop,
        on_sample=lambda _s: tick(w0))
    window = time.perf_counter() - w0
    cpu_s = time.process_time() - cpu0
    energy = meter.stop(cpu_seconds=cpu_s)
    meta = worker_meta(backend, timer, 100.0 * cpu_s / window, gpu, device)
    close_gpu(gpu)
    return ProcessRun(latencies_s=tuple(samples), window_s=window, stop_reason=reason, energy=Energy(**energy),
                      meta=meta)


def worker_meta(backend, timer, cpu_percent: float, gpu, device: str = "cpu"):
    from bench.core.records import WorkerMeta
    from bench.measure.gpu_libs import loaded_gpu_libraries

    return WorkerMeta(cpu_percent, type(timer).__name__, time.perf_counter() - T_START,
                      backend.device_memory().get("torch_max_memory_allocated_bytes"),
                      gpu_device=gpu.describe() if gpu is not None else None,
                      gpu_libraries=loaded_gpu_libraries() if device != "cpu" else {}, **backend.run_info())


_last_tick = [0.0]


def tick(w0: float) -> None:
    now = time.perf_counter()
    if now - _last_tick[0] > 0.25:  # a few lines a second is plenty for a progress bar
        _last_tick[0] = now
        progress(now - w0, 0)


def flops(model_dir: str, batch: int, tokens_per_item: float) -> float:
    """The forward pass's FLOPs for this model's architecture (ModelSignature.flops)."""
    from bench.core.signature import read_signature

    return float(read_signature(model_dir).flops(batch, round(tokens_per_item)))


def open_gpu(device: str, ordinal: int = 0):
    """NVML's handle on the CUDA device this cell runs on (found by UUID / PCI bus id), or None."""
    if device == "cpu":
        return None
    from bench.measure.gpu import open_cuda_gpu

    return open_cuda_gpu(ordinal)


def close_gpu(gpu) -> None:
    if gpu is not None:
        gpu.close()


def energy_meter(req, gpu, device: str = "cpu"):
    from bench.measure.power import EnergyMeter

    return EnergyMeter(tdp_w=req.tdp_w, gpu=gpu, gpu_cell=device != "cpu")


def outcome(req) -> dict:
    """Run the cell; an Unavailable backend is 'skipped', any other failure 'failed', both with a reason."""
    from bench.backends.base import Unavailable
    from bench.core.records import CellResult

    try:
        return measure_request(req)
    except Unavailable as exc:
        return cell_to_dict(CellResult(req.spec, "skipped", str(exc)))
    except MemoryError:
        return cell_to_dict(CellResult(req.spec, "failed", "out of memory (MemoryError in worker)"))
    except Exception as exc:  # noqa: BLE001  the run goes on; the reason is recorded with the cell
        return cell_to_dict(CellResult(req.spec, "failed", f"{type(exc).__name__}: {exc}"))


def main() -> int:
    from bench.core.processes import watch_lifeline
    from bench.core.quiet import quiet_libraries

    watch_lifeline()  # a harness killed by SIGKILL leaves no worker measuring on
    quiet_libraries()
    req = WorkerRequest.from_json(sys.stdin.read())
    result = outcome(req)
    sys.stdout.write("\n" + json.dumps(result, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
