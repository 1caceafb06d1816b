"""`check gpu`'s service and shape checks: the service's model side against its own engine, on the GPU.

The service check runs what the service runs behind HTTP — the admission queue, the batcher with its shape buckets,
warm-up and CUDA graphs, two replica processes — with closed-loop clients in this process (a bare GPU host has no
FastAPI or Locust; HTTP's own cost is `check fronts`'s subject). Its engine reference is the same replica process,
called directly at the same shapes, before and after the load:
- saturated QPS (4 × max batch clients) against the engine's items/s at max batch and the texts' length bucket
  (target ≥ 0.5; the first GPU host measured 0.054 before buckets, graphs and instances);
- 1-client P95 against the engine's P95 at batch 1 (target ≤ 2);
- no new shape met after warm-up, and which shapes run without a CUDA graph, with the reason.
The shape check is bench.app.checks.shapes on the GPU backend: a new shape's first call, another thread's first
call, and a call beside a busy Python thread, each against a seen shape's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

SATURATION_TARGET, P95_TARGET = 0.5, 2.0
PHRASES = ("这家店的服务很好", "菜的味道一般般", "快递太慢了，包装也破了", "性价比很高，下次还来", "客服态度恶劣",
           "质量不错，和描述一致", "等了一个小时才上菜")


def texts(n: int, seed: int = 0) -> list[str]:
    """Review-like texts of 1–12 phrases (about 10–120 characters), distinct, in a fixed order."""
    rng = np.random.default_rng(seed)
    return [f"{i}:" + "，".join(rng.choice(PHRASES, int(rng.integers(1, 13)))) for i in range(n)]


@dataclass
class Load:
    qps: float
    p95_ms: float
    requests: int


async def closed_loop(batcher, users: int, duration_s: float, pool: list[str]) -> Load:
    """`users` clients, each submitting one text and waiting for its answer, again and again, for `duration_s`."""
    latencies: list[float] = []
    end = time.perf_counter() + duration_s

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await asyncio.gather(*batcher.submit([pool[i % len(pool)]]))
            latencies.append(time.perf_counter() - t0)
            i += users

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(users)))
    took = time.perf_counter() - t0
    return Load(len(latencies) / took, 1000 * float(np.percentile(latencies, 95)), len(latencies))


def engine_times(replica, rows: int, length: int, calls: int) -> list[float]:
    """`calls` direct model calls at one shape on the replica (the engine alone, through its process link)."""
    from bench.app.checks.shapes import inputs as shape_inputs

    inputs = shape_inputs(replica, (rows, length))
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        replica.infer(inputs)
        out.append(time.perf_counter() - t0)
    return out


def service_figures(model: str, backend: str, max_batch: int = 32, duration_s: float = 10.0,
                    options: tuple = ()) -> dict:
    """The service check's figures for one backend (a CPU backend works too: the tests run it that way)."""
    from bench.model.buckets import call_shape
    from bench.model.tokenize import counted, load_tokenizer, model_dir_str
    from bench.service.backend_setup import backend_config
    from bench.service.batcher import Batcher
    from bench.service.config import ServiceConfig
    from bench.service.replicas import start_replicas

    config = ServiceConfig(model=model, backend=backend, max_batch=max_batch, cache_size=0, backend_options=options,
                           max_queue=max(8 * max_batch, ServiceConfig.max_batch_items), request_timeout_s=60.0)
    bconfig = backend_config(config)
    replicas, _ = start_replicas(bconfig, config.effective_replicas, config.replica_threads, 120.0)
    tokenizer = load_tokenizer(model_dir_str(bconfig.model_dir))
    pool = texts(4096)
    counts, encodings = counted(tokenizer, pool[:256])
    length = call_shape(config.buckets, 1, int(np.median([len(e.ids) for e in encodings])))[1]
    calls: list = []
    batcher = Batcher.for_service(config, replicas, tokenizer, on_call=calls.append)
    try:
        batcher.start()
        t0 = time.perf_counter()
        batcher.wait_warm()
        if batcher.warm_error:
            raise RuntimeError(f"warm-up failed: {batcher.warm_error}")
        warm_s = time.perf_counter() - t0
        one = asyncio.run(closed_loop(batcher, 1, duration_s, pool))
        saturated = asyncio.run(closed_loop(batcher, 4 * max_batch, duration_s, pool))
        batcher.stop(timeout=60)
        b1 = engine_times(replicas[0], 1, length, 50)
        full = engine_times(replicas[0], max_batch, length, 20)
        serving = [r.serving_info() for r in replicas]
    finally:
        batcher.stop(timeout=10)
        for r in replicas:
            r.close()
    engine_items = max_batch / float(np.median(full))
    engine_p95 = 1000 * float(np.percentile(b1, 95))
    return {"backend": backend, "replicas": config.effective_replicas, "max_batch": max_batch, "length": length,
            "warmup_s": warm_s, "one_user_p95_ms": one.p95_ms, "engine_b1_p95_ms": engine_p95,
            "p95_ratio": one.p95_ms / engine_p95, "saturated_qps": saturated.qps, "engine_items_per_s": engine_items,
            "saturation_ratio": saturated.qps / engine_items,
            "mean_batch": float(np.mean([c.shape[0] for c in calls])) if calls else 0.0,
            "new_shapes_after_warmup": sum(c.new for c in calls), "serving": serving}


def service_verdict(f: dict) -> tuple[str, str]:
    """(status, detail) of the service check: "pass" when every target is met, else "fail"."""
    ok = f["saturation_ratio"] >= SATURATION_TARGET and f["p95_ratio"] <= P95_TARGET and \
        f["new_shapes_after_warmup"] == 0
    graphs = f["serving"][0].get("cuda_graphs", "n/a") if f["serving"] else "n/a"
    if isinstance(graphs, dict):
        eager = graphs["eager"]
        graphs = f"{len(graphs['captured'])} captured" + (f", {len(eager)} eager (e.g. {next(iter(eager.items()))})"
                                                          if eager else "")
    return ("pass" if ok else "fail",
            f"saturated {f['saturated_qps']:.0f} req/s = {f['saturation_ratio']:.2f} x engine "
            f"{f['engine_items_per_s']:.0f} items/s at {f['max_batch']}x{f['length']} (target >= "
            f"{SATURATION_TARGET}); 1-user P95 {f['one_user_p95_ms']:.2f} ms = {f['p95_ratio']:.2f} x engine "
            f"b1 P95 {f['engine_b1_p95_ms']:.2f} ms (target <= {P95_TARGET}); mean batch "
            f"{f['mean_batch']:.1f}; {f['replicas']} instances; new shapes after warm-up "
            f"{f['new_shapes_after_warmup']}; warm-up {f['warmup_s']:.1f} s; CUDA graphs: {graphs}")


def shape_text(model: str, ordinal: int) -> str:
    """What a new shape, another thread and a busy Python thread cost the torch FP16 CUDA engine (a diagnostic:
    the service check is where new shapes must not be paid)."""
    from bench.app.checks.shapes import costs
    from bench.backends import BackendConfig, create, resolve
    from bench.model.sources import materialize

    backend = create(BackendConfig(resolve("torch-fp16-cuda"), materialize(model), options={"device_id": ordinal}))
    backend.load()
    try:
        return costs(backend)["text"]
    finally:
        backend.close()
