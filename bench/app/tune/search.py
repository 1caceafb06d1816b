"""The serving-config search end to end: offline candidates (bench.app.tune.offline), the best few verified as real
services beside the default service at saturation (closed loop, interleaved windows), the recommendation with its
command line, and the Pareto front.

Ranking uses the service figures where they exist — they are what a user gets; the offline figures only choose
which candidates deserve a service run. A recommendation whose QPS interval overlaps the runner-up's is a tie and
is labelled so, naming the configurations it ties with.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.app.tune.offline import Trial, candidates, for_backend, gpu_candidates, measure_trial, model_calls
from bench.core.errors import ConfigError
from bench.core.search_records import TuneCandidate, TuneRecord
from bench.core.stats import overlap
from bench.model.corpus import LOAD_TEXTS
from bench.service.config import ServiceConfig

DEFAULT_LABEL = "default service (1 process, runtime threads, b8)"
# The CPU backends `--tune-backend auto` searches, those the CPU's instruction sets plan at a service's batch
# (bench.measure.isa.left_out): runtime × precision is a dimension of the search like replicas and batch.
CONTENDERS = ("ort-int8-cpu", "ov-int8-cpu", "ov-bf16-cpu")


def contenders() -> tuple[str, ...]:
    from bench.measure.isa import CpuIsa, left_out

    isa = CpuIsa.here()
    return tuple(name for name in CONTENDERS if not left_out(name, isa, batch=8))


@dataclass(frozen=True)
class TuneConfig:
    model: str = "twin"
    backend: str = "auto"  # one backend, a comma list, or auto (the CPU contenders this CPU plans: CONTENDERS)
    batches: tuple[int, ...] = (1, 8)
    seconds: float = 4.0  # offline, per candidate (1 s windows: a CI from 4 of them)
    top: int = 1  # candidates verified as a service
    ties: int = 0  # and up to this many more whose offline interval overlaps the best's (indistinguishable offline)
    users: int = 16  # closed-loop users of the service runs, at least; raised to what saturates each (verify_users)
    duration_s: float = 8.0  # per service window
    repeats: int = 3  # fresh service processes per verified service, one window each, interleaved A B B A
    oversubscribed: bool = True  # also time the oversubscribed point offline (shown, never recommended)
    time_cap_s: float = 600.0  # offline candidates still untried when it is reached are left out, recorded
    texts: int = LOAD_TEXTS  # the offline calls are made from the texts the service's load tests send
    seed: int = 0
    exclude: tuple[tuple[str, str], ...] = ()  # (backend, why) left out of the search, e.g. below the accuracy floor
    # False: no service runs here; the offline best is recommended and the caller's sweep serves it beside the
    # default configurations across fresh processes (make bench's short tune)
    verify: bool = True

    def __post_init__(self) -> None:
        from bench.backends import resolve

        for name in self.searched:
            resolve(name)
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"batches must be >= 1 (got {self.batches})")
        for name in ("seconds", "duration_s", "time_cap_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 (got {getattr(self, name)})")
        if self.top < 1 or self.users < 1 or self.repeats < 1 or self.seconds < 2 or self.ties < 0:
            raise ConfigError("top, users and repeats must be >= 1, ties >= 0 and seconds >= 2 (a CI needs two "
                              "windows)")

    @property
    def searched(self) -> tuple[str, ...]:
        """The backends the search covers, in order."""
        names = contenders() if self.backend == "auto" else \
            tuple(n.strip() for n in self.backend.split(",") if n.strip())
        left = {name for name, _ in self.exclude}
        return tuple(n for n in names if n not in left)


def command_line(backend: str, c: TuneCandidate) -> str:
    flags = ["python", "-m", "bench.service", "--backend", backend, "--replicas", str(c.replicas),
             "--threads", str(c.threads), "--max-batch", str(c.max_batch)]
    return shlex.join(flags + ([] if c.max_batch > 1 else ["--no-batching"]))


@dataclass(frozen=True)
class OfflineSetup:
    """What the offline search measures: each backend's config, the grid (backend × replicas × threads × max
    batch), and each max batch's model calls (the same texts for every backend)."""

    configs: dict  # backend name -> BackendConfig
    grid: list  # [Trial]
    calls: dict  # max batch -> the model calls the service's batcher would make


def offline_setup(cfg: TuneConfig, cores: int) -> OfflineSetup:
    """The OfflineSetup of `cfg`'s search on `cores` cores."""
    from bench.model.corpus import length_workload
    from bench.model.tokenize import load_tokenizer, model_dir_str
    from bench.service.backend_setup import backend_config

    configs = {name: backend_config(ServiceConfig(model=cfg.model, backend=name)) for name in cfg.searched}
    grid = []
    for name, config in configs.items():
        on_gpu = config.spec.on_gpu
        grid += for_backend(gpu_candidates(cores, cfg.batches) if on_gpu else
                            candidates(cores, cfg.batches, oversubscribed=cfg.oversubscribed), name)
    first = next(iter(configs.values()))
    tokenizer = load_tokenizer(model_dir_str(first.model_dir))
    texts = length_workload(cfg.texts, seed=cfg.seed).texts
    # The calls the service would make: its padding budget and shape buckets (those of the first backend's device)
    service = {b: ServiceConfig(model=cfg.model, backend=next(iter(configs)), max_batch=b)
               for b in {c.max_batch for c in grid}}
    calls = {b: model_calls(tokenizer, texts, b, sc.effective_max_padding, sc.buckets) for b, sc in service.items()}
    return OfflineSetup(configs, grid, calls)


def run_offline(cfg: TuneConfig, cores: int) -> tuple[list[TuneCandidate], str]:
    """Every candidate offline, with a progress bar; a candidate that fails is recorded with its reason."""
    from tqdm import tqdm

    setup = offline_setup(cfg, cores)
    out, started = [], time.monotonic()
    for cand in tqdm(setup.grid, desc="tune offline", unit="config", file=sys.stderr):
        if time.monotonic() - started > cfg.time_cap_s:
            return out, "time cap"
        out.append(try_candidate(cand, setup.configs[cand.backend], setup.calls[cand.max_batch], cfg.seconds))
    return out, "done"


def try_candidate(cand: Trial, config, calls: list[dict], seconds: float) -> TuneCandidate:
    try:
        return measure_trial(cand, config, calls, seconds)
    except Exception as exc:  # noqa: BLE001  a candidate that cannot run (memory, a crash) is a finding
        return TuneCandidate(cand.replicas, cand.threads, cand.max_batch, status="failed",
                             reason=f"{type(exc).__name__}: {exc}", backend=cand.backend)


def to_verify(offline: list[TuneCandidate], top: int, ties: int = 0) -> list[TuneCandidate]:
    """The `top` best offline, then up to `ties` more that the best's interval overlaps: offline cannot tell them
    apart, and a service can (configurations tied offline have differed as services: a larger batch makes fewer
    calls through the front; measured: docs/measurements.md)."""
    ok = sorted((c for c in offline if c.status == "ok" and not c.oversubscribed), key=lambda c: -(c.items_per_s or 0))
    tied = [c for c in ok[top:] if ok and overlap(tuple(c.items_ci), tuple(ok[0].items_ci))]
    return ok[:top] + tied[:ties]


def held_texts(replicas: int, max_batch: int) -> int:
    """The most texts a service's replicas hold at once: each its current call and, when it runs in its own
    process, the next one already in its pipe (the batcher's link depth: 2 for a replica process, 1 in-process;
    one replica runs in the front's process unless told)."""
    from bench.service.replicas import ReplicaBackend

    return replicas * (ReplicaBackend.depth if replicas > 1 else 1) * max_batch


def verify_users(cfg: TuneConfig, chosen: list[TuneCandidate]) -> int:
    """Closed-loop users that saturate every service verified: at least the texts its replicas hold at once, or
    a replica waits between calls for answers to travel back and new texts to come (2×1t b8 holds 32 texts, and
    fell short of the engine's offline figure with fewer users: docs/measurements.md)."""
    default = held_texts(1, ServiceConfig.max_batch)  # the default service, verified beside them
    return max([cfg.users, default] + [held_texts(c.replicas, c.max_batch) for c in chosen])


def verify(cfg: TuneConfig, chosen: list[TuneCandidate], out_dir: Path) -> tuple[dict, int]:
    """The chosen candidates and the default service as real services at saturation, all at the same users;
    (label → LoadLevel, those users). Each service's queue holds every user's text, so the one that holds the
    fewest texts itself answers none with 503 (a refused user asks again at once: a storm of fast 503s that
    costs the front its CPU, until nearly every request is refused: docs/measurements.md)."""
    from loadtests.sweep import run_sweep

    sweep = verify_sweep(cfg, chosen)
    return {lv.config.label: lv for lv in run_sweep(sweep, out_dir)}, sweep.users[0]


def verify_sweep(cfg: TuneConfig, chosen: list[TuneCandidate]):
    """The closed-loop sweep that verifies `chosen` beside the default service (see verify)."""
    from loadtests.service_proc import ServiceVariant
    from loadtests.windows import SweepConfig

    users = verify_users(cfg, chosen)
    queue = max(ServiceConfig().max_queue, users)
    variants = [ServiceVariant.of(c.service_name, backend=c.backend or cfg.searched[0], replicas=c.replicas,
                                  threads=c.threads, max_batch=c.max_batch, batching=c.max_batch > 1, cache_size=0,
                                  max_queue=queue)
                for c in chosen]
    variants.append(ServiceVariant.of(DEFAULT_LABEL, backend=ServiceConfig().backend, cache_size=0, max_queue=queue))
    return SweepConfig(model=cfg.model, variants=tuple(variants), users=(users,), open_rates=(),
                       duration_s=cfg.duration_s, processes=cfg.repeats, repeats=1, ramp_s=1.0)


def with_service(c: TuneCandidate, levels: dict) -> TuneCandidate:
    level = levels.get(c.service_name)
    if level is None or level.status != "ok":
        return c
    return replace(c, service_label=level.config.label, service_qps=level.qps, service_qps_ci=tuple(level.qps_ci),
                   service_p95_ms=level.p95_ms)


def recommend(verified: list[TuneCandidate], default, backend: str = ServiceConfig.backend
              ) -> tuple[str | None, str | None, tuple]:
    """(label, command line, labels it ties with) of the highest service QPS among the verified candidates and the
    default service (so the tune never recommends something worse than doing nothing). A tie — its interval
    overlaps another's — is named, not hidden: the alternatives serve as well within the noise, often with less
    memory."""
    options = [(c.service_qps, tuple(c.service_qps_ci), c.label, command_line(c.backend or backend, c))
               for c in verified]
    if default is not None and default.status == "ok" and default.qps is not None:
        options.append((default.qps, tuple(default.qps_ci), DEFAULT_LABEL,
                        shlex.join(["python", "-m", "bench.service", "--backend", backend])))
    if not options:
        return None, None, ()
    best = max(options, key=lambda o: o[0])
    return best[2], best[3], tuple(o[2] for o in options if o is not best and overlap(best[1], o[1]))


def recommend_offline(offline: list[TuneCandidate], backend: str) -> tuple[str | None, str | None, tuple]:
    """(label, command line, labels it ties with) of the highest offline throughput (never an oversubscribed
    point), for a caller that serves it next to the default configurations itself; ties are overlapping offline
    intervals."""
    ok = to_verify(offline, top=len(offline))
    if not ok:
        return None, None, ()
    best = ok[0]
    return best.label, command_line(best.backend or backend, best), \
        tuple(c.label for c in ok[1:] if overlap(tuple(c.items_ci), tuple(best.items_ci)))


def pareto(cands: list[TuneCandidate]) -> tuple[str, ...]:
    """Candidates no other beats on every axis: throughput ↑ (service QPS where verified, else offline), P95 ↓,
    memory ↓."""
    ok = [c for c in cands if c.status == "ok" and c.items_per_s is not None]

    def axes(c: TuneCandidate) -> tuple:
        return (-(c.service_qps or c.items_per_s), c.p95_ms or 0.0, c.rss_mb or 0.0)

    def dominated(c: TuneCandidate) -> bool:
        return any(all(x <= y for x, y in zip(axes(o), axes(c))) and axes(o) != axes(c) for o in ok)

    return tuple(c.label for c in ok if not dominated(c))


def run_tune(cfg: TuneConfig, out_dir: Path, cores: int | None = None) -> tuple[TuneRecord, list]:
    """The whole search; returns the record and the service load levels (the run keeps them with its others)."""
    from bench.measure.host import available_cores

    started, cores = time.monotonic(), cores or len(available_cores())
    offline, stopped = run_offline(cfg, cores)
    levels, users = verify(cfg, to_verify(offline, cfg.top, cfg.ties), out_dir) if cfg.verify else ({}, 0)
    final = [with_service(c, levels) for c in offline]
    default = levels.get(DEFAULT_LABEL)
    best, command, tied = recommend([c for c in final if c.service_qps is not None], default) if cfg.verify else \
        recommend_offline(final, cfg.searched[0] if cfg.searched else ServiceConfig.backend)
    chosen = next((c.backend for c in final if c.label == best and c.backend), ServiceConfig().backend)
    record = TuneRecord(chosen, cores, tuple(final), DEFAULT_LABEL if default else None,
                        default.qps if default else None, tuple(default.qps_ci) if default else (),
                        best, command, pareto(final), tied, users, round(time.monotonic() - started, 1), stopped,
                        backends=cfg.searched, left_out=cfg.exclude, basis="service" if cfg.verify else "offline")
    return record, list(levels.values())


def tuned_variant(record: TuneRecord, variants: tuple):
    """The recommended configuration as a service variant for the sweep, so the decision gets its QPS at the SLO
    too; None when the recommendation is the default service or a configuration the sweep already runs (same
    backend, replicas, max batch and threads — a runtime default counting as every core)."""
    from loadtests.service_proc import ServiceVariant

    c = next((c for c in record.candidates if c.label == record.recommended), None)
    if c is None:
        return None
    for v in variants:
        k = v.config
        if (k.backend, k.effective_replicas, k.effective_max_batch, k.replica_threads or record.cores) == \
                (c.backend or record.backend, c.replicas, c.max_batch, c.threads):
            return None
    return ServiceVariant.of(c.service_name, backend=c.backend or record.backend, replicas=c.replicas,
                             threads=c.threads,
                             max_batch=c.max_batch, batching=c.max_batch > 1, cache_size=0)
