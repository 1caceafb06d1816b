"""QPS at the SLO, searched: the highest open-loop Poisson rate at which a service configuration meets its
tail-latency target, found by bracketing then bisecting, one Locust run per probe.

A probe (one offered rate) is cut into fixed windows of intended send time; the first is warm-up and unused.
Latency counts from each request's intended send time (no coordinated omission). A rate passes only when:
- it is stable: each of the last 3 windows is within 10 % of their mean on throughput and on latency
  (perf_analyzer's rule, with its default latency, the mean). Throughput is taken per window as completions /
  intended sends ("keep-up"): Poisson arrivals make raw window counts vary by 1/√n, ±11 % at 80 requests, which
  would fail the rule by chance alone. Latency may also move by up to a tenth of the SLO: near its capacity a
  queue's mean latency over windows of a few seconds varies by more than 10 % however steady the load (an M/D/1
  simulation at ρ = 0.8 with 2 s windows: 2 % of probes pass the plain rule), and a change much smaller than
  the SLO cannot move a verdict about it;
- no request failed or was answered wrongly, the client kept its schedule, and the achieved rate is within
  `rate_tolerance` of the rate the schedule actually offered;
- the tail passes MLPerf LoadGen's early-stopping test: with t of n requests over the SLO, the chance of seeing
  t or fewer if the true share over were 1 − percentile, P(Binomial(n, 1 − p) ≤ t), is at most 1 − confidence.
  n is the same at every rate (JUDGED requests spread evenly over the counted windows): with n growing with the
  rate, the share over the SLO a probe may show grows too (6 of 300 is 2.0 %, but 3.4 % of 1,000 passes), and a
  faster configuration would face a looser test.
An unstable probe is run again (perf_analyzer measures until stable), up to `trials` runs, inside the time cap.
The rate found is run once more at the end; if it fails then, the search reports the next lower rate that passed.
A search that never saw a failing rate reports a lower bound ("≥ X"), not an interval.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from bench.core.errors import BenchError
from bench.core.records import ServiceSetup
from bench.core.search_records import SearchProbe, SloSearch
from loadtests.protocols import Spoken
from loadtests.samples import Samples, read_samples, sample_paths
from loadtests.windows import MIN_COUNTED, SearchConfig

UNSTABLE = "unstable: the last 3 windows differ by more than 10 % in keep-up or latency"
JUDGED = MIN_COUNTED  # requests the tail test judges in every probe, whatever the rate
DEFAULT_START_RPS = 2.0  # where no closed-loop level hints at the capacity


def tail_bound(over: int, n: int, percentile: float) -> float:
    """P(Binomial(n, 1 − p) ≤ over): how likely so few requests over the SLO would be if the true share over
    were exactly the allowed 1 − p (LoadGen: BetaRegularized(p, n − over, over + 1))."""
    from scipy.stats import binom

    return float(binom.cdf(over, n, 1.0 - percentile / 100.0)) if n else 1.0


def within(values: list[float], tolerance: float, floor: float = 0.0) -> bool:
    """Each value within `tolerance` of their mean (or within `floor`, in the values' unit, where wider)."""
    mean = sum(values) / len(values)
    return all(abs(v - mean) <= max(tolerance * abs(mean), floor) for v in values)


def window_figures(samples: Samples, window_s: float, windows: int) -> tuple[list, list, list, np.ndarray]:
    """Per counted window: keep-up (completions / intended sends), mean latency, completion counts; and the
    mask of counted requests (intended after the warm-up window)."""
    intended, latency, done = samples.intended_s, samples.latency_from_intended_ms, samples.completed_s
    t0 = float(np.nanmin(intended))
    edges = t0 + window_s * np.arange(windows + 1)
    keep, means, counts = [], [], []
    for lo, hi in zip(edges[1:-1], edges[2:]):
        sent = (intended >= lo) & (intended < hi)
        finished = int(((done >= lo) & (done < hi)).sum())
        keep.append(finished / max(1, int(sent.sum())))
        means.append(float(latency[sent].mean()) if sent.any() else math.inf)
        counts.append(finished)
    return keep, means, counts, (intended >= edges[1]) & (intended < edges[-1])


def judge(samples: Samples, rate: float, cfg: SearchConfig, client: dict) -> SearchProbe:
    """The verdict on one probe's samples (see the module's rules), with the figures behind it."""
    from bench.core.stats import percentile, window_rate_ci

    window_s = cfg.window_for(rate)
    keep, means, counts, counted = window_figures(samples, window_s, cfg.windows)
    latency, ok = samples.latency_from_intended_ms[counted], samples.ok[counted]
    judged = evenly(int(counted.sum()), JUDGED)
    n, over = judged.size, int(((latency[judged] > cfg.slo_ms) | ~ok[judged]).sum())
    achieved, lo, hi = window_rate_ci(counts, window_s)
    # perf_analyzer's 10 % assumes hundreds of requests a window; with n, one request finishing just past a
    # window's edge moves its keep-up by 1/n (a 2 s window at 3 req/s holds ~6), so allow two of them.
    keep_floor = 2.0 / max(1, min(counts[-3:]))
    stable = within(keep[-3:], cfg.stability, keep_floor) and within(means[-3:], cfg.stability,
                                                                     cfg.stability * cfg.slo_ms)
    probe = SearchProbe(rate, False, "", n, over, int((~ok).sum()), int(client.get("invalid_answers") or 0),
                        achieved, (lo, hi), percentile(latency, 95) if n else None,
                        percentile(latency, 99) if n else None, stable, tuple(keep), tuple(means),
                        tail_bound(over, n, cfg.percentile))
    verdict = failed_rule(probe, cfg, client, offered=n / (window_s * (cfg.windows - 1)))
    return replace(probe, passed=verdict is None, verdict=verdict or "meets the SLO")


def evenly(n: int, k: int) -> np.ndarray:
    """Indices of k of n requests spread evenly (all n when there are fewer): the same tail test at every rate."""
    return np.arange(n) if n <= k else np.round(np.linspace(0, n - 1, k)).astype(int)


def failed_rule(p: SearchProbe, cfg: SearchConfig, client: dict, offered: float) -> str | None:
    """The first rule the probe breaks, in words; None when it passes."""
    late = (client.get("open_loop") or {}).get("late_send_percent") or 0.0
    if not p.requests:
        return "no request in the counted windows"
    if p.failures or p.invalid_answers:
        return f"{p.failures} failed, {p.invalid_answers} wrong answers"
    if late > 5.0:
        return f"client sent {late:.0f} % of requests late: the load generator, not the service, is the limit"
    if offered and p.achieved_rps < (1 - cfg.rate_tolerance) * offered:  # overload: no use measuring again
        return f"achieved {p.achieved_rps:.3g} of {offered:.3g} req/s offered"
    if not p.stable:
        return UNSTABLE
    if p.bound > 1 - cfg.confidence:
        return f"tail bound: {p.over_slo} of {p.requests} over {cfg.slo_ms:g} ms (P95 {p.p95_ms:.3g} ms)"
    return None


def locust_probe(url: str, cfg: SearchConfig, out_dir: Path, tag: str, workload: str = "corpus",
                 seed: int = 0, spoken: Spoken | None = None, model: str = "twin") -> Callable[[float], SearchProbe]:
    """A probe function that runs Locust open loop against `url` (one run per call), spoken to with `spoken`
    (default: our protocol for `model`'s task)."""
    from loadtests.windows import SweepConfig, run_locust

    calls = iter(range(10_000))

    def probe(rate: float) -> SearchProbe:
        duration = cfg.window_for(rate) * cfg.windows
        sweep = SweepConfig(model=model, duration_s=duration, ramp_s=0.0, workload=workload, seed=seed, repeats=1)
        name = f"{tag}_r{rate:.4g}_p{next(calls):02d}"
        result = run_locust(url, 1, sweep, out_dir, name, rate, spoken)
        return judge(read_samples(sample_paths(out_dir / f"{name}_client.json")), rate, cfg, result["client"])

    return probe


def measured(probe: Callable[[float], SearchProbe], cfg: SearchConfig, rate: float, path: list,
             room: Callable[[float], bool] = lambda _r: True) -> SearchProbe:
    """Run a rate, again while unstable and nothing else failed (up to cfg.trials runs, each inside the time cap);
    every run joins the search path."""
    result = probe(rate)
    path.append(result)
    for _ in range(cfg.trials - 1):
        if result.verdict != UNSTABLE or not room(rate):
            break
        result = probe(rate)
        path.append(result)
    return result


def search(probe: Callable[[float], SearchProbe], cfg: SearchConfig, setup: ServiceSetup,
           clock: Callable[[], float] = time.monotonic, workload: str = "corpus") -> SloSearch:
    """Bracket (× growth up from the start rate while passing, by way of the ceiling where one is known; ÷ growth
    down while failing), then bisect geometrically until the bracket is within `precision`, the time cap or the
    probe cap."""
    start, path = clock(), []
    low = high = None
    rate = cfg.start_rps or DEFAULT_START_RPS

    def room(next_rate: float) -> bool:
        return clock() - start + cfg.probe_seconds(next_rate) <= cfg.time_cap_s and len(path) < cfg.max_probes

    stopped = "converged"
    while rate is not None:
        if not room(rate):
            stopped = "time cap" if len(path) < cfg.max_probes else "probe cap"
            break
        passed = measured(probe, cfg, rate, path, room).passed
        low, high = (rate, high) if passed else (low, rate)
        rate = next_rate(low, high, cfg)
        if rate is None and low is None:
            stopped = "no passing rate"
    verified = False
    if low is not None and room(low):  # one noisy pass must not fix the result: the found rate again
        verified = measured(probe, cfg, low, path, room).passed
        if not verified:
            high = low
            low = max((p.offered_rps for p in path if p.passed and p.offered_rps < high), default=None)
    return replace(result(setup, cfg, path, low, high, stopped, clock() - start, workload), verified=verified)


def next_rate(low: float | None, high: float | None, cfg: SearchConfig) -> float | None:
    """The next rate to try, or None when the search is done."""
    if high is None:
        up = low * cfg.growth
        ceiling = cfg.ceiling_rps
        return ceiling if ceiling and low * (1 + cfg.precision) < ceiling < up else up
    if low is None:
        below = high / cfg.growth
        return below if below >= cfg.min_rps else None
    return math.sqrt(low * high) if high / low > 1 + cfg.precision else None


def result(setup: ServiceSetup, cfg: SearchConfig, path: list, low: float | None, high: float | None,
           stopped: str, elapsed: float, workload: str) -> SloSearch:
    base = SloSearch(setup, cfg.slo_ms, cfg.percentile, cfg.confidence, probes=tuple(path), stopped=stopped,
                     elapsed_s=elapsed, window_s=cfg.window_s, workload=workload, first_failing_rps=high)
    found = next((p for p in path if p.passed and p.offered_rps == low), None)
    if found is None:
        tried = min((p.offered_rps for p in path), default=None)
        why = f"no rate met P{cfg.percentile:g} ≤ {cfg.slo_ms:g} ms" + \
            (f" (lowest tried {tried:.3g} req/s)" if tried is not None else " (no probe ran within the time cap)")
        return replace(base, status="none", reason=why)
    lo, hi = found.achieved_ci
    if high is None:  # nothing failed before the search stopped: the capacity is at least this, not in [lo–hi]
        return replace(base, rate_rps=low, qps=found.achieved_rps, qps_ci=(lo,), requests=found.requests,
                       bounded=False)
    # The search resolves the capacity only to [last passing, first failing): the CI reaches up to that.
    return replace(base, rate_rps=low, qps=found.achieved_rps, qps_ci=(lo, max(hi, high)), requests=found.requests)


def search_service(url: str, setup: ServiceSetup, cfg: SearchConfig, out_dir: Path, workload: str = "corpus",
                   seed: int = 0, spoken: Spoken | None = None, model: str = "twin") -> SloSearch:
    """Search one running server; a Locust run that breaks makes a failed search with the reason."""
    from loadtests.windows import slug

    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        probe = locust_probe(url, cfg, out_dir, f"search_{slug(setup.label)}", workload, seed, spoken, model)
        return search(probe, cfg, setup, workload=workload)
    except BenchError as exc:
        return SloSearch(setup, cfg.slo_ms, cfg.percentile, cfg.confidence, status="failed", reason=str(exc),
                         workload=workload)


def start_hints(levels) -> dict[str, tuple[float, float]]:
    """label -> (start rate, ceiling): 0.6 × and 1 × the configuration's best closed-loop QPS (its capacity at the
    SLO lies below its saturation throughput, usually not far below)."""
    best: dict = {}
    for lv in levels:
        if lv.status == "ok" and lv.mode == "closed" and lv.qps:
            best[lv.config.label] = max(best.get(lv.config.label, 0.0), lv.qps)
    return {label: (0.6 * qps, qps) for label, qps in best.items()}


SERVICE_START_S = 5.0  # a service process's start and warm-up, inside a search's share of a run budget


def bracket_seconds(sweep, hints: dict[str, tuple[float, float]]) -> float:
    """The least time worth giving each search: two probes at its start rate (a pass and a fail bracket the
    capacity) and its service's start: longer on a slow host, whose probes stretch their windows to count enough
    requests (docs/measurements.md)."""
    cfg = sweep.slo_search
    starts = [cfg.start_rps or hints.get(v.label, (DEFAULT_START_RPS, None))[0] for v in sweep.variants]
    return SERVICE_START_S + 2 * max(cfg.probe_seconds(r) for r in starts)


def skipped_searches(sweep, reason: str) -> list[SloSearch]:
    """A record per configuration of a search that did not run, with the reason (status failed: no figure)."""
    cfg = sweep.slo_search
    return [SloSearch(v.setup(), cfg.slo_ms, cfg.percentile, cfg.confidence, status="failed", reason=reason,
                      stopped="not run", workload=sweep.workload) for v in sweep.variants]


def run_searches(sweep, out_dir: Path, hints: dict[str, tuple[float, float]],
                 deadline: float | None = None) -> list[SloSearch]:
    """One search per service configuration of `sweep` (a SweepConfig with `slo_search` set), each against
    its own freshly started service; a service that does not start is a failed search with its reason. With a
    `deadline` (time.monotonic), each search, its service's start included, gets an equal share of what is left
    when it begins (time one search does not use goes to the next)."""
    from loadtests.service_proc import open_target
    from loadtests.windows import spoken_for

    out = []
    for i, variant in enumerate(sweep.variants):
        began, cfg = time.monotonic(), sweep.slo_search
        start, ceiling = hints.get(variant.label, (None, None))
        cfg = cfg if cfg.start_rps else replace(cfg, start_rps=start, ceiling_rps=cfg.ceiling_rps or ceiling)
        left = len(sweep.variants) - i
        share = cfg.time_cap_s if deadline is None else min(cfg.time_cap_s, (deadline - began) / left)
        service = None
        try:
            service = open_target(sweep.model, variant)
            url = service.wait_ready()
            cfg = replace(cfg, time_cap_s=max(1.0, share - (time.monotonic() - began)))
            out.append(search_service(url, variant.setup(), cfg, out_dir, sweep.workload, sweep.seed,
                                      spoken_for(sweep.model, variant), sweep.model))
        except (BenchError, OSError) as exc:
            out.append(SloSearch(variant.setup(), cfg.slo_ms, cfg.percentile, cfg.confidence, status="failed",
                                 reason=str(exc), workload=sweep.workload))
        finally:
            if service is not None:
                service.stop()
    return out
