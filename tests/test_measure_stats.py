"""Statistics, bootstrap CIs, the stop rule and the measurement loop, all on known or fake data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench.core.stats import (
    PERCENTILE_METHOD,
    StopRule,
    bootstrap_ci,
    hierarchical_bootstrap_ci,
    percentile,
    pooled_stat,
    run_until_stopped,
    summarize,
    window_rate_ci,
)
from tests.fakes import FakeClock

SAMPLES = st.lists(st.floats(min_value=0.0, max_value=1e3, allow_nan=False), min_size=1, max_size=200)


def test_percentile_linear_interpolation_by_hand():
    data = [1.0, 2.0, 3.0, 4.0]
    assert PERCENTILE_METHOD == "linear"
    # rank = q/100 × (n - 1): p50 → 1.5 → between 2 and 3; p90 → 2.7 → 3 + 0.7 × (4 - 3)
    assert percentile(data, 50) == pytest.approx(2.5)
    assert percentile(data, 90) == pytest.approx(3.7)
    assert percentile(data, 0) == 1.0 and percentile(data, 100) == 4.0
    assert percentile([7.0], 99) == 7.0


def test_summarize_known_samples():
    s = summarize([10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])  # order must not matter
    assert s["n"] == 10 and s["min"] == 1.0 and s["max"] == 10.0
    assert s["mean"] == pytest.approx(5.5)
    assert s["p50"] == pytest.approx(5.5)
    assert s["p90"] == pytest.approx(9.1)  # rank 8.1
    assert s["p95"] == pytest.approx(9.55)  # rank 8.55
    assert s["p99"] == pytest.approx(9.91)  # rank 8.91
    assert s["stdev"] == pytest.approx(np.sqrt(82.5 / 9))  # sum of squared deviations 82.5, ddof=1


def test_summarize_single_sample_has_zero_stdev():
    assert summarize([0.25])["stdev"] == 0.0


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_bad_samples_rejected(bad):
    with pytest.raises(ValueError):
        summarize(bad)


def test_bootstrap_ci_deterministic_for_a_seed():
    data = np.random.default_rng(42).normal(loc=10.0, scale=1.0, size=2000)
    for stat in ("mean", "p50", "p95", "p99"):
        assert bootstrap_ci(data, stat, seed=7) == bootstrap_ci(data, stat, seed=7)
    assert bootstrap_ci(data, "p99", seed=1) != bootstrap_ci(data, "p99", seed=2)


@pytest.mark.parametrize("stat, truth", [("mean", 10.0), ("p50", 10.0), ("p95", 10.0 + 1.6448536)])
def test_bootstrap_ci_contains_true_statistic_of_normal_samples(stat, truth):
    # A 95% CI misses the truth on 1 draw in 20, so check the rate over many draws (all seeded: deterministic).
    hits = 0
    for draw in range(40):
        data = np.random.default_rng(1000 + draw).normal(loc=10.0, scale=1.0, size=500)
        low, high = bootstrap_ci(data, stat, n_boot=400, seed=draw)
        hits += low < truth < high
    assert hits >= 34  # >= 85%; a broken interval (too narrow, or biased) lands far below


def test_bootstrap_ci_chunked_on_large_input():
    # 10k samples × 2000 boots would be 160 MB of indices in one go; chunking keeps it small and correct.
    data = np.random.default_rng(0).exponential(size=10_000)
    low, high = bootstrap_ci(data, "mean", n_boot=2000)
    assert low < 1.0 < high and high - low < 0.1


def test_bootstrap_ci_validates():
    with pytest.raises(ValueError, match="unknown statistic"):
        bootstrap_ci([1.0, 2.0], "p42")
    with pytest.raises(ValueError, match="no samples"):
        bootstrap_ci([], "mean")
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], "mean", confidence=1.0)


@settings(max_examples=60, deadline=None)
@given(SAMPLES)
def test_percentiles_ordered_and_bounded(samples):
    s = summarize(samples)
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]


@settings(max_examples=30, deadline=None)
@given(st.floats(min_value=0.0, max_value=1e3), st.integers(1, 50), st.sampled_from(["mean", "p50", "p95", "p99"]))
@example(0.8, 3, "mean")  # the resampled means are 0.8000000000000002, one ulp past every sample
def test_ci_of_identical_samples_is_exactly_that_value(value, n, stat):
    assert bootstrap_ci([value] * n, stat, n_boot=50) == (value, value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_iters": 0}, "min_iters"),
        ({"check_every": -1}, "check_every"),
        ({"min_time_s": -1.0}, "min_time_s"),
        ({"max_time_s": 0.0}, "max_time_s"),
        ({"min_iters": 10, "max_iters": 5}, "exceeds max_iters"),
        ({"min_time_s": 10.0, "max_time_s": 5.0}, "exceeds max_time_s"),
        ({"target_rel_halfwidth": 0.0}, "target_rel_halfwidth"),
    ],
)
def test_stop_rule_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StopRule(**kwargs)


def _loop(rule: StopRule, durations, step_s: float):
    """Run with a fake clock that advances `step_s` per iteration; durations cycle through `durations`."""
    clock = FakeClock()
    values = iter(np.resize(np.asarray(durations, dtype=float), 10**6))

    def fn() -> float:
        clock.advance(step_s)
        return float(next(values))

    return run_until_stopped(fn, rule, clock=clock)


def test_stop_rule_ci_target_met_after_minimums():
    rule = StopRule(min_iters=50, min_time_s=1.0, max_time_s=60.0, check_every=20)
    samples, reason = _loop(rule, [0.010], step_s=0.01)  # constant latency: CI width 0 at the first check
    assert reason == "ci-target-met"
    # min_iters 50 and min_time 1 s (100 iterations) both hold; the first check on a multiple of 20 is 100.
    assert len(samples) == 100


def test_stop_rule_time_cap_with_noisy_samples():
    rng = np.random.default_rng(3)
    noisy = rng.lognormal(sigma=1.5, size=1000)
    rule = StopRule(min_iters=20, min_time_s=0.1, max_time_s=2.0, target_rel_halfwidth=0.001)
    samples, reason = _loop(rule, noisy, step_s=0.01)
    assert reason == "time-cap" and len(samples) == 200


def test_stop_rule_iteration_cap():
    rule = StopRule(min_iters=5, min_time_s=100.0, max_time_s=1000.0, max_iters=30)
    samples, reason = _loop(rule, [0.001], step_s=0.001)
    assert reason == "iteration-cap" and len(samples) == 30


def test_stop_rule_respects_min_iters_and_min_time():
    rule = StopRule(min_iters=40, min_time_s=2.0, check_every=20)
    assert rule.decide([0.01] * 39, elapsed_s=10.0) is None  # enough time, too few samples
    assert rule.decide([0.01] * 200, elapsed_s=1.9) is None  # enough samples, too little time
    assert rule.decide([0.01] * 40, elapsed_s=2.0) == "ci-target-met"
    assert rule.decide([0.01] * 41, elapsed_s=2.0) is None  # not a check point


def test_stop_rule_checks_less_often_on_long_runs():
    rule = StopRule(min_iters=20, min_time_s=0.0, check_every=20)
    assert rule.decide([0.01] * 2020, elapsed_s=1.0) is None  # interval is 200 at n = 2020
    assert rule.decide([0.01] * 2200, elapsed_s=1.0) == "ci-target-met"


def test_run_until_stopped_reports_each_sample():
    seen: list[float] = []
    clock = FakeClock()

    def fn() -> float:
        clock.advance(1.0)
        return 0.5

    samples, reason = run_until_stopped(fn, StopRule(min_iters=1, min_time_s=0.0, max_time_s=3.0), clock, seen.append)
    assert reason == "time-cap" and samples == [0.5, 0.5, 0.5] and seen == samples


def test_ratio_ci_matches_welch_on_logs_and_brackets_the_ratio():
    from scipy import stats as sps

    from bench.core.stats import ratio_ci

    num, den = [18.2, 18.9, 17.6, 18.4], [17.1, 17.9, 17.4, 16.8]
    point, lo, hi = ratio_ci(num, den)
    assert point == pytest.approx(np.exp(np.mean(np.log(num)) - np.mean(np.log(den))))
    # Welch's interval by hand: se from the per-group variances, df by Welch–Satterthwaite.
    a, b = np.log(num), np.log(den)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = sps.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert (lo, hi) == pytest.approx((point * np.exp(-half), point * np.exp(half)))
    assert lo < point < hi and lo > 1.0  # these windows really are faster
    assert ratio_ci([2.0, 2.0], [1.0, 1.0]) == (2.0, 2.0, 2.0)


@pytest.mark.parametrize("num, den", [([1.0], [1.0, 2.0]), ([1.0, 0.0], [1.0, 2.0]), ([1.0, 2.0], [-1.0, 2.0])])
def test_ratio_ci_refuses_too_few_or_non_positive_values(num, den):
    from bench.core.stats import ratio_ci

    with pytest.raises(ValueError, match="ratio_ci"):
        ratio_ci(num, den)


def test_ratio_ci_with_times_removes_a_linear_drift():
    from bench.core.stats import ratio_ci

    # ABBA windows on a host slowing 2 % per window, true ratio 1.05, plus small deterministic noise.
    order = [1, 8, 8, 1] * 3
    noise = [0.004, -0.003, 0.002, -0.004, 0.003, 0.001, -0.002, 0.0, -0.001, 0.003, -0.004, 0.002]
    qps = [20.0 * (1.05 if lvl == 8 else 1.0) * (1 - 0.02 * i) * (1 + e)
           for i, (lvl, e) in enumerate(zip(order, noise))]
    num = [q for q, lvl in zip(qps, order) if lvl == 8]
    den = [q for q, lvl in zip(qps, order) if lvl == 1]
    times = ([i for i, lvl in enumerate(order) if lvl == 8], [i for i, lvl in enumerate(order) if lvl == 1])
    point, lo, hi = ratio_ci(num, den, times=times)
    assert lo < 1.05 < hi and hi - lo < 0.03  # the drift is modelled, not left in the error term
    _, wlo, whi = ratio_ci(num, den)
    assert whi - wlo > 2 * (hi - lo)  # Welch, blind to time, pays for the drift in width
    with pytest.raises(ValueError, match="one time per value"):
        ratio_ci(num, den, times=([0, 1], [2, 3]))


def _process_groups(rng, k: int, m: int, spread: float = 0.05, sigma: float = 0.3) -> list:
    """k processes of m lognormal latencies whose medians differ by `spread` (log sd) around 50 ms.

    Every process's median is 50 · exp(spread · z), so the population pooled over all processes is lognormal with
    median exactly 50: the number any fresh set of processes is estimating."""
    return [50.0 * np.exp(spread * rng.standard_normal() + sigma * rng.standard_normal(m)) for _ in range(k)]


def test_hierarchical_ci_covers_the_process_population_median_where_the_pooled_bootstrap_does_not():
    # 8 processes differing by ±5 %, as on this host. The pooled bootstrap sees 1600 samples from "one process"
    # and is sure of the median to ~±1.5 %, but the process spread alone moves the pooled median by ~±1.8 %.
    hier = plain = 0
    trials = 60
    for trial in range(trials):
        groups = _process_groups(np.random.default_rng(trial), k=8, m=200)
        lo, hi = hierarchical_bootstrap_ci(groups, "p50", n_boot=300, seed=trial)
        hier += lo < 50.0 < hi
        lo, hi = bootstrap_ci(np.concatenate(groups), "p50", n_boot=300, seed=trial)
        plain += lo < 50.0 < hi
    assert hier / trials >= 0.88  # nominal 95 %; 8 groups of a bootstrap undercover slightly
    assert plain / trials <= 0.75 and hier - plain >= 0.2 * trials


def test_hierarchical_ci_is_wider_than_pooled_when_processes_differ_and_brackets_the_pooled_stat():
    groups = _process_groups(np.random.default_rng(5), k=5, m=1000)
    for stat in ("mean", "p50", "p95", "p99"):
        lo, hi = hierarchical_bootstrap_ci(groups, stat)
        plo, phi = bootstrap_ci(np.concatenate(groups), stat, n_boot=1000)
        assert lo <= pooled_stat(groups, stat) <= hi and hi - lo > 1.5 * (phi - plo)


def test_hierarchical_with_one_group_is_the_plain_bootstrap():
    data = np.random.default_rng(1).exponential(size=700)
    for stat in ("mean", "p50", "p99"):
        plain = bootstrap_ci(data, stat, n_boot=500, seed=4)
        assert hierarchical_bootstrap_ci([data], stat, n_boot=500, seed=4) == plain  # the very same draws


def test_hierarchical_ci_does_not_depend_on_the_chunk_size(monkeypatch):
    import bench.core.stats as stats_module

    groups = _process_groups(np.random.default_rng(2), k=4, m=150)
    wide = hierarchical_bootstrap_ci(groups, "p95", n_boot=2000)
    # One resample per chunk (600 elements per chunk, 600 samples), and a chunk size that leaves a remainder.
    for elements in (600, 7 * 600 + 5):
        monkeypatch.setattr(stats_module, "_BOOT_CHUNK_ELEMENTS", elements)
        narrow = hierarchical_bootstrap_ci(groups, "p95", n_boot=2000)
        assert narrow == pytest.approx(wide, rel=0.02)  # other draws, same distribution: Monte Carlo noise only
        assert narrow == hierarchical_bootstrap_ci(groups, "p95", n_boot=2000)  # and still seeded


def test_hierarchical_ci_deterministic_for_a_seed_and_unequal_groups():
    groups = [np.arange(1.0, 51.0), np.arange(100.0, 110.0), np.arange(20.0, 220.0)]
    assert hierarchical_bootstrap_ci(groups, "p50", seed=3) == hierarchical_bootstrap_ci(groups, "p50", seed=3)
    assert hierarchical_bootstrap_ci(groups, "p50", seed=3) != hierarchical_bootstrap_ci(groups, "p50", seed=4)
    lo, hi = hierarchical_bootstrap_ci(groups, "mean")
    assert 1.0 <= lo < pooled_stat(groups, "mean") < hi <= 219.0


def test_pooled_stat_is_the_statistic_of_all_samples():
    groups = [[1.0, 2.0], [3.0, 4.0, 10.0]]
    assert pooled_stat(groups, "mean") == pytest.approx(4.0)
    assert pooled_stat(groups, "p50") == 3.0 and pooled_stat(groups, "p95") == percentile([1, 2, 3, 4, 10], 95)


@pytest.mark.parametrize("groups, message", [([], "no groups"), ([[1.0], []], "no samples"),
                                             ([[1.0, float("nan")]], "NaN")])
def test_hierarchical_refuses_empty_or_bad_input(groups, message):
    with pytest.raises(ValueError, match=message):
        hierarchical_bootstrap_ci(groups, "p50")
    with pytest.raises(ValueError, match=message):
        pooled_stat(groups, "p50")


def test_hierarchical_validates_arguments():
    with pytest.raises(ValueError, match="unknown statistic"):
        hierarchical_bootstrap_ci([[1.0]], "median")
    with pytest.raises(ValueError, match="n_boot"):
        hierarchical_bootstrap_ci([[1.0]], "mean", n_boot=0)
    with pytest.raises(ValueError, match="confidence"):
        hierarchical_bootstrap_ci([[1.0]], "mean", confidence=0.0)


def test_window_rate_ci_is_a_t_interval_over_window_rates():
    from scipy import stats as sps

    counts = [40, 44, 38, 41, 43]
    mean, lo, hi = window_rate_ci(counts, window_s=2.0)
    rates = np.asarray(counts) / 2.0
    half = sps.t.ppf(0.975, 4) * rates.std(ddof=1) / np.sqrt(5)
    assert mean == pytest.approx(20.6) and (lo, hi) == pytest.approx((20.6 - half, 20.6 + half))
    assert window_rate_ci([30, 30, 30], 1.5) == (20.0, 20.0, 20.0)
    assert window_rate_ci([0, 9], 1.0)[1] == 0.0  # a rate is never negative


def test_window_rate_ci_covers_the_true_rate_with_few_windows():
    rng = np.random.default_rng(11)
    hits = sum(lo < 20.0 < hi for _, lo, hi in (window_rate_ci(rng.poisson(40, size=4), 2.0) for _ in range(400)))
    assert 0.92 <= hits / 400 <= 0.98  # t with 3 degrees of freedom keeps its 95 % even from 4 windows


@pytest.mark.parametrize("counts, window_s, message", [([], 1.0, "no samples"), ([5], 1.0, ">= 2 windows"),
                                                       ([5, -1], 1.0, ">= 0"), ([5, 6], 0.0, "window_s")])
def test_window_rate_ci_refuses_bad_input(counts, window_s, message):
    with pytest.raises(ValueError, match=message):
        window_rate_ci(counts, window_s)
