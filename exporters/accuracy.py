"""Accuracy statistics for the parity gate: intervals that say how far a sample's figures can be trusted.

A variant is judged against the FP32 reference on the same texts, so its accuracy change is a paired
difference: most texts get the same answer from both and only the discordant ones carry information.
numpy only (the interval formulas are closed-form).
"""

from __future__ import annotations

import math

import numpy as np

from bench.core.errors import ConfigError

Z95 = 1.96  # the two-sided 95 % normal quantile, as rounded in the usual tables and hand computations


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (stays inside [0, 1] and is sane at k = 0 or n)."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"wilson needs 0 <= k <= n and n >= 1 (got k={k}, n={n})")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_table(correct_ref: np.ndarray, correct_var: np.ndarray) -> tuple[int, int, int, int]:
    """Counts (both right, only the reference right, only the variant right, both wrong) over the same items."""
    ref, var = np.asarray(correct_ref, dtype=bool), np.asarray(correct_var, dtype=bool)
    if ref.shape != var.shape or ref.ndim != 1 or len(ref) < 1:
        raise ValueError(f"paired arrays must be 1-D, non-empty and of one length (got {ref.shape}, {var.shape})")
    return (int(np.sum(ref & var)), int(np.sum(ref & ~var)), int(np.sum(~ref & var)), int(np.sum(~ref & ~var)))


def newcombe_phi(both: int, ref_only: int, var_only: int, neither: int) -> float:
    """The correlation between the two answers, as Newcombe's method 10 uses it (shrunk towards 0 by N/2 when
    positive, which keeps the interval from collapsing when nearly every item agrees)."""
    denom = (both + ref_only) * (var_only + neither) * (both + var_only) * (ref_only + neither)
    if denom == 0:
        return 0.0
    cross = both * neither - ref_only * var_only
    n = both + ref_only + var_only + neither
    if cross > 0:
        cross = max(cross - n / 2, 0.0)
    return cross / math.sqrt(denom)


def paired_delta(correct_ref: np.ndarray, correct_var: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """Variant accuracy minus reference accuracy on the same items, with its interval: (delta, low, high).

    Newcombe's method 10 for paired proportions (Newcombe 1998, Statistics in Medicine 17:2635; the form in
    Altman et al., Statistics with Confidence): each accuracy's Wilson interval, combined by square-and-add with
    the answers' correlation phi. Unlike a normal interval on the paired differences it does not shrink to zero
    width when no item changes answer, and it keeps within [-1, 1].
    """
    both, ref_only, var_only, neither = paired_table(correct_ref, correct_var)
    n = both + ref_only + var_only + neither
    p_var, p_ref = (both + var_only) / n, (both + ref_only) / n
    (l_var, u_var), (l_ref, u_ref) = wilson(both + var_only, n, z), wilson(both + ref_only, n, z)
    phi = newcombe_phi(both, ref_only, var_only, neither)
    delta = p_var - p_ref
    low = delta - math.sqrt(max(0.0, (p_var - l_var) ** 2 - 2 * phi * (p_var - l_var) * (u_ref - p_ref)
                                + (u_ref - p_ref) ** 2))
    high = delta + math.sqrt(max(0.0, (u_var - p_var) ** 2 - 2 * phi * (u_var - p_var) * (p_ref - l_ref)
                                 + (p_ref - l_ref) ** 2))
    return delta, max(-1.0, low), min(1.0, high)


def accuracy_floor(reference_accuracy: float | None, accuracy: float | None, max_drop: float | None,
                   synthetic: bool) -> dict:
    """The floor verdict, after MLPerf's "keep at least 99 % of FP32" but in absolute points: a variant fails when
    it scores more than `max_drop` (a fraction: 0.01 = 1 point) below the reference on the same texts."""
    if synthetic:
        return {"max_drop": max_drop, "passed": None, "reason": "not judged: synthetic weights, labels mean nothing"}
    if max_drop is None:
        return {"max_drop": None, "passed": None, "reason": "not judged: no accuracy floor set"}
    drop = reference_accuracy - accuracy
    side = "below" if drop > 0 else "above" if drop < 0 else "from"
    where = (f"accuracy {accuracy:.3f} is {abs(drop) * 100:.1f} points {side} FP32's {reference_accuracy:.3f} "
             f"(floor: {max_drop * 100:.1f})")
    return {"max_drop": max_drop, "passed": not drop > max_drop + 1e-12, "reason": where}


def check_max_drop(max_drop: float | None) -> None:
    """A floor is a fraction of the items (0.01 = 1 point) or None for 'not judged'."""
    if max_drop is not None and not 0.0 <= max_drop < 1.0:
        raise ConfigError(f"max_accuracy_drop must be a fraction in [0, 1), e.g. 0.01 for 1 point (got {max_drop})")


def assess(reference_logits: np.ndarray, logits: np.ndarray, labels, synthetic: bool,
           max_accuracy_drop: float | None) -> dict:
    """A variant's logits against the reference's on the same labelled texts: agreement, |Δlogit|, and (for real
    weights only, a twin's labels meaning nothing) accuracy with intervals and the accuracy-floor verdict."""
    check_max_drop(max_accuracy_drop)
    reference_logits, logits = np.asarray(reference_logits), np.asarray(logits)
    if reference_logits.shape != logits.shape or len(logits) < 1:
        raise ValueError(f"logits must be non-empty and of one shape (got {reference_logits.shape}, {logits.shape})")
    if not synthetic and len(labels) != len(logits):
        raise ValueError(f"{len(labels)} labels for {len(logits)} rows of logits")
    ref_pred, pred = reference_logits.argmax(-1), logits.argmax(-1)
    n, agree = len(logits), int(np.sum(ref_pred == pred))
    diff = np.abs(reference_logits - logits)
    out = {"n": n, "label_agreement": agree / n, "agreement_ci": list(wilson(agree, n)),
           "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
           "accuracy": None, "accuracy_ci": None, "reference_accuracy": None,
           "accuracy_delta": None, "accuracy_delta_ci": None}
    if not synthetic:
        out.update(accuracy_figures(ref_pred == np.asarray(labels), pred == np.asarray(labels)))
    out["floor"] = accuracy_floor(out["reference_accuracy"], out["accuracy"], max_accuracy_drop, synthetic)
    return out


def accuracy_figures(correct_ref: np.ndarray, correct: np.ndarray) -> dict:
    """Accuracy with its Wilson interval, the reference's, and the paired change between them."""
    n, k = len(correct), int(np.sum(correct))
    delta, low, high = paired_delta(correct_ref, correct)
    return {"accuracy": k / n, "accuracy_ci": list(wilson(k, n)),
            "reference_accuracy": float(np.mean(correct_ref)),
            "accuracy_delta": delta, "accuracy_delta_ci": [low, high]}
