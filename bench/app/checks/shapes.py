"""What a new input shape costs an engine, per thread, and what a busy Python thread beside it costs: the
diagnostics behind the service's shape buckets (bench.model.buckets), run by `check serving` (CPU) and `check gpu`.

Every figure is a median ratio of paired calls at the same shape, so bigger shapes costing more cancels out:
- new / seen: a shape's first call on a thread against its next call there (cuDNN graphs, OpenVINO executors,
  allocator growth are paid in the first);
- other thread: a shape's first call on a second thread against the same shape seen on the first (a per-thread
  cache shows here);
- GIL busy: a seen shape while another Python thread spins, against the same shape undisturbed (an engine whose
  calls need the GIL between kernels slows here: torch in the HTTP front's process).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

SHAPES = 12  # distinct (batch, length) pairs probed


def shapes(rng: np.random.Generator, n: int = SHAPES) -> list[tuple[int, int]]:
    """Service-like shapes: batches 1–8, lengths 24–160 tokens, all distinct."""
    out: list[tuple[int, int]] = []
    while len(out) < n:
        shape = (int(rng.integers(1, 9)), int(rng.integers(24, 161)))
        if shape not in out:
            out.append(shape)
    return out


def inputs(backend, shape: tuple[int, int]) -> dict:
    """The model's inputs at one shape (its signature's names), every position attended."""
    from bench.core.signature import read_signature

    return read_signature(backend.config.model_dir).dummy(*shape, token=101)


def timed(backend, shape: tuple[int, int]) -> float:
    t0 = time.perf_counter()
    backend.infer(inputs(backend, shape))
    return time.perf_counter() - t0


def on_thread(fn):
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def costs(backend, seed: int = 0) -> dict:
    """The three median ratios (see the module's docstring) on a loaded backend."""
    probe = shapes(np.random.default_rng(seed))
    first = [timed(backend, s) for s in probe]
    seen = [timed(backend, s) for s in probe]
    other = on_thread(lambda: [timed(backend, s) for s in probe])
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(2000))

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        busy = [timed(backend, s) for s in probe]
    finally:
        stop.set()
        spinner.join()
    ratio = lambda a, b: float(np.median(np.asarray(a) / np.asarray(b)))  # noqa: E731
    out = {"new_over_seen": ratio(first, seen), "other_thread_over_seen": ratio(other, seen),
           "gil_busy_over_seen": ratio(busy, seen), "seen_ms_median": 1000 * float(np.median(seen)),
           "shapes": len(probe)}
    out["text"] = (f"first call at a new shape {out['new_over_seen']:.2f}× a seen one; on another thread "
                   f"{out['other_thread_over_seen']:.2f}×; beside a busy Python thread {out['gil_busy_over_seen']:.2f}×"
                   f" (medians over {len(probe)} shapes, seen call {out['seen_ms_median']:.1f} ms)")
    return out


def probe_costs(name: str, model_dir: Path, onnx_dir: Path) -> dict:
    """`costs` of one backend, loaded here as the service would load it."""
    from bench import backends
    from bench.backends.base import BackendConfig
    from bench.model import artifacts

    spec = backends.resolve(name)
    backend = backends.create(BackendConfig(spec, model_dir, artifacts.model_file(onnx_dir, spec.engine,
                                                                                spec.precision, spec.device)))
    backend.load()
    try:
        return costs(backend)
    finally:
        backend.close()
