"""Records of a search for the QPS at the SLO (loadtests.slo_search): typed and frozen like every stored
record (bench.core.records, which holds the service configuration they refer to); stored in results.json as
`RunResult.slo_searches`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.core.records import ServiceSetup


@dataclass(frozen=True)
class SearchProbe:
    """One step of a search for the QPS at the SLO: an open-loop run at one rate (first window: warm-up, unused)."""

    offered_rps: float
    passed: bool
    verdict: str  # why it failed (or "meets the SLO"), in words
    requests: int = 0  # judged by the tail test: a fixed count, spread evenly over the counted windows
    over_slo: int = 0  # of them, slower than the SLO or failed
    failures: int = 0
    invalid_answers: int = 0
    achieved_rps: float | None = None  # achieved_ci: a t interval across the windows
    achieved_ci: tuple[float, ...] = ()
    p95_ms: float | None = None
    p99_ms: float | None = None
    stable: bool = False
    window_keep_up: tuple[float, ...] = ()  # per window: completions / intended sends
    window_mean_ms: tuple[float, ...] = ()  # per window: mean latency from the intended send time
    bound: float | None = None  # P(≤ over_slo requests over | true share over = 1 − percentile)


@dataclass(frozen=True)
class SloSearch:
    """The highest open-loop rate at which a service configuration meets its tail SLO; probes: the search path."""

    config: ServiceSetup
    slo_ms: float
    percentile: float = 95.0
    confidence: float = 0.99
    status: str = "ok"  # ok | none (no rate met the SLO) | failed (the search could not run), reason: why
    reason: str | None = None
    rate_rps: float | None = None  # the highest offered rate that passed; qps: completions per second there
    qps: float | None = None
    qps_ci: tuple[float, ...] = ()  # across its windows, widened up to the lowest failing rate
    first_failing_rps: float | None = None
    bounded: bool = True  # False: no rate failed before the search stopped, so qps is a lower bound ("≥ qps")
    verified: bool = False  # the found rate passed again when re-run at the end
    requests: int = 0  # behind the found rate
    probes: tuple[SearchProbe, ...] = ()
    stopped: str = ""  # converged | time cap | probe cap | no passing rate
    elapsed_s: float = 0.0
    window_s: float = 2.0
    workload: str = "corpus"


@dataclass(frozen=True)
class TuneCandidate:
    """One serving configuration the tune tried: R replicas × T threads × max batch B, offline (R engine processes
    pinned like the service's, no HTTP) and, for the few best, as a real service (`service_label`'s load level)."""

    replicas: int
    threads: int
    max_batch: int
    oversubscribed: bool = False
    cores: tuple[Any, ...] = ()  # per replica: its cores, or "any" when not pinned
    status: str = "ok"  # ok | failed (reason says why)
    reason: str | None = None
    items_per_s: float | None = None  # offline throughput; items_ci: t interval across its 1 s windows
    items_ci: tuple[float, ...] = ()
    p95_ms: float | None = None  # offline: per model call
    rss_mb: float | None = None  # all replicas together
    service_label: str | None = None  # set when verified as a service
    service_qps: float | None = None
    service_qps_ci: tuple[float, ...] = ()
    service_p95_ms: float | None = None
    backend: str = ""  # the runtime × precision it ran (records before the tune searched backends: the record's)

    @property
    def label(self) -> str:
        shape = f"{self.replicas}×{self.threads}t b{self.max_batch}"
        return f"{self.backend} {shape}" if self.backend else shape

    @property
    def service_name(self) -> str:
        """The name its service runs under in a run's load tests (the tune's verify and the sweep alike)."""
        return f"tuned {self.label}"


@dataclass(frozen=True)
class TuneRecord:
    """`python -m bench tune`: the candidates, which were verified as a service, the recommendation and why."""

    backend: str
    cores: int
    candidates: tuple[TuneCandidate, ...] = ()
    default_label: str | None = None  # the default service's load level, verified beside the candidates
    default_qps: float | None = None
    default_qps_ci: tuple[float, ...] = ()
    recommended: str | None = None  # a candidate label; command: how to start the service that way
    command: str | None = None
    pareto: tuple[str, ...] = ()  # candidate labels on the front of service QPS ↑, P95 ↓, memory ↓
    tied_with: tuple[str, ...] = ()  # configurations whose service QPS interval overlaps the recommendation's
    users: int = 0
    elapsed_s: float = 0.0
    stopped: str = ""  # done | time cap
    backends: tuple[str, ...] = ()  # every backend searched (older records: `backend` alone); `backend` is the
    # recommended configuration's
    left_out: tuple[tuple[str, str], ...] = ()  # (backend, why) not searched, e.g. below the accuracy floor
    basis: str = "service"  # what the recommendation ranks: service QPS (verified here) or offline throughput
    # (make bench: the recommended configuration is then load-tested in the run's sweep)
