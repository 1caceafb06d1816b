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
            max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP) -> dict:
    """Figures and verdict for one variant (exporters.accuracy.assess plus the thresholds); accuracy only where
    the weights are real (a twin's labels mean nothing). A variant fails on label agreement, on max |Δlogit|, or,
    with real weights, when its accuracy falls more than `max_accuracy_drop` below the reference's."""
    result = assess(reference, logits, labels, synthetic, max_accuracy_drop)
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
