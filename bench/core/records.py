"""Every stored record of a run, as frozen dataclasses: engine cells (one `ProcessRun` per fresh worker) and
load-test levels. Readers use attributes, never string keys; `bench.core.results` reads and writes them.

Raw samples are the truth. Statistics are derived on read (`CellResult.stats`), with confidence intervals from a
hierarchical bootstrap over the worker processes: one process's samples say nothing about how much fresh
processes differ on a shared host (docs/measurements.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any, TypeVar

from bench.core.errors import ConfigError

T = TypeVar("T")
N = TypeVar("N", int, float)

STATUSES = ("ok", "skipped", "failed")
# corpus: review texts padded to each batch's longest; bucket: every text at one length; service: review texts as
# the service's batcher would send them at max batch `batch` (length groups, shape buckets: bench.model.buckets), one
# sample = every call of one batch, so engine and service are compared on equal shapes
WORKLOADS = ("corpus", "bucket", "service")


@dataclass(frozen=True)
class CellSpec:
    """One point of the grid: backend × batch × workload (corpus text or fixed-length bucket) × threads."""

    backend: str
    batch: int = 1
    workload: str = "corpus"  # "corpus" (≈80-char reviews), "bucket" (fixed length) or "service" (see below)
    seq_len: int | None = None  # tokens, for bucket workloads
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"batch must be >= 1 (got {self.batch})")
        if self.workload not in WORKLOADS:
            raise ConfigError(f"workload must be one of {', '.join(WORKLOADS)} (got {self.workload!r})")
        if self.workload == "bucket" and not (self.seq_len and 3 <= self.seq_len <= 512):
            raise ConfigError(f"sequence length must be within 3..512 tokens (got {self.seq_len})")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (got {self.threads})")

    @property
    def key(self) -> str:
        shape = f"L{self.seq_len}" if self.workload == "bucket" else self.workload
        return f"{self.backend}|b{self.batch}|{shape}|t{self.threads or 'all'}"


@dataclass(frozen=True)
class LoadPhases:
    """Seconds of each load phase of one worker: framework imports, model/session creation, first inference."""

    imports_s: float | None = None
    create_s: float | None = None
    first_infer_s: float | None = None
    engine_build_s: float | None = None  # TensorRT engine build (0.0: cache reused), inside create_s or first_infer_s

    @property
    def total_s(self) -> float | None:
        parts = [p for p in (self.imports_s, self.create_s, self.first_infer_s) if p is not None]
        return sum(parts) if parts else None


@dataclass(frozen=True)
class Resources:
    """The resource sampler's summary of one worker. CPU % is over the worker's whole life (load included);
    the timed window's CPU % is `WorkerMeta.worker_cpu_percent_window`."""

    peak_rss_bytes: int | None = None
    peak_uss_bytes: int | None = None
    mean_cpu_percent: float | None = None
    max_cpu_percent: float | None = None
    n_samples: int = 0
    period_s: float | None = None
    target_exited: bool = False
    sampler_overhead_percent: float | None = None
    peak_vram_bytes: int | None = None  # device-wide
    peak_proc_vram_bytes: int | None = None  # this process, where NVML can match it
    mean_gpu_util_percent: float | None = None
    mean_power_w: float | None = None  # GPU board power from NVML samples
    vram_scope: str | None = None  # "process" (NVML matched the worker's PID) or "device" (whole board: containers)


@dataclass(frozen=True)
class Energy:
    """Energy over the timed window: measured (RAPL, NVML) or estimated, and always saying which."""

    energy_j: float | None = None
    source: str | None = None  # "rapl", "nvml" or "estimate"
    estimated: bool = True
    assumptions: str | None = None
    mean_power_w: float | None = None
    covers: str | None = None  # what energy_j is: "gpu" (board, idle included, host CPU excluded) or "cpu"
    host_cpu_energy_j: float | None = None  # GPU cells: the host CPU's share beside the board's energy_j
    host_cpu_source: str | None = None  # "rapl" or "estimate"


@dataclass(frozen=True)
class WorkerMeta:
    worker_cpu_percent_window: float | None = None  # the worker's CPU time over the timed window
    timer: str | None = None
    process_start_to_ready_s: float | None = None
    torch_max_memory_allocated_bytes: int | None = None  # CUDA cells of the torch backend
    providers: tuple[str, ...] = ()  # ORT: session.get_providers() after creation (the providers actually used)
    tf32: str | None = None  # GPU float32 matmuls: "off", "on" or "trt-default" (TensorRT's builder decides)
    gpu_device: str | None = None  # the CUDA device and the NVML board matched to it
    gpu_libraries: dict[str, str] = field(default_factory=dict)  # GPU cells: versions of the CUDA runtime, cuDNN
    # and TensorRT the worker loaded, as the libraries report them (bench.measure.gpu_libs)
    # OpenVINO / torch BF16 cells: the runtime and the settings the compiled model reports it ran with (threads,
    # performance hint, streams, inference precision), so a cell says which precision really ran
    openvino: str | None = None
    openvino_settings: dict[str, str] = field(default_factory=dict)
    torch_dtype: str | None = None


@dataclass(frozen=True)
class ProcessRun:
    """What one fresh worker process measured for a cell."""

    latencies_s: tuple[float, ...] = ()  # every timed batch, in order
    warmup_s: tuple[float, ...] = ()
    window_s: float = 0.0  # wall time of the timed loop
    stop_reason: str | None = None
    load: LoadPhases = field(default_factory=LoadPhases)
    resources: Resources = field(default_factory=Resources)
    energy: Energy = field(default_factory=Energy)
    meta: WorkerMeta = field(default_factory=WorkerMeta)


@dataclass(frozen=True)
class CellResult:
    """Every worker's measurement of one cell, or why it was skipped / failed."""

    spec: CellSpec
    status: str
    reason: str | None = None
    runs: tuple[ProcessRun, ...] = ()  # one per fresh worker process, in the order they ran
    items_per_batch: int = 0
    tokens_per_item: float = 0.0
    flops_per_batch: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ConfigError(f"cell status must be one of {STATUSES} (got {self.status!r})")

    def with_run(self, other: "CellResult") -> "CellResult":
        """This cell with another worker's measurement added (a failed or skipped one replaces it)."""
        if other.status != "ok" or self.status != "ok":
            return other if self.status == "ok" else self
        return replace(self, runs=self.runs + other.runs)

    @property
    def latencies_s(self) -> tuple[float, ...]:
        """All processes' timed samples, pooled."""
        return tuple(x for r in self.runs for x in r.latencies_s)

    @property
    def window_s(self) -> float:
        return sum(r.window_s for r in self.runs)

    @property
    def stop_reason(self) -> str | None:
        reasons = sorted({r.stop_reason for r in self.runs if r.stop_reason})
        return ", ".join(reasons) or None

    @property
    def load(self) -> LoadPhases:
        """Median of each load phase over the processes; TensorRT's engine build the longest (others reuse it)."""
        ls = [r.load for r in self.runs]
        return LoadPhases(_median([x.imports_s for x in ls]), _median([x.create_s for x in ls]),
                          _median([x.first_infer_s for x in ls]), _max([x.engine_build_s for x in ls]))

    @property
    def resources(self) -> Resources:
        """Peaks are the highest process's, means the mean over processes."""
        rs = [r.resources for r in self.runs]
        peak: Callable[[str], Any] = lambda f: _max([getattr(x, f) for x in rs])  # noqa: E731
        mean: Callable[[str], float | None] = lambda f: mean_of([getattr(x, f) for x in rs])  # noqa: E731
        return Resources(peak("peak_rss_bytes"), peak("peak_uss_bytes"), mean("mean_cpu_percent"),
                         peak("max_cpu_percent"), sum(x.n_samples for x in rs), rs[0].period_s if rs else None,
                         all(x.target_exited for x in rs), peak("sampler_overhead_percent"), peak("peak_vram_bytes"),
                         peak("peak_proc_vram_bytes"), mean("mean_gpu_util_percent"), mean("mean_power_w"),
                         min(_clean([x.vram_scope for x in rs]), default=None))  # any "device" makes it "device"

    @property
    def energy(self) -> Energy:
        """Energy summed over every process's timed window (so per item = energy / items measured)."""
        es = [r.energy for r in self.runs]
        joules = _clean([e.energy_j for e in es])
        if not es or len(joules) < len(es):
            return Energy(source=es[0].source if es else None)
        total, host = sum(joules), _clean([e.host_cpu_energy_j for e in es])
        return replace(es[0], energy_j=total, estimated=any(e.estimated for e in es),
                       mean_power_w=total / self.window_s if self.window_s > 0 else None,
                       host_cpu_energy_j=sum(host) if len(host) == len(es) else None)

    @property
    def meta(self) -> WorkerMeta:
        ms = [r.meta for r in self.runs] or [WorkerMeta()]
        return replace(ms[0], worker_cpu_percent_window=mean_of([m.worker_cpu_percent_window for m in ms]),
                       process_start_to_ready_s=_median([m.process_start_to_ready_s for m in ms]),
                       torch_max_memory_allocated_bytes=_max([m.torch_max_memory_allocated_bytes for m in ms]))

    @property
    def items_measured(self) -> int:
        return len(self.latencies_s) * self.items_per_batch

    @property
    def throughput(self) -> float | None:
        """Items per second over the timed windows of every process: measured, not derived from latency."""
        if self.status != "ok" or self.window_s <= 0:
            return None
        return self.items_measured / self.window_s

    @property
    def energy_per_item_j(self) -> float | None:
        energy, n = self.energy.energy_j, self.items_measured
        return energy / n if energy is not None and n else None

    @property
    def achieved_flops(self) -> float | None:
        """Model FLOPs per second at the mean batch latency (for the roofline)."""
        if not self.flops_per_batch or not self.stats:
            return None
        return self.flops_per_batch / float(self.stats["mean"])

    @cached_property
    def stats(self) -> dict[str, Any]:
        """Pooled mean/percentiles, 95 % CIs from a hierarchical bootstrap (processes, then samples), and each
        process's own median."""
        if self.status != "ok" or not self.latencies_s:
            return {}
        return cell_stats([r.latencies_s for r in self.runs if r.latencies_s])


@dataclass(frozen=True)
class ServiceSetup:
    """The service configuration a load-test level ran against (the fields of ServiceConfig that shape load)."""

    label: str
    backend: str = "ort-int8-cpu"
    batching: bool = True
    max_batch: int = 8
    max_wait_ms: float = 0.0
    cache_size: int = 0
    threads: int | None = None  # per replica
    replicas: int = 1
    model_process: bool = False  # a single replica in its own process (ServiceConfig.model_process)
    # The server load went to (loadtests/targets.py): structbench (ours, started here), kserve or litserve (peers
    # started here), url (somebody else's); the protocol spoken to it; a URL target's address without credentials
    target: str = "structbench"
    protocol: str = "structbench"
    url: str | None = None


@dataclass(frozen=True)
class CacheFigures:
    hits: float = 0.0
    misses: float = 0.0
    hit_rate: float | None = None


@dataclass(frozen=True)
class BucketFigures:
    """One shape bucket's calls in a level: their in-service model time against the engine's at that shape."""

    shape: str  # "rows x length", as /metrics labels it
    calls: float = 0.0
    model_s: float = 0.0
    engine_s: float | None = None  # the calls at the engine's warm time at this shape (None: not warmed)
    new_shapes: float = 0.0

    @property
    def efficiency(self) -> float | None:
        return self.model_s / self.engine_s if self.engine_s else None


@dataclass(frozen=True)
class ShapeFigures:
    """What /metrics said of a level's model calls (bench.model.buckets): their time in the service against the
    engine's at the same shapes (each call's shape timed alone at warm-up, on the serving thread), shapes met for
    the first time while serving, and the share of pad tokens."""

    calls: float = 0.0
    model_s: float = 0.0  # in-service model time of those calls
    engine_s: float | None = None  # the same calls at the engine's warm time per shape (None: a shape not warmed)
    new_shapes: float = 0.0
    padding_share: float | None = None
    by_bucket: tuple[BucketFigures, ...] = ()  # the same per shape bucket, most calls first

    @property
    def efficiency(self) -> float | None:
        """In-service model time / engine time at the same shapes: 1.0 = the service costs the engine nothing."""
        return self.model_s / self.engine_s if self.engine_s else None


@dataclass(frozen=True)
class LoadLevel:
    """One load-test level: a service configuration under closed-loop users or an open-loop offered rate,
    pooled over its interleaved repeats.

    Latency percentiles come from every request's own latency (open loop: from its intended send time), with
    bootstrap CIs; QPS is completed requests per fixed window (2 s), with a CI across the windows of every
    repeat. Locust's rounded CSV figures are kept beside them as a cross-check. A CI is () where it could not
    be computed (e.g. a v1 file); readers show that as "no CI"."""

    config: ServiceSetup
    mode: str = "closed"  # "closed" (users) or "open" (Poisson arrivals at offered_rps)
    status: str = "ok"
    reason: str | None = None
    users: int | None = None
    offered_rps: float | None = None
    duration_s: float = 0.0
    ramp_s: float = 0.0
    workers: int = 1
    workload: str = "corpus"
    repeats: int = 1  # interleaved windows pooled into this record (A B B A per level across configurations)
    window: int | None = None  # position in the service process's plan (checks that keep windows apart)
    processes: int = 1  # fresh service processes the windows came from; CIs are across them when >= 2
    process_qps: tuple[float, ...] = ()  # each process's QPS, P50 and P95 (compare tests across these)
    process_p50_ms: tuple[float, ...] = ()
    process_p95_ms: tuple[float, ...] = ()
    requests: int = 0
    failures: int = 0
    qps: float | None = None
    qps_ci: tuple[float, ...] = ()
    mean_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p50_ci_ms: tuple[float, ...] = ()
    p95_ci_ms: tuple[float, ...] = ()
    p99_ci_ms: tuple[float, ...] = ()
    achieved_rps: float | None = None
    late_send_percent: float | None = None
    invalid_answers: int | None = None
    failure_causes: dict[str, int] = field(default_factory=dict)  # Locust's failures by message (HTTP 503, …)
    server_timing_ms: dict[str, float] = field(default_factory=dict)
    mean_batch_size: float | None = None
    cache: CacheFigures | None = None
    shapes: ShapeFigures | None = None
    client_cpu_percent: float | None = None  # Locust's processes in the timed window, % of one core (None: unmeasured)
    client_max_process_cpu_percent: float | None = None  # the busiest of them: past 85 % it is the bottleneck
    client_saturated: bool = False
    pinning: str = ""  # where the service and Locust ran: apart on cores of their own, or shared (small host)
    service_cpu_ms_per_text: float | None = None  # the whole service's CPU (replicas included) per text computed
    front_cpu_ms_per_request: float | None = None  # the HTTP front processes' CPU per request they answered
    energy_per_text_j: float | None = None  # estimated from that CPU time and a nominal TDP (energy_note says how)
    energy_note: str = ""
    locust_csv: dict[str, float | None] = field(default_factory=dict)  # Locust's own (rounded) figures
    source: str = ""
    note: str | None = None

    @property
    def level_key(self) -> tuple[Any, ...]:
        """Levels with equal keys measure the same thing (repeats of one level)."""
        return (self.config.label, self.mode, self.users, self.offered_rps, self.workers, self.workload)


def known(cls: type[Any], data: dict[str, Any] | None) -> dict[str, Any]:
    """The keys of `data` that the record `cls` has as fields (measurement summaries and version 1 files may
    carry more than a record keeps)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in (data or {}).items() if k in names}


def cell_stats(groups: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Statistics of a cell from its processes' samples: pooled point estimates, 95 % CIs, each process's
    median and the spread of those medians (max / min − 1)."""
    from bench.core.stats import summarize

    out = summarize([x for g in groups for x in g])
    per_process = [summarize(g) for g in groups]  # once: every statistic's CI uses the processes' own values
    for stat in ("mean", "p50", "p95", "p99"):
        out[f"{stat}_ci95"] = list(process_ci(groups, stat, out, per_process))
    medians = [p["p50"] for p in per_process]
    out.update(processes=len(groups), process_p50s=medians, process_spread=max(medians) / min(medians) - 1.0)
    return out


def process_ci(groups: Sequence[Sequence[float]], stat: str, pooled: dict[str, Any],
               per_process: list[dict[str, Any]]) -> tuple[float, float]:
    """The wider of the hierarchical bootstrap CI (processes, then samples) and a Student-t interval over the
    processes' own values of `stat`. With the 2–5 processes a run affords, resampling processes sees only those
    few and its interval comes out too narrow; t(k−1) pays for estimating the spread from k values (k = 3:
    ×2.2 wider than a normal interval)."""
    import math

    from scipy import stats as sps

    from bench.core.stats import hierarchical_bootstrap_ci

    lo, hi = hierarchical_bootstrap_ci(groups, stat, n_boot=1000, seed=0)
    k = len(groups)
    if k < 2:
        return lo, hi
    values = [p[stat] for p in per_process]
    mean = sum(values) / k
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    half = float(sps.t.ppf(0.975, k - 1)) * sd / math.sqrt(k)
    # No statistic of these samples can leave their range: clip there (a wide t interval can reach below 0 ms).
    point = pooled[stat]
    return max(pooled["min"], min(lo, point - half)), min(pooled["max"], max(hi, point + half))


def _clean(values: Iterable[T | None]) -> list[T]:
    return [v for v in values if v is not None]


def _max(values: Iterable[N | None]) -> N | None:
    return max(_clean(values), default=None)


def mean_of(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    vs = _clean(values)
    return sum(vs) / len(vs) if vs else None


def _median(values: Iterable[float | None]) -> float | None:
    vs = sorted(_clean(values))
    if not vs:
        return None
    mid = len(vs) // 2
    return vs[mid] if len(vs) % 2 else (vs[mid - 1] + vs[mid]) / 2
