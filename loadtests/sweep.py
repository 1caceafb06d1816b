"""The sweep driver: for each service configuration, start the service, run Locust headless at each
concurrency level (closed loop) and each offered rate (open loop), and collect one record per level.

Records go into the run's results.json (`loadtests`), raw Locust CSVs under results/<run>/loadtests/.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from functools import cache, partial
from pathlib import Path

from bench.core.errors import BenchError
from loadtests.levels import Window, pooled_level
from loadtests.protocols import Spoken
from loadtests.samples import sample_paths
from loadtests.service_proc import ServiceVariant, metrics, open_target
from loadtests.windows import CPU_DEFAULTS, PRESETS, SweepConfig, run_locust, slug, spoken_for


@cache
def service_gpu_reason() -> str | None:
    """Why the service's CUDA device (0) cannot be used on this host, or None: the harness's probe of the CUDA
    driver, asked once per process (a search builds a SweepConfig per probe)."""
    from bench.engine.harness import host_gpu_reason

    return host_gpu_reason(0)


def default_variant_names(gpu_reason: Callable[[], str | None] | None = None,
                          ort_cuda: Callable[[], bool] | None = None) -> tuple[str, ...]:
    """The service configurations a sweep measures unless told: batching on and off and, on a host whose GPU can
    serve (`gpu_reason()` is None; default: the host's probe), a GPU preset too, so the decision can pick a GPU
    service: ONNX Runtime's where its CUDA provider is installed, else PyTorch's. On a CPU host nothing changes."""
    if (gpu_reason or service_gpu_reason)():
        return CPU_DEFAULTS
    return (*CPU_DEFAULTS, "gpu" if (ort_cuda or ort_has_cuda)() else "gpu-torch")


def ort_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def default_variants() -> tuple:
    return tuple(PRESETS[name] for name in default_variant_names())


def number(row: dict, key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def server_deltas(before: dict, after: dict) -> dict:
    """Cache and batch figures of one level, from /metrics before and after it (`texts`: those the model computed)."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("cache_hits_total", "cache_misses_total",
                                                             "batch_size_sum", "batch_size_count",
                                                             "service_cpu_seconds_total")}
    looked = d["cache_hits_total"] + d["cache_misses_total"]
    front_cpu = labelled_deltas(before, after, "front_cpu_seconds")
    return {"cache": {"hits": d["cache_hits_total"], "misses": d["cache_misses_total"],
                      "hit_rate": d["cache_hits_total"] / looked if looked else None},
            "mean_batch_size": d["batch_size_sum"] / d["batch_size_count"] if d["batch_size_count"] else None,
            "texts": d["batch_size_sum"], "shapes": shape_deltas(before, after),
            "cpu_s": d["service_cpu_seconds_total"] if "service_cpu_seconds_total" in after else None,
            "front_cpu_s": sum(front_cpu.values()) if front_cpu else None,
            "front_requests": sum(labelled_deltas(before, after, "front_requests_total").values())}


def process_deltas(before: dict, server, row: dict) -> dict:
    """A server without our /metrics: its process tree's CPU over the window where it runs here (None on another
    machine), per request it answered; no cache, batch or shape figures (not measured)."""
    after = server.cpu_seconds()
    answered = (number(row, "Request Count") or 0.0) - (number(row, "Failure Count") or 0.0)
    return {"cache": {"hits": 0.0, "misses": 0.0, "hit_rate": None}, "mean_batch_size": None, "shapes": None,
            "texts": answered, "cpu_s": None if after is None or before["cpu_s"] is None else after - before["cpu_s"],
            "front_cpu_s": None, "front_requests": 0.0}


def labelled_deltas(before: dict, after: dict, name: str) -> dict[str, float]:
    """A labelled metric's increase between two /metrics scrapes, by its labels ('{shape="8x64"}': …)."""
    return {k[len(name):]: after[k] - before.get(k, 0.0) for k in after if k.startswith(name + "{")}


def shape_deltas(before: dict, after: dict) -> dict:
    """The level's model calls by shape (service.metrics): calls, model time, the same calls at the engine's warm
    time per shape (averaged over replicas), new shapes, pad tokens."""
    delta = partial(labelled_deltas, before, after)
    calls, model = delta("model_calls_total"), delta("model_seconds_total")
    warm: dict[str, list] = {}
    for key, seconds in ((k, v) for k, v in after.items() if k.startswith("engine_seconds{")):
        shape = key.split('shape="', 1)[1].split('"', 1)[0]
        warm.setdefault(f'{{shape="{shape}"}}', []).append(seconds)
    new = delta("new_shapes_total")
    buckets = [{"shape": s.split('"')[1], "calls": n, "model_s": model.get(s, 0.0), "new_shapes": new.get(s, 0.0),
                "engine_s": n * sum(warm[s]) / len(warm[s]) if s in warm else None} for s, n in calls.items() if n]
    engine = [b["engine_s"] for b in buckets]
    tokens = delta("tokens_total")
    real, pad = tokens.get('{kind="real"}', 0.0), tokens.get('{kind="padding"}', 0.0)
    return {"calls": sum(calls.values()), "model_s": sum(model.values()),
            "engine_s": sum(engine) if engine and None not in engine else None,
            "new_shapes": sum(new.values()), "by_bucket": buckets,
            "padding_share": pad / (real + pad) if real + pad else None}


def run_window(url: str, users: int, rate: float | None, cfg: SweepConfig, out_dir: Path, tag: str,
               server=None, spoken: Spoken | None = None) -> Window:
    """One Locust window against `url`; `server` is the running target (default: our service, read from its
    /metrics), `spoken` its protocol (default: ours)."""
    scraped = server is None or server.scrapes_metrics
    before = metrics(url) if scraped else {"cpu_s": server.cpu_seconds()}
    if rate and cfg.workers > 1:  # open loop in several processes: Locust's master + workers, the rate split
        from loadtests.distributed import run_distributed  # open loop in several processes only

        result = run_distributed(url, users, cfg, out_dir, tag, rate, cfg.workers, spoken=spoken)
    else:
        result = run_locust(url, users, cfg, out_dir, tag, rate, spoken)
    server = server_deltas(before, metrics(url)) if scraped else process_deltas(before, server, result["row"])
    samples = tuple(str(p) for p in sample_paths(out_dir / f"{tag}_client.json"))
    if not samples:  # checked here, so a window without them fails alone and the sweep goes on
        raise BenchError(f"locust wrote no latency samples for {tag}")
    return Window(users, rate, result["row"], result["client"],
                  {k: v for k, v in result.items() if k not in ("row", "client")}, server, samples)


def sweep_variant(variant: ServiceVariant, cfg: SweepConfig, out_dir: Path, bar,
                  plan: list[tuple[int, float | None]] | None = None) -> list:
    """One service process, Locust at each level of `plan` (default: the config's levels) in that order; one
    LoadLevel per window, numbered by its place in the plan (checks that model drift between windows)."""
    plan = plan or levels(cfg)
    service = open_target(cfg.model, variant)
    records = []
    try:
        url = service.wait_ready()
        for i, (users, rate) in enumerate(plan):
            bar.set_postfix_str(f"{variant.label}: " + level_text(users, rate))
            tag = f"{slug(variant.label)}_{level_tag(users, rate)}_w{i:02d}"
            window = run_window(url, users, rate, cfg, out_dir, tag, service, spoken_for(cfg.model, variant))
            records.append(pooled_level(variant, cfg, [window], index=i))
            bar.update(1)
    finally:
        service.stop()
    return records


def level_text(users: int, rate: float | None) -> str:
    return f"open loop {rate:g} req/s" if rate else f"{users} users"


def level_tag(users: int, rate: float | None) -> str:
    return f"r{rate:g}" if rate else f"u{users}"


def levels(cfg: SweepConfig) -> list[tuple[int, float | None]]:
    return [(u, None) for u in cfg.users] + [(1, r) for r in cfg.open_rates]


def interleaved(variants: tuple, repeats: int) -> list[tuple[int, ServiceVariant]]:
    """A B B A …: each level visits the configurations forwards, then backwards, so a drift of the host's speed
    over the level lands on every configuration alike."""
    return [(r, v) for r in range(repeats) for v in alternating(variants, r)]


def alternating(order: tuple, r: int) -> tuple:
    """Round `r` of A B, B A, …: `order` in even rounds, reversed in odd ones."""
    return order if r % 2 == 0 else order[::-1]


def start_services(model: str, variants: tuple) -> tuple[dict, dict]:
    """Each configuration's service, started one after the other before any load (idle services cost no CPU, and
    each start-up's warm-up time is its own); one that fails is returned with its error and the sweep goes on."""
    running, failed = {}, {}
    for variant in variants:
        service = None
        try:
            service = open_target(model, variant)
            running[variant.label] = (variant, service, service.wait_ready())
        except (BenchError, subprocess.SubprocessError, OSError) as exc:
            if service is not None:
                service.stop()
            what = "service" if variant.target is None else variant.target.kind
            failed[variant.label] = BenchError(f"{what} did not start or answer: {exc}")
    return running, failed


def run_sweep(cfg: SweepConfig, out_dir: Path, saved=None) -> list:
    """Every configuration × level in `cfg.processes` rounds: each round starts every configuration's service
    afresh, runs every level with the configurations' windows interleaved (A B, then B A), and stops them. Returns
    one LoadLevel per configuration × level, its CIs across the rounds' processes (failed ones as failed records).
    `saved(levels)`, when given, gets the level each window added to, pooled so far, after every window, so a
    sweep stopped half-way (signal, crash) keeps what it measured."""
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    windows: dict = {}  # (label, users, rate) -> [Window] or the BenchError that ended it
    variants = {v.label: v for v in cfg.variants}

    def pooled(windows: dict, keys=None) -> list:
        return [pooled_or_failed(variants[label], cfg, windows[(label, users, rate)], users, rate)
                for label, users, rate in (keys or windows)]

    total = cfg.processes * len(levels(cfg)) * cfg.repeats * len(variants)
    with tqdm(total=total, desc="loadtest", unit="window", file=sys.stderr) as bar:
        for p in range(cfg.processes):
            bar.set_postfix_str(f"starting services, process {p + 1}/{cfg.processes}")
            alive = [v for v in cfg.variants if not any(isinstance(windows.get((v.label, u, r)), BenchError)
                                                         for u, r in levels(cfg))]
            running, failed = start_services(cfg.model, tuple(alive))
            for label, exc in failed.items():
                for users, rate in levels(cfg):
                    windows[(label, users, rate)] = exc
            try:
                round_windows(cfg, out_dir, p, running, windows, bar,
                              saved and (lambda key: saved(pooled(windows, [key]))))
            finally:
                for _, service, _ in running.values():
                    service.stop()
            bar.update(total * (p + 1) // cfg.processes - bar.n)  # windows of failed services count as done
    return pooled(windows)


def round_windows(cfg: SweepConfig, out_dir: Path, p: int, running: dict, windows: dict, bar,
                  after_window=None) -> None:
    """Round `p`: every level, the running configurations interleaved (A B B A across repeats and rounds)."""
    order = tuple(v for v, _, _ in running.values())
    for users, rate in levels(cfg):
        for r, variant in interleaved(alternating(order, p), cfg.repeats):
            bar.set_postfix_str(f"{variant.label}: {level_text(users, rate)}, process {p + 1}/{cfg.processes}")
            key = (variant.label, users, rate)
            if not isinstance(windows.get(key), BenchError):
                tag = f"{slug(variant.label)}_{level_tag(users, rate)}_p{p}_rep{r}"
                _, server, url = running[variant.label]
                try:
                    window = run_window(url, users, rate, cfg, out_dir, tag, server, spoken_for(cfg.model, variant))
                    windows.setdefault(key, []).append(replace(window, process=p))
                except BenchError as exc:  # recorded with its level; the other windows go on
                    windows[key] = exc
                if after_window:  # the level this window adds to, pooled anew (the run replaces it by load point)
                    after_window(key)
            bar.update(1)


def pooled_or_failed(variant: ServiceVariant, cfg: SweepConfig, windows, users: int | None = None,
                     rate: float | None = None):
    from bench.core.records import LoadLevel

    if isinstance(windows, BenchError):  # recorded at its load point, so the report and a re-run know which failed
        return LoadLevel(config=variant.setup(), status="failed", reason=str(windows), workload=cfg.workload,
                         mode="open" if rate else "closed", users=users, offered_rps=rate)
    return pooled_level(variant, cfg, windows)
