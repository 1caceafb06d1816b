"""Statistics derived from raw latency samples, and the rule that decides when enough samples were taken.

Samples are kept raw by callers; everything here is computed on read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

# numpy's default ("linear", Hyndman & Fan type 7): the same numbers as Excel PERCENTILE.INC and pandas.
PERCENTILE_METHOD: Final = "linear"

BOOTSTRAP_STATS = ("mean", "p50", "p95", "p99")

# Bootstrap resamples are drawn in chunks of at most this many elements, so the index matrix and the gathered
# values (8 bytes each) stay near 64 MB together, whatever the sample count: 10k samples x 2000 boots would be
# 160 MB for the indices alone.
_BOOT_CHUNK_ELEMENTS = 4_000_000

# Fewer resamples than a report CI: the stop check runs every `check_every` samples and must stay cheap.
_STOP_RULE_BOOTS = 400


def overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """The tie rule, in one place: two closed 95 % intervals that overlap (lo_a ≤ hi_b and lo_b ≤ hi_a) are a tie,
    never a ranking; a figure without an interval (not two ends) ties with nothing."""
    return len(a) == 2 and len(b) == 2 and a[0] <= b[1] and b[0] <= a[1]


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of `samples`, linear interpolation between closest ranks."""
    data = _as_array(samples)
    return float(np.percentile(data, q, method=PERCENTILE_METHOD))


def summarize(samples_s: Sequence[float]) -> dict[str, Any]:
    """Mean, percentiles, sample stdev (ddof=1; 0 for fewer than 2 samples), min, max and n, in the input unit."""
    data = _as_array(samples_s)
    p50, p90, p95, p99 = np.percentile(data, [50, 90, 95, 99], method=PERCENTILE_METHOD)
    return {
        "mean": float(data.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "stdev": float(data.std(ddof=1)) if data.size >= 2 else 0.0,
        "min": float(data.min()),
        "max": float(data.max()),
        "n": int(data.size),
    }


def bootstrap_ci(
    samples: Sequence[float], stat: str, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of `stat` (mean, p50, p95 or p99); deterministic for a seed."""
    _check_bootstrap_args(stat, n_boot, confidence)
    data = _as_array(samples)
    boot = _bootstrap_distribution([data], stat, n_boot, np.random.default_rng(seed))
    return _interval(boot, confidence, data)


def hierarchical_bootstrap_ci(
    groups: Sequence[Sequence[float]], stat: str, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Two-stage bootstrap CI of `stat` over samples that come in groups (one group per process or run).

    Each resample draws as many groups as there are, with replacement, then within each drawn group as many
    samples as it has, with replacement, and computes `stat` over the pool. Drawing the groups first puts the
    spread between processes into the interval; a bootstrap of the pooled samples treats them as one process
    and gives an interval far too narrow when processes differ.

    Group sizes: slot j of a resample always holds len(groups[j]) values, whichever group fills it, so every
    resample pools exactly the same number of values and a chunk of resamples is one rectangular matrix. With
    equal group sizes this is exactly the two-stage bootstrap; with unequal sizes a drawn group contributes the
    size of the slot it fills rather than its own.

    With one group the group draw is certain and the second stage is the plain bootstrap: the interval is
    bootstrap_ci's, identical for the same seed and n_boot (same resampling code, same random draws).
    """
    _check_bootstrap_args(stat, n_boot, confidence)
    arrays = _as_groups(groups)
    boot = _bootstrap_distribution(arrays, stat, n_boot, np.random.default_rng(seed))
    return _interval(boot, confidence, np.concatenate(arrays))


def pooled_stat(groups: Sequence[Sequence[float]], stat: str) -> float:
    """Point estimate matching hierarchical_bootstrap_ci: `stat` (mean, p50, p95 or p99) over all groups pooled."""
    _check_stat(stat)
    data = np.concatenate(_as_groups(groups))
    return float(_row_stat(data[np.newaxis, :], stat)[0])


def _check_stat(stat: str) -> None:
    if stat not in BOOTSTRAP_STATS:
        raise ValueError(f"unknown statistic {stat!r}; expected one of {', '.join(BOOTSTRAP_STATS)}")


def _check_bootstrap_args(stat: str, n_boot: int, confidence: float) -> None:
    _check_stat(stat)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def _as_groups(groups: Sequence[Sequence[float]]) -> list[np.ndarray]:
    if len(groups) == 0:
        raise ValueError("no groups: a hierarchical bootstrap needs at least one group of samples")
    return [_as_array(g) for g in groups]


def _interval(boot: np.ndarray, confidence: float, data: np.ndarray) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha], method=PERCENTILE_METHOD)
    # Every resample's mean or percentile lies within the data's range; summation rounding can push a mean of
    # equal values one ulp past it (0.8 + 0.8 + 0.8 over 3 = 0.8000000000000002), so clip it back.
    lo_data, hi_data = float(data.min()), float(data.max())
    return float(np.clip(low, lo_data, hi_data)), float(np.clip(high, lo_data, hi_data))


def _bootstrap_distribution(groups: list[np.ndarray], stat: str, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`n_boot` values of `stat`, one per two-stage resample (see hierarchical_bootstrap_ci), chunk by chunk."""
    flat = np.concatenate(groups)
    sizes = np.array([g.size for g in groups])
    n = flat.size
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // n)
    out = np.empty(n_boot, dtype=np.float64)
    for begin in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - begin)
        out[begin : begin + rows] = _row_stat(flat[_resample_indices(sizes, rows, rng)], stat)
    return out


def _resample_indices(sizes: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    """A (rows, sum(sizes)) matrix of indices into the concatenated groups, one two-stage resample per row."""
    n = int(sizes.sum())
    if sizes.size == 1:  # the group draw is certain: draw exactly as the plain bootstrap always has
        return rng.integers(0, n, size=(rows, n))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    chosen = rng.integers(0, sizes.size, size=(rows, sizes.size))
    out = np.empty((rows, n), dtype=np.int64)
    end = 0
    # Slot by slot (a few groups): each slot is a (rows, width) block filled from one drawn group per row, which
    # broadcasts a column instead of gathering a group size per element (faster: docs/measurements.md).
    for j, width in enumerate(sizes):
        picked = chosen[:, j, np.newaxis]
        within = rng.random((rows, width))
        # floor(u * size) is uniform on 0..size-1; float64 has ample resolution for any sample count in memory.
        within *= sizes[picked]
        np.add(within.astype(np.int64), offsets[picked], out=out[:, end : end + width])
        end += width
    return out


def _row_stat(matrix: np.ndarray, stat: str) -> np.ndarray:
    if stat == "mean":
        return np.asarray(matrix.mean(axis=1))
    q = float(stat[1:])
    return np.asarray(np.percentile(matrix, q, axis=1, method=PERCENTILE_METHOD))


def _as_array(samples: Sequence[float]) -> np.ndarray:
    data = np.asarray(samples, dtype=np.float64).ravel()
    if data.size == 0:
        raise ValueError("no samples: statistics need at least one value")
    if not np.all(np.isfinite(data)):
        raise ValueError("samples contain NaN or infinity")
    return data


@dataclass(frozen=True)
class StopRule:
    """When to stop iterating: after the minimums, once the P95 is known precisely enough, or at a cap.

    `target_rel_halfwidth` is the half-width of the P95 bootstrap CI divided by the P95, checked every
    `check_every` samples (every ~n/10 once n > 10 × check_every). Caps win over minimums, so a very slow
    model still stops at `max_time_s`.
    """

    min_iters: int = 20
    min_time_s: float = 2.0
    max_time_s: float = 30.0
    max_iters: int = 100_000
    target_rel_halfwidth: float = 0.05
    check_every: int = 20

    def __post_init__(self) -> None:
        for name in ("min_iters", "max_iters", "check_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StopRule.{name} must be a positive integer, got {value!r}")
        for name in ("min_time_s", "max_time_s", "target_rel_halfwidth"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"StopRule.{name} must be a finite number >= 0, got {value!r}")
        if self.max_time_s <= 0 or self.target_rel_halfwidth <= 0:
            raise ValueError("StopRule.max_time_s and StopRule.target_rel_halfwidth must be > 0")
        if self.min_iters > self.max_iters:
            raise ValueError(f"StopRule.min_iters ({self.min_iters}) exceeds max_iters ({self.max_iters})")
        if self.min_time_s > self.max_time_s:
            raise ValueError(f"StopRule.min_time_s ({self.min_time_s}) exceeds max_time_s ({self.max_time_s})")

    def decide(self, samples: Sequence[float], elapsed_s: float) -> str | None:
        """None to keep going, else why to stop: "iteration-cap", "time-cap" or "ci-target-met"."""
        n = len(samples)
        if n >= self.max_iters:
            return "iteration-cap"
        if elapsed_s >= self.max_time_s:
            return "time-cap"
        if n < self.min_iters or elapsed_s < self.min_time_s or n % self._check_interval(n) != 0:
            return None
        return "ci-target-met" if self._p95_precise_enough(samples) else None

    def _check_interval(self, n: int) -> int:
        """`check_every`, widened to about n/10 for long runs.

        One check costs O(n); checking every `check_every` samples would make the total cost quadratic in n, a
        long run spending most of its time bootstrapping. Spacing checks by ~10% of n keeps it linear in n.
        """
        return self.check_every * max(1, n // (10 * self.check_every))

    def _p95_precise_enough(self, samples: Sequence[float]) -> bool:
        low, high = bootstrap_ci(samples, "p95", n_boot=_STOP_RULE_BOOTS)
        # Multiplied out rather than divided so an all-zero sample (p95 == 0, width 0) counts as precise.
        return (high - low) / 2.0 <= self.target_rel_halfwidth * abs(percentile(samples, 95))


def run_until_stopped(
    fn: Callable[[], float],
    rule: StopRule,
    clock: Callable[[], float] = time.perf_counter,
    on_sample: Callable[[float], None] | None = None,
) -> tuple[list[float], str]:
    """Call `fn` (which returns one iteration's duration in seconds) until `rule` says stop.

    Returns the raw samples and the stop reason. `elapsed` is wall time from `clock`, so it includes the
    caller's overhead between iterations, which is what the time caps are meant to bound.
    """
    samples: list[float] = []
    start = clock()
    while True:
        duration = float(fn())
        samples.append(duration)
        if on_sample is not None:
            on_sample(duration)
        reason = rule.decide(samples, clock() - start)
        if reason is not None:
            return samples, reason


def ratio_ci(numerator: Sequence[float], denominator: Sequence[float], confidence: float = 0.95,
             times: tuple[Sequence[float], Sequence[float]] | None = None) -> tuple[float, float, float]:
    """Ratio of two groups of positive measurements (e.g. QPS in repeated windows) with a confidence interval.

    Without `times`: Welch's t-interval on the logarithms, mapped back; the point estimate is the ratio of
    geometric means, exact for log-normal noise, and unlike a bootstrap it stays honest with the handful of
    repeats a load test affords (a bootstrap of 4 values gives far too narrow intervals).

    With `times` (when each value was measured, for the numerator and the denominator group): least squares of
    log(value) on a group indicator and a linear time trend, so a host that slows down steadily over the check
    neither biases the ratio nor widens its interval; t-interval on the indicator's coefficient.
    """
    num, den = _as_array(numerator), _as_array(denominator)
    if (num <= 0).any() or (den <= 0).any():
        raise ValueError("ratio_ci needs positive values")
    if len(num) < 2 or len(den) < 2:
        raise ValueError(f"ratio_ci needs >= 2 values per group (got {len(num)} and {len(den)})")
    num, den = np.log(num), np.log(den)
    if times is not None:
        return _ratio_with_trend(num, den, times, confidence)
    from scipy import stats as sps

    point = float(np.exp(num.mean() - den.mean()))
    if num.var() == 0 and den.var() == 0:
        return point, point, point
    lo, hi = sps.ttest_ind(num, den, equal_var=False).confidence_interval(confidence)
    return point, float(np.exp(lo)), float(np.exp(hi))


def _ratio_with_trend(num: np.ndarray, den: np.ndarray, times: tuple[Sequence[float], Sequence[float]],
                      confidence: float) -> tuple[float, float, float]:
    from scipy import stats as sps

    t = np.concatenate([_as_array(times[0]), _as_array(times[1])])
    if len(t) != len(num) + len(den):
        raise ValueError("ratio_ci: times must give one time per value")
    y = np.concatenate([num, den])
    x = np.column_stack([np.ones_like(y), np.r_[np.ones(len(num)), np.zeros(len(den))], t - t.mean()])
    dof = len(y) - x.shape[1]
    if dof < 1:
        raise ValueError("ratio_ci with times needs >= 4 values in all")
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    cov = float(resid @ resid) / dof * np.linalg.inv(x.T @ x)
    half = sps.t.ppf((1 + confidence) / 2, dof) * np.sqrt(cov[1, 1])
    return float(np.exp(coef[1])), float(np.exp(coef[1] - half)), float(np.exp(coef[1] + half))


def window_rate_ci(
    counts_per_window: Sequence[float], window_s: float, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean rate over fixed windows (e.g. requests completed in each 2 s) and its t confidence interval.

    Returns (mean rate, low, high) in events per second: mean ± t(k-1) · s / √k over the k per-window rates,
    the low end clipped at 0. Student's t rather than a bootstrap because a load-test level yields only a handful
    of windows: a bootstrap of k values resamples nothing but those k, and its percentile interval ignores that
    the spread itself is estimated from k values, so it comes out too narrow (by far for k < 10); the t quantile
    pays for that. Each window's count sums many requests, so the rates are near normal, which t assumes.
    """
    counts = _as_array(counts_per_window)
    if counts.size < 2:
        raise ValueError(f"window_rate_ci needs >= 2 windows (got {counts.size})")
    if (counts < 0).any():
        raise ValueError("window_rate_ci: counts must be >= 0")
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_rate_ci: window_s must be a finite number > 0, got {window_s}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    from scipy import stats as sps

    rates = counts / window_s
    mean = float(rates.mean())
    half = float(sps.t.ppf((1 + confidence) / 2, rates.size - 1) * rates.std(ddof=1) / math.sqrt(rates.size))
    return mean, max(0.0, mean - half), mean + half


def hierarchical_bootstrap_distribution(groups: Sequence[Sequence[float]], stat: str, n_boot: int = 1000,
                                        seed: int = 0) -> np.ndarray:
    """The `n_boot` resampled values of `stat` behind hierarchical_bootstrap_ci (same draws for the same seed),
    for statistics of two independent sets of groups, such as the ratio B/A of two runs' P95."""
    _check_bootstrap_args(stat, n_boot, 0.95)
    return _bootstrap_distribution(_as_groups(groups), stat, n_boot, np.random.default_rng(seed))
