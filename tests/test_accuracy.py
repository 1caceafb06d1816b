"""Accuracy statistics: Wilson and paired (Newcombe) intervals against published values and by simulated
coverage, and the accuracy floor of the parity gate."""

import numpy as np
import pytest

from bench.core.errors import ConfigError
from exporters.accuracy import assess, paired_delta, wilson
from exporters.parity import Thresholds, compare

LOOSE = Thresholds(0.5, 10.0)  # agreement and |Δlogit| never fail: only the accuracy floor is under test


@pytest.mark.parametrize("k,n,low,high", [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", score method
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_published_values(k, n, low, high):
    assert wilson(k, n) == pytest.approx((low, high), abs=1e-4)


def test_wilson_by_hand_and_at_the_edges():
    # k=8, n=10, z=1.96: centre (0.8 + 3.8416/20) / (1 + 3.8416/10) = 0.716738,
    # half 1.96 / 1.38416 * sqrt(0.8 * 0.2 / 10 + 3.8416/400) = 0.226581
    assert wilson(8, 10) == pytest.approx((0.490157, 0.943319), abs=1e-6)
    assert wilson(10, 10)[1] == 1.0 and wilson(0, 10)[0] == 0.0
    assert wilson(50, 100, z=2.576)[1] - wilson(50, 100, z=2.576)[0] > wilson(50, 100)[1] - wilson(50, 100)[0]
    for k, n in ((-1, 10), (11, 10), (0, 0)):
        with pytest.raises(ValueError):
            wilson(k, n)


def table(both: int, ref_only: int, var_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired correctness arrays with the given counts (reference right/wrong × variant right/wrong)."""
    ref = np.array([True] * both + [True] * ref_only + [False] * var_only + [False] * neither)
    var = np.array([True] * both + [False] * ref_only + [True] * var_only + [False] * neither)
    return ref, var


@pytest.mark.parametrize("counts,low,high", [
    # Newcombe (1998), "Improved confidence intervals for the difference between binomial proportions based on
    # paired data", method 10; his difference is reference minus variant, ours the other way round
    ((36, 12, 2, 0), -0.3404, -0.0569), ((18, 12, 2, 18), -0.3290, -0.0562),
    ((53, 0, 0, 1), -0.0729, 0.0729), ((0, 30, 0, 0), -1.0, -0.8395),
])
def test_paired_delta_matches_newcombe_method_10(counts, low, high):
    delta, lo, hi = paired_delta(*table(*counts))
    assert delta == pytest.approx((counts[2] - counts[1]) / sum(counts))
    assert (lo, hi) == pytest.approx((low, high), abs=1e-4)


def test_paired_delta_signs_and_order_independence():
    ref, var = table(800, 40, 5, 155)  # the variant loses 35 of 1000 items net
    delta, low, high = paired_delta(ref, var)
    assert delta == pytest.approx(-0.035) and low < delta < high < 0  # clearly worse
    assert paired_delta(var, ref) == pytest.approx((0.035, -high, -low))  # swapping sides mirrors the interval
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ref))
    assert paired_delta(ref[order], var[order]) == pytest.approx((delta, low, high))  # counts are all that count
    same = paired_delta(ref, ref)
    assert same[0] == 0 and same[1] < 0 < same[2] and same[2] - same[1] < 0.01  # nothing changed: narrow, about 0
    with pytest.raises(ValueError):
        paired_delta(ref, var[:-1])


def coverage_of_wilson(p: float, n: int, draws: int, rng) -> float:
    bounds = np.array([wilson(k, n) for k in range(n + 1)])  # one interval per possible count
    k = rng.binomial(n, p, size=draws)
    return float(np.mean((bounds[k, 0] <= p) & (p <= bounds[k, 1])))


@pytest.mark.parametrize("p,n", [(0.5, 100), (0.85, 256), (0.85, 1000), (0.97, 500)])
def test_wilson_covers_the_true_proportion_about_95_percent_of_the_time(p, n):
    coverage = coverage_of_wilson(p, n, draws=20000, rng=np.random.default_rng(1))
    assert 0.93 <= coverage <= 0.97, coverage


def test_a_wald_interval_would_fail_the_same_coverage_check():
    """The check has teeth: the textbook p ± z·sqrt(p(1-p)/n) under-covers near the edge of [0, 1]."""
    rng = np.random.default_rng(1)
    p, n = 0.97, 60
    k = rng.binomial(n, p, size=20000)
    half = 1.96 * np.sqrt(k / n * (1 - k / n) / n)
    wald = float(np.mean((k / n - half <= p) & (p <= k / n + half)))
    assert wald < 0.93 <= coverage_of_wilson(p, n, 20000, np.random.default_rng(1))


def test_paired_delta_covers_the_true_difference():
    """Reference right with p 0.85; the variant flips 3 % of its right answers and 1 % of its wrong ones."""
    rng = np.random.default_rng(2)
    n, draws, hits = 400, 2000, 0
    true_delta = -0.85 * 0.03 + 0.15 * 0.01
    for _ in range(draws):
        ref = rng.random(n) < 0.85
        flip = np.where(ref, rng.random(n) < 0.03, rng.random(n) < 0.01)
        _, low, high = paired_delta(ref, ref ^ flip)
        hits += low <= true_delta <= high
    assert 0.93 <= hits / draws <= 0.985, hits / draws


def logits_for(predictions: np.ndarray) -> np.ndarray:
    """Two-class logits whose argmax is `predictions`."""
    return np.stack([1.0 - predictions, predictions.astype(float)], axis=1)


def labelled_case(n: int = 1000, ref_wrong: int = 150, extra_wrong: int = 0):
    """Labels, reference logits wrong on `ref_wrong` items and variant logits wrong on `extra_wrong` more."""
    labels = np.arange(n) % 2
    ref_pred, var_pred = labels.copy(), labels.copy()
    ref_pred[:ref_wrong] ^= 1
    var_pred[:ref_wrong + extra_wrong] ^= 1
    return logits_for(ref_pred), logits_for(var_pred), labels


def test_synthetic_weights_hide_accuracy_but_not_agreement():
    ref, var, labels = labelled_case(extra_wrong=100)
    out = assess(ref, var, labels, synthetic=True, max_accuracy_drop=0.01)
    for key in ("accuracy", "accuracy_ci", "reference_accuracy", "accuracy_delta", "accuracy_delta_ci"):
        assert out[key] is None, key
    assert out["floor"]["passed"] is None and "synthetic" in out["floor"]["reason"]
    assert out["label_agreement"] == 0.9 and out["agreement_ci"][0] < 0.9 < out["agreement_ci"][1]
    assert out["max_abs_diff"] == 1.0 and out["mean_abs_diff"] == pytest.approx(0.1)


def test_real_weights_report_accuracy_intervals_and_judge_the_floor():
    ref, var, labels = labelled_case(extra_wrong=31)
    out = assess(ref, var, labels, synthetic=False, max_accuracy_drop=0.01)
    assert (out["reference_accuracy"], out["accuracy"]) == (0.85, 0.819)
    assert out["accuracy_delta"] == pytest.approx(-0.031)
    assert out["accuracy_delta_ci"][0] < -0.031 < out["accuracy_delta_ci"][1] < 0
    assert out["accuracy_ci"][0] < 0.819 < out["accuracy_ci"][1]
    assert out["floor"] == {"max_drop": 0.01, "passed": False,
                            "reason": "accuracy 0.819 is 3.1 points below FP32's 0.850 (floor: 1.0)"}
    assert assess(ref, var, labels, False, max_accuracy_drop=0.05)["floor"]["passed"] is True
    unjudged = assess(ref, var, labels, False, max_accuracy_drop=None)["floor"]
    assert unjudged["passed"] is None and unjudged["max_drop"] is None


def test_a_drop_of_exactly_the_floor_passes():
    ref, var, labels = labelled_case(extra_wrong=10)  # 10 of 1000 items: exactly 1 point
    assert assess(ref, var, labels, False, max_accuracy_drop=0.01)["floor"]["passed"] is True
    ref, var, labels = labelled_case(extra_wrong=11)
    assert assess(ref, var, labels, False, max_accuracy_drop=0.01)["floor"]["passed"] is False


@pytest.mark.parametrize("bad", [-0.01, 1.0, 2.0])
def test_a_nonsense_floor_is_refused(bad):
    ref, var, labels = labelled_case()
    with pytest.raises(ConfigError, match="max_accuracy_drop"):
        assess(ref, var, labels, False, max_accuracy_drop=bad)


def test_compare_keeps_its_keys_and_fails_a_variant_below_the_floor():
    ref, var, labels = labelled_case(extra_wrong=31)
    result = compare(ref, var, labels, LOOSE, synthetic=False)  # the default floor: 1 point
    old_keys = {"n", "label_agreement", "max_abs_diff", "mean_abs_diff", "thresholds", "accuracy", "passed",
                "failures"}
    assert old_keys <= result.keys() and {"agreement_ci", "accuracy_delta_ci", "floor"} <= result.keys()
    assert result["passed"] is False
    assert result["failures"] == ["accuracy 0.819 is 3.1 points below FP32's 0.850 (floor: 1.0)"]
    assert compare(ref, var, labels, LOOSE, synthetic=False, max_accuracy_drop=0.05)["passed"] is True
    assert compare(ref, var, labels, LOOSE, synthetic=True)["passed"] is True  # a twin is not judged on labels


def test_compare_still_fails_on_agreement_and_logit_distance():
    ref, var, labels = labelled_case(extra_wrong=100)
    result = compare(ref, var, labels, Thresholds(0.95, 0.5), synthetic=True)
    assert result["passed"] is False and len(result["failures"]) == 2
    assert result["failures"][0].startswith("label agreement 0.900") and "max |Δlogit|" in result["failures"][1]
