"""Measure one cell in this (fresh) process and print its CellResult JSON on the last stdout line.

Run by the runner as `python -m bench.worker` with the request JSON on stdin. Phases are timed
separately: framework imports, session/model creation, first (cold) inference, warm-up, timed loop.
Progress goes to stderr as `PROGRESS <elapsed_s> <iterations>` lines the parent turns into a bar.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import replace

from bench.results import cell_to_dict
from bench.runner import WorkerRequest

T_START = time.perf_counter()

FRAMEWORKS = {"torch": ("torch", "transformers"), "ort": ("onnxruntime",), "fake": ()}


def import_framework(engine: str) -> float:
    """Import the engine's framework now so its cost is the 'imports' phase, not 'create'."""
    import importlib

    t0 = time.perf_counter()
    for name in FRAMEWORKS[engine]:
        importlib.import_module(name)
    return time.perf_counter() - t0


def encoded_batches(req, spec, n_batches: int = 16) -> tuple[list, float]:
    """Pre-tokenised batches (tokenisation is not part of engine latency) and mean tokens per item."""
    from bench.corpus import bucket_workload, length_workload
    from bench.tokenize import encode, load_tokenizer

    n = spec.batch * n_batches
    if spec.workload == "bucket":
        workload = bucket_workload(n, spec.seq_len, seed=req.seed)
    else:
        workload = length_workload(n, seed=req.seed)
    tok = load_tokenizer(req.model_dir)
    batches = [encode(tok, workload.texts[i:i + spec.batch], workload.max_length) for i in range(0, n, spec.batch)]
    tokens = sum(float(b["attention_mask"].sum()) for b in batches) / n
    return batches, tokens


def progress(elapsed: float, n: int) -> None:
    print(f"PROGRESS {elapsed:.2f} {n}", file=sys.stderr, flush=True)


def measure(req) -> dict:
    from bench import backends
    from bench.backends.base import BackendConfig
    from bench.measure.timer import make_timer
    from bench.records import CellResult, LoadPhases

    spec = req.spec
    bspec = backends.resolve(spec.backend)
    config = BackendConfig(bspec, req.model_dir, req.model_file, spec.threads, req.options)
    imports_s = import_framework(bspec.engine)
    backend = backends.create(config)
    t0 = time.perf_counter()
    backend.load()
    create_s = time.perf_counter() - t0
    batches, tokens = encoded_batches(req, spec)
    timer = make_timer(bspec.device)
    first_s = timer.measure(lambda: backend.infer(batches[0]))
    warmup = [timer.measure(lambda b=b: backend.infer(b)) for b in batches[1:1 + req.warmup_iters]]
    run = timed_window(req, backend, batches, timer, bspec.device)
    run = replace(run, warmup_s=tuple(warmup), load=LoadPhases(imports_s, create_s, first_s))
    result = CellResult(spec=spec, status="ok", runs=(run,), items_per_batch=spec.batch, tokens_per_item=tokens,
                        flops_per_batch=flops(req.model_dir, spec.batch, tokens))
    backend.close()
    return cell_to_dict(result)


def timed_window(req, backend, batches: list, timer, device: str):
    """The timed loop under the stop rule, with the energy meter around it: one ProcessRun."""
    from bench.measure.stats import run_until_stopped
    from bench.records import Energy, ProcessRun, WorkerMeta

    turn = itertools.count()  # cycle through the pre-encoded batches
    gpu = open_gpu(device)
    meter = energy_meter(req, gpu)
    cpu0, w0 = time.process_time(), time.perf_counter()
    meter.start()
    samples, reason = run_until_stopped(lambda: timer.measure(lambda: backend.infer(batches[next(turn) % len(batches)])),
                                        req.stop, on_sample=lambda _s: tick(w0))
    window = time.perf_counter() - w0
    cpu_s = time.process_time() - cpu0
    energy = meter.stop(cpu_seconds=cpu_s)
    close_gpu(gpu)
    meta = WorkerMeta(100.0 * cpu_s / window, type(timer).__name__, time.perf_counter() - T_START,
                      backend.device_memory().get("torch_max_memory_allocated_bytes"))
    return ProcessRun(latencies_s=tuple(samples), window_s=window, stop_reason=reason, energy=Energy(**energy),
                      meta=meta)


_last_tick = [0.0]


def tick(w0: float) -> None:
    now = time.perf_counter()
    if now - _last_tick[0] > 0.25:  # a few lines a second is plenty for a progress bar
        _last_tick[0] = now
        progress(now - w0, 0)


def flops(model_dir: str, batch: int, tokens_per_item: float) -> float:
    from bench.measure.roofline import bert_flops

    cfg = json.loads(open(f"{model_dir}/config.json", encoding="utf-8").read())
    cfg.update(batch=batch, seq_len=max(1, round(tokens_per_item)), num_labels=len(cfg.get("id2label") or [0, 1]))
    return float(bert_flops(cfg))


def open_gpu(device: str):
    if device == "cpu":
        return None
    from bench.measure.gpu import probe_gpu

    return probe_gpu()


def close_gpu(gpu) -> None:
    if gpu is not None:
        gpu.close()


def energy_meter(req, gpu):
    from bench.measure.power import EnergyMeter

    return EnergyMeter(tdp_w=req.tdp_w, gpu=gpu)


def outcome(req) -> dict:
    """Run the cell; an Unavailable backend is 'skipped', any other failure 'failed', both with a reason."""
    from bench.backends.base import Unavailable
    from bench.records import CellResult

    try:
        return measure(req)
    except Unavailable as exc:
        return cell_to_dict(CellResult(req.spec, "skipped", str(exc)))
    except MemoryError:
        return cell_to_dict(CellResult(req.spec, "failed", "out of memory (MemoryError in worker)"))
    except Exception as exc:  # noqa: BLE001  the run goes on; the reason is recorded with the cell
        return cell_to_dict(CellResult(req.spec, "failed", f"{type(exc).__name__}: {exc}"))


def main() -> int:
    from bench.quiet import quiet_libraries

    quiet_libraries()
    req = WorkerRequest.from_json(sys.stdin.read())
    result = outcome(req)
    sys.stdout.write("\n" + json.dumps(result, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
