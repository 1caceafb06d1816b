"""The search for the QPS at the SLO: the early-stopping bound against LoadGen's reference values, the stability
and rate rules, bracket-and-bisect on a known threshold, the time cap, a simulated M/D/1 queue whose capacity at
the SLO is known in closed form, and a real service (fake backend, fixed time per request) through the pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.core.errors import ConfigError
from bench.core.records import ServiceSetup
from bench.core.results import load_run
from bench.core.search_records import SearchProbe
from loadtests.samples import Samples
from loadtests.service_proc import ServiceVariant
from loadtests.slo_search import JUDGED, judge, next_rate, search, tail_bound, within
from loadtests.windows import SearchConfig

SETUP = ServiceSetup("fake")
CLIENT = {"invalid_answers": 0, "open_loop": {"late_send_percent": 0.0}}


def min_passing(percentile: float, confidence: float = 0.99) -> int:
    return next(n for n in range(1, 5000) if tail_bound(0, n, percentile) <= 1 - confidence)


def test_early_stopping_bound_matches_loadgen_reference_values():
    # LoadGen's reference: with no query over the bound, p99 at 99 % confidence needs 459 queries.
    assert min_passing(99.0) == 459 and min_passing(95.0) == 90
    assert tail_bound(13, 500, 95.0) <= 0.01 < tail_bound(14, 500, 95.0)


def test_stability_rule_is_within_ten_percent_of_the_mean_or_the_floor():
    assert within([1.0, 1.05, 0.95], 0.10) and not within([1.0, 1.3, 0.9], 0.10)
    assert within([20.0, 29.0, 24.0], 0.10, floor=5.0) and not within([20.0, 29.0, 24.0], 0.10, floor=2.0)


def samples_of(intended: np.ndarray, latency_ms: np.ndarray, ok: np.ndarray | None = None) -> Samples:
    ok = np.ones(intended.size, dtype=bool) if ok is None else ok
    return Samples(intended.copy(), latency_ms, ok, intended, np.zeros(intended.size, dtype=int), (0.0,), (0.0,),
                   ("memory",))


def md1(rate: float, service_s: float, duration_s: float, seed: int = 0) -> Samples:
    """Poisson arrivals at `rate` into one FIFO server taking `service_s` per request (M/D/1)."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / rate, int(rate * duration_s * 1.5) + 50))
    arrivals = arrivals[arrivals < duration_s]
    done, free = np.empty_like(arrivals), 0.0
    for i, a in enumerate(arrivals):
        free = max(a, free) + service_s
        done[i] = free
    return samples_of(arrivals, (done - arrivals) * 1000.0)


def test_a_steady_fast_service_passes_and_failures_or_a_slow_tail_do_not():
    cfg = SearchConfig(slo_ms=100.0, window_s=2.0)
    good = judge(md1(30.0, 0.010, cfg.window_for(30.0) * cfg.windows), 30.0, cfg, CLIENT)
    assert good.passed and good.verdict == "meets the SLO" and good.requests > 250 and good.over_slo == 0
    assert good.achieved_ci[0] < good.achieved_rps < good.achieved_ci[1]
    slow = md1(30.0, 0.150, cfg.window_for(30.0) * cfg.windows)  # 150 ms per request: overloaded
    assert not judge(slow, 30.0, cfg, CLIENT).passed
    s = md1(30.0, 0.010, cfg.window_for(30.0) * cfg.windows)
    s.ok[-5] = False
    assert judge(s, 30.0, cfg, CLIENT).verdict.startswith("1 failed")
    late = judge(md1(30.0, 0.010, 30.0), 30.0, cfg, {"open_loop": {"late_send_percent": 20.0}})
    assert "late" in late.verdict and not late.passed


def test_bracket_then_bisect_finds_a_known_threshold_and_records_the_path():
    cfg = SearchConfig(start_rps=5.0, precision=0.05)
    probe = lambda rate: SearchProbe(rate, rate <= 37.0, "x", requests=400, achieved_rps=rate,  # noqa: E731
                                     achieved_ci=(rate * 0.97, rate * 1.03))
    found = search(probe, cfg, SETUP, clock=iter(range(0, 10_000, 1)).__next__)
    assert found.status == "ok" and found.rate_rps <= 37.0 < found.first_failing_rps
    assert found.first_failing_rps / found.rate_rps <= 1.05 and found.stopped == "converged"
    assert [p.offered_rps for p in found.probes[:4]] == [5.0, 10.0, 20.0, 40.0]
    assert found.qps_ci == (found.qps * 0.97, found.first_failing_rps) and found.requests == 400


def test_the_bracket_steps_up_to_the_saturated_rate_before_past_it():
    """With the closed-loop saturation QPS as ceiling, the first failing probe lands there, not at 2× deep in
    overload; a ceiling that passes (the closed loop did not saturate) does not stop the search."""
    def probe_below(limit: float):
        return lambda rate: SearchProbe(rate, rate <= limit, "x", requests=400, achieved_rps=rate,
                                        achieved_ci=(rate * 0.97, rate * 1.03))

    clock = iter(range(0, 10_000)).__next__
    capped = search(probe_below(25.0), SearchConfig(start_rps=18.0, ceiling_rps=30.0), SETUP, clock=clock)
    assert [p.offered_rps for p in capped.probes[:2]] == [18.0, 30.0]
    assert capped.rate_rps <= 25.0 < capped.first_failing_rps <= 30.0 and capped.stopped == "converged"
    past = search(probe_below(50.0), SearchConfig(start_rps=18.0, ceiling_rps=30.0), SETUP, clock=clock)
    assert [p.offered_rps for p in past.probes[:3]] == [18.0, 30.0, 60.0] and past.rate_rps <= 50.0
    with pytest.raises(ConfigError):
        SearchConfig(ceiling_rps=0.0)


def test_the_search_stops_at_its_time_cap_and_says_so():
    now = [0.0]

    def probe(rate: float) -> SearchProbe:
        now[0] += 30.0  # every probe takes 30 s of the (fake) clock
        return SearchProbe(rate, True, "ok", achieved_rps=rate, achieved_ci=(rate, rate))

    found = search(probe, SearchConfig(start_rps=5.0, time_cap_s=100.0), SETUP, clock=lambda: now[0])
    # 5, 10 and 20 req/s fit; 40 would need 14 s more than the 10 s left (5 windows of 2 s + Locust's start)
    assert [p.offered_rps for p in found.probes] == [5.0, 10.0, 20.0] and found.stopped == "time cap"
    assert found.status == "ok" and found.rate_rps == 20.0 and found.first_failing_rps is None


def test_no_passing_rate_is_a_result_with_the_reason():
    cfg = SearchConfig(start_rps=4.0, min_rps=0.5)
    found = search(lambda r: SearchProbe(r, False, "tail bound"), cfg, SETUP, clock=iter(range(10_000)).__next__)
    assert found.status == "none" and found.qps is None and "lowest tried 0.5" in found.reason
    assert next_rate(None, 0.6, cfg) is None


def md1_share_over(slo_s: float, rate: float, service_s: float) -> float:
    """Erlang's M/D/1 waiting-time distribution: P(sojourn > slo)."""
    t, rho, total = slo_s - service_s, rate * service_s, 0.0
    for k in range(int(t // service_s) + 1):
        x = rate * (k * service_s - t)
        total += x ** k / math.factorial(k) * math.exp(-x)
    return 1.0 - (1.0 - rho) * total


def md1_rate_at_slo(slo_s: float, service_s: float, share: float = 0.05) -> float:
    lo, hi = 1e-3, (1.0 - 1e-9) / service_s
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if md1_share_over(slo_s, mid, service_s) > share else (mid, hi)
    return lo


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_on_a_simulated_queue_finds_the_known_capacity_at_the_slo_within_10_percent(seed):
    service_s, slo_ms = 0.010, 100.0
    truth = md1_rate_at_slo(slo_ms / 1000, service_s)  # ≈ 85 req/s: P95 of the sojourn time = 100 ms there
    cfg = SearchConfig(slo_ms=slo_ms, start_rps=20.0)
    runs = iter(range(1000))
    found = search(lambda r: judge(md1(r, service_s, cfg.window_for(r) * cfg.windows, seed * 100 + next(runs)),
                                   r, cfg, CLIENT), cfg, SETUP, clock=iter(range(10_000)).__next__)
    assert found.status == "ok", [p.verdict for p in found.probes]
    assert abs(found.rate_rps / truth - 1) <= 0.10, (found.rate_rps, truth, [(p.offered_rps, p.verdict)
                                                                            for p in found.probes])


@pytest.mark.e2e
def test_search_through_the_pipeline_finds_a_fake_services_capacity_at_the_slo(bench_home, tiny_onnx):
    """A real service on 127.0.0.1 whose backend sleeps 10 ms per request, one request at a time (no batching):
    an M/D/1 queue whose service time the server itself reports (Server-Timing at one user). The search, wired
    into the pipeline's sweep stage, must land within 10 % of that queue's rate at P95 = SLO."""
    from bench.app import pipeline
    from loadtests.windows import SweepConfig

    variant = ServiceVariant.of("fake 10 ms", backend="fake-fp32-cpu", batching=False, cache_size=0)
    sweep = SweepConfig(model="twin:tiny", variants=(variant,), users=(1,), duration_s=3.0, ramp_s=0.5, repeats=1,
                        processes=1, slo_search=SearchConfig(slo_ms=100.0, start_rps=30.0, time_cap_s=240.0))
    ctx = pipeline.sweep(sweep, pipeline.sweep_context("twin:tiny", 0, None, "search-known-capacity"))
    (found,) = ctx.result.slo_searches
    (level,) = ctx.result.loadtests
    timing = level.server_timing_ms
    service_s = (timing["tokenize"] + timing["inference"]) / 1000.0
    truth = md1_rate_at_slo(0.100, service_s)
    path = [(round(p.offered_rps, 1), p.verdict) for p in found.probes]
    assert found.status == "ok" and abs(found.rate_rps / truth - 1) <= 0.10, (found.rate_rps, truth, path)
    assert found.requests >= 200 and found.qps_ci[0] <= found.qps <= found.qps_ci[1]
    stored = load_run(ctx.run_dir).slo_searches[0]
    assert stored == found  # typed record, saved and read back


@pytest.mark.e2e
def test_searches_the_budget_cannot_hold_are_recorded_as_not_run(bench_home, tiny_model):
    import time as clock

    from bench.app import pipeline
    from loadtests.windows import SearchConfig, SweepConfig

    ctx = pipeline.sweep_context("twin:tiny", 0, None, "budget")
    variant = ServiceVariant.of("fake 10 ms", backend="fake-fp32-cpu", batching=False, cache_size=0)
    sweep = SweepConfig(model="twin:tiny", variants=(variant,), users=(1,), duration_s=2, ramp_s=0.5, repeats=1,
                        processes=1, slo_search=SearchConfig(slo_ms=300))
    ctx = pipeline.sweep(sweep, ctx, deadline=clock.monotonic() + 30)  # the levels leave < 60 s for the search
    [search] = load_run(ctx.run_dir).slo_searches
    assert search.status == "failed" and search.stopped == "not run" and search.qps is None
    assert "time budget" in search.reason and "--slo-search" in search.reason
    assert [lv.status for lv in load_run(ctx.run_dir).loadtests] == ["ok"]


def test_a_search_is_given_time_for_two_probes_at_its_start_rate():
    """The run budget's floor for a search: a bracket (a pass and a fail) at the configuration's start rate, so a
    fast host's short windows fit in ~40 s and a slow host's stretched ones are not cut to nothing."""
    from loadtests.slo_search import SERVICE_START_S, bracket_seconds
    from loadtests.windows import SweepConfig

    variant = ServiceVariant.of("v", backend="fake-fp32-cpu")
    sweep = SweepConfig(variants=(variant,), slo_search=SearchConfig())
    fast, slow = bracket_seconds(sweep, {"v": (30.0, 50.0)}), bracket_seconds(sweep, {"v": (2.7, 4.5)})
    assert fast == SERVICE_START_S + 2 * sweep.slo_search.probe_seconds(30.0) < 45
    assert slow > 100 and bracket_seconds(sweep, {}) == SERVICE_START_S + 2 * sweep.slo_search.probe_seconds(2.0)


def pass_rate(service_s: float, slo_ms: float, share: float, probes: int, seed: int) -> tuple[float, int]:
    """How often one probe passes at the rate where a share `share` of requests is over the SLO (an M/D/1 queue
    whose SLO is the same multiple of its service time, so only the rate differs), and its counted requests."""
    rate = md1_rate_at_slo(slo_ms / 1000, service_s, share)
    cfg = SearchConfig(slo_ms=slo_ms)
    verdicts = [judge(md1(rate, service_s, cfg.window_for(rate) * cfg.windows, seed + k), rate, cfg, CLIENT)
                for k in range(probes)]
    counted = int(np.median([v.requests for v in verdicts]))
    return sum(v.passed for v in verdicts) / probes, counted


def test_the_tail_test_is_as_strict_at_a_high_rate_as_at_a_low_one():
    """The same share over the SLO (3.5 %: a count that 300 judged requests refuse and 3,000 would allow) passes
    about as often at ~480 req/s as at ~19 req/s: every probe judges the same number of requests, so a faster
    configuration faces no looser test. (An M/D/1 queue's latencies are correlated, so pass rates are far from
    the binomial's; what matters here is that they do not depend on the rate.)"""
    slow, n_slow = pass_rate(0.050, 1000.0, 0.035, 120, seed=0)  # capacity 20 req/s
    fast, n_fast = pass_rate(0.002, 40.0, 0.035, 120, seed=500)  # capacity 500 req/s
    print(f"\npass rate at a 3.5 % share over the SLO: {slow:.1%} at the low rate, {fast:.1%} at the high one")
    assert n_slow == n_fast == JUDGED
    assert abs(slow - fast) <= 0.15, (slow, fast)


@pytest.mark.parametrize("service_s,slo_ms,start", [(0.050, 500.0, 5.0), (0.002, 20.0, 150.0)])
def test_the_searched_qps_holds_the_known_capacity_in_its_interval_at_low_and_high_capacity(service_s, slo_ms, start):
    truth = md1_rate_at_slo(slo_ms / 1000, service_s)
    cfg = SearchConfig(slo_ms=slo_ms, start_rps=start)
    runs = iter(range(1000))
    found = search(lambda r: judge(md1(r, service_s, cfg.window_for(r) * cfg.windows, 7 + next(runs)), r, cfg, CLIENT),
                   cfg, SETUP, clock=iter(range(10_000)).__next__)
    assert found.status == "ok" and found.bounded
    assert found.qps_ci[0] * 0.95 <= truth <= found.qps_ci[1], (truth, found.qps_ci)
    rerun = found.probes[-1]  # the last probe re-ran the rate found; failing, the result stepped down below it
    assert rerun.offered_rps == found.rate_rps if found.verified else rerun.offered_rps > found.rate_rps


def test_a_search_that_never_failed_is_a_lower_bound_and_a_failed_re_run_steps_down():
    from bench.core.search_records import SearchProbe

    cfg = SearchConfig(slo_ms=100.0, start_rps=10.0, max_probes=3)
    always = search(lambda r: SearchProbe(r, True, "meets the SLO", 300, achieved_rps=r,
                                          achieved_ci=(r * 0.9, r * 1.1)),
                    cfg, SETUP, clock=iter(range(10_000)).__next__)
    assert not always.bounded and len(always.qps_ci) == 1  # "≥ X": nothing failed before the probe cap
    seen: dict = {}

    def flaky(r: float) -> SearchProbe:  # 40 passes the first time only; 20 always; 80 fails
        seen[r] = seen.get(r, 0) + 1
        ok = r <= 20 or (r <= 40 and seen[r] == 1)
        return SearchProbe(r, ok, "meets the SLO" if ok else "tail bound", 300, achieved_rps=r, achieved_ci=(r, r))

    stepped = search(flaky, SearchConfig(slo_ms=100.0, start_rps=10.0, precision=1.0), SETUP,
                     clock=iter(range(10_000)).__next__)
    assert stepped.rate_rps == 20.0 and not stepped.verified and stepped.first_failing_rps == 40.0
