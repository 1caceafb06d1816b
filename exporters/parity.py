"""The parity gate: every variant against PyTorch FP32 on labelled corpus texts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import numpy as np

from bench.core.errors import ConfigError
from bench.model.corpus import Workload
from bench.model.tokenize import encode
from exporters.accuracy import assess


@dataclass(frozen=True)
class Thresholds:
    """A variant passes when label agreement and max |Δlogit| vs torch FP32 are both within bounds."""

    min_agreement: float
    max_abs_diff: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_agreement <= 1.0 or self.max_abs_diff <= 0:
            raise ConfigError(f"bad parity thresholds: {self}")


# Float variants differ from torch only by kernel rounding; INT8 moves logits by quantisation noise.
# INT8 bounds are loose on purpose: on the twin, margins are small by construction, so a fair share of labels
# sit within quantisation noise of the boundary; a broken graph agrees on ~50 % and moves logits by O(margin).
DEFAULT_THRESHOLDS = {
    "fp32": Thresholds(0.99, 1e-3),
    "fp32-fused": Thresholds(0.99, 1e-2),
    "fp16": Thresholds(0.98, 5e-2),
    "int8": Thresholds(0.80, 1.0),
    "torch-int8": Thresholds(0.80, 1.0),
    # OpenVINO FP32 runs other kernels than torch (fused, reordered sums): rounding only, as ORT's fused graph
    "ov-fp32": Thresholds(0.99, 1e-2),
    # BF16 keeps 8 bits of mantissa: logits move by more than FP32 rounding, less than INT8 noise
    "ov-bf16": Thresholds(0.85, 1.0),
    "torch-bf16": Thresholds(0.85, 1.0),
    "ov-int8": Thresholds(0.80, 1.0),
}



@dataclass(frozen=True)
class VectorThresholds:
    """An embedding variant passes when its cosine similarity to the FP32 reference's vector, over the held-out
    texts, is at least `min_mean` on average and `min_any` for every text (the mean finds a broken graph, the
    minimum a few texts it breaks)."""

    min_mean: float
    min_any: float

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_any <= self.min_mean <= 1.0:
            raise ConfigError(f"bad cosine thresholds: {self}")


# Float variants round; INT8 and BF16 move vectors by quantisation noise, which a broken graph exceeds by far
# (unrelated vectors of one model sit at a cosine well below these).
EMBEDDING_THRESHOLDS = {
    "fp32": VectorThresholds(0.9999, 0.999), "fp32-fused": VectorThresholds(0.999, 0.99),
    "ov-fp32": VectorThresholds(0.999, 0.99), "fp16": VectorThresholds(0.995, 0.98),
    "int8": VectorThresholds(0.99, 0.95), "torch-int8": VectorThresholds(0.99, 0.95),
    "ov-int8": VectorThresholds(0.99, 0.95), "ov-bf16": VectorThresholds(0.99, 0.95),
    "torch-bf16": VectorThresholds(0.99, 0.95),
}


def cosines(reference: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [texts, dim] arrays."""
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(vectors, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return (a * b).sum(axis=1) / norms


def compare_vectors(reference: np.ndarray, vectors: np.ndarray, thresholds: VectorThresholds) -> dict:
    """Figures and verdict for one embedding variant: mean and minimum cosine to the reference's vectors."""
    cos = cosines(reference, vectors)
    mean, low = float(cos.mean()), float(cos.min())
    failures = []
    if mean < thresholds.min_mean:
        failures.append(f"mean cosine {mean:.5f} < {thresholds.min_mean}")
    if low < thresholds.min_any:
        failures.append(f"minimum cosine {low:.5f} < {thresholds.min_any}")
    return {"n": int(len(cos)), "cosine_mean": round(mean, 6), "cosine_min": round(low, 6),
            "max_abs_diff": float(np.abs(np.asarray(reference) - np.asarray(vectors)).max()),
            "thresholds": asdict(thresholds), "passed": not failures, "failures": failures}


def spearman(reference: np.ndarray, vectors: np.ndarray, scores) -> dict:
    """Spearman's correlation between gold pair scores and each pair's cosine (vectors: the first texts of every
    pair, then the second ones), with a 95 % interval by Fisher's z (standard error 1.06 / sqrt(n - 3), Fieller
    et al. 1957), for this variant and for the reference on the same pairs."""
    from scipy.stats import norm, spearmanr

    n = len(scores)

    def rho(v: np.ndarray) -> float:
        return float(spearmanr(cosines(v[:n], v[n:2 * n]), scores).statistic)

    mine, ref = rho(np.asarray(vectors)), rho(np.asarray(reference))
    half = float(norm.ppf(0.975)) * 1.06 / max(np.sqrt(n - 3), 1e-9)
    ci = [float(np.tanh(np.arctanh(np.clip(mine, -0.999999, 0.999999)) + s * half)) for s in (-1, 1)]
    return {"spearman": round(mine, 5), "spearman_ci": [round(c, 5) for c in ci],
            "reference_spearman": round(ref, 5), "pairs": n}


# With real weights a variant may lose at most this much accuracy against FP32 on the same texts (a fraction:
# 0.01 = 1 point), after MLPerf's rule that a quantised submission keeps 99 % of the FP32 reference's accuracy.
DEFAULT_MAX_ACCURACY_DROP = 0.01


def run_logits(infer: Callable[[Mapping[str, np.ndarray]], np.ndarray], tokenizer, workload: Workload,
               max_length: int, batch: int = 16, progress=None) -> np.ndarray:
    """Logits for every text, in batches padded to `max_length`."""
    out = []
    for start in range(0, len(workload), batch):
        chunk = workload.texts[start:start + batch]
        out.append(np.asarray(infer(encode(tokenizer, chunk, max_length=max_length)), dtype=np.float64))
        if progress is not None:
            progress.update(len(chunk))
    return np.concatenate(out)


def compare(reference: np.ndarray, logits: np.ndarray, labels, thresholds: Thresholds, synthetic: bool,
            max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP, why_not: str | None = None) -> dict:
    """Figures and verdict for one variant (exporters.accuracy.assess plus the thresholds); accuracy only where
    the weights are real (a twin's labels mean nothing). A variant fails on label agreement, on max |Δlogit|, or,
    with real weights, when its accuracy falls more than `max_accuracy_drop` below the reference's."""
    result = assess(reference, logits, labels, synthetic, max_accuracy_drop)
    if why_not and result["floor"]["passed"] is None:  # the reason the labels cannot judge this model
        result["floor"]["reason"] = why_not
    result["thresholds"] = asdict(thresholds)
    failures = []
    if result["label_agreement"] < thresholds.min_agreement:
        failures.append(f"label agreement {result['label_agreement']:.3f} < {thresholds.min_agreement}")
    if result["max_abs_diff"] > thresholds.max_abs_diff:
        failures.append(f"max |Δlogit| {result['max_abs_diff']:.4g} > {thresholds.max_abs_diff}")
    if result["floor"]["passed"] is False:
        failures.append(result["floor"]["reason"])
    result["passed"] = not failures
    result["failures"] = failures
    return result
