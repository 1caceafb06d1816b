"""Shape buckets: the few (batch, length) shapes a service sends its model, so every one can be warmed before it
serves and none is met for the first time under load.

A service that pads each batch to its own longest text, in batches of any size, meets thousands of distinct shapes;
engines that build or cache something per shape (cuDNN attention graphs, kept per thread; OpenVINO's per-shape
executors; TensorRT profiles) then pay that cost while serving. The two device kinds pay for different things:
- CPU: every pad token costs as much as a real one, and a new shape costs little, so lengths step finely (8 tokens up
  to 128, where reviews live, 32 above) and a batch is never padded with empty rows: it runs as calls of bucket
  sizes (5 texts = 4 + 1).
- GPU: idle lanes are nearly free and new shapes are dear, so lengths step coarsely (multiples of 64) and a batch is
  padded with empty rows up to the next power of two.
Both cap the tokens of one call (`max_tokens`), which bounds the warm-up and the latency one batch can add (a CPU
gains next to nothing from batching, so its cap is one full-length text). The measurements behind the choice are in
docs/measurements.md (`python -m bench check serving`).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Sequence

from bench.core.errors import ConfigError
from bench.model.tokenize import MAX_TOKENS, counted, pack

CPU_LENGTHS = (*range(8, 129, 8), *range(160, MAX_TOKENS + 1, 32))
GPU_LENGTHS = tuple(range(64, MAX_TOKENS + 1, 64))
CPU_MAX_TOKENS, GPU_MAX_TOKENS = 512, 16384
# The share of pad tokens a call may carry: on a CPU a pad token costs as much as a real one, a GPU has idle lanes
CPU_MAX_PADDING, GPU_MAX_PADDING = 0.05, 1.0


def max_padding_for(device: str) -> float:
    return CPU_MAX_PADDING if device == "cpu" else GPU_MAX_PADDING


@dataclass(frozen=True)
class Buckets:
    """The shapes a service sends its model: batch sizes, sequence lengths, and the most tokens in one call."""

    batches: tuple[int, ...]
    lengths: tuple[int, ...]
    max_tokens: int
    pad_rows: bool  # True: a batch is padded with empty rows up to its bucket; False: split into bucket sizes

    def __post_init__(self) -> None:
        for name in ("batches", "lengths"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
                raise ConfigError(f"bucket {name} must be increasing positive integers, got {values!r}")
        if self.lengths[-1] < MAX_TOKENS:
            raise ConfigError(f"the longest length bucket must hold {MAX_TOKENS} tokens (got {self.lengths[-1]})")
        if self.batches[0] != 1:
            raise ConfigError(f"batch buckets must start at 1 (got {self.batches!r}): one text must have a shape")
        if self.max_tokens < MAX_TOKENS:
            raise ConfigError(f"max_tokens must be >= {MAX_TOKENS}: one full-length text must fit (got "
                              f"{self.max_tokens})")

    @classmethod
    def for_device(cls, device: str, max_batch: int) -> "Buckets":
        """The default set for a device kind ('cpu', or a GPU's 'cuda'/'tensorrt') and a service's max batch."""
        powers = tuple(sorted({1 << i for i in range(max_batch.bit_length()) if 1 << i <= max_batch} | {max_batch}))
        if device == "cpu":
            return cls(powers, CPU_LENGTHS, CPU_MAX_TOKENS, pad_rows=False)
        return cls(powers, GPU_LENGTHS, GPU_MAX_TOKENS, pad_rows=True)

    def length(self, tokens: int) -> int:
        """The bucket a call whose longest text has `tokens` tokens is padded to."""
        return self.lengths[min(bisect_left(self.lengths, tokens), len(self.lengths) - 1)]

    def rows(self, n: int) -> int:
        """How many rows the call carries for n texts (n ≤ the largest batch bucket)."""
        return self.batches[bisect_left(self.batches, n)] if self.pad_rows else n

    def fits(self, rows: int, length: int) -> bool:
        return rows <= self.batches[-1] and rows * length <= self.max_tokens

    def split(self, lengths: list[int]) -> list[list[int]]:
        """Indices of texts with these token counts cut into calls of bucket shapes, shortest first: on a CPU each
        call has a bucket's rows (5 texts: 4 + 1), on a GPU up to the largest bucket's, padded up; always
        rows × length ≤ max_tokens (a lone text always fits)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        calls, start = [], 0
        while start < len(order):
            left = len(order) - start
            sizes = range(min(left, self.batches[-1]), 0, -1) if self.pad_rows else \
                [b for b in reversed(self.batches) if b <= left]
            n = next((s for s in sizes if self.fits(self.rows(s), self.length(lengths[order[start + s - 1]]))), 1)
            calls.append(order[start:start + n])
            start += n
        return calls

    def shapes(self) -> list[tuple[int, int]]:
        """Every (rows, length) a call can have."""
        return [(b, n) for b in self.batches for n in self.lengths if self.fits(b, n)]

    def warmed(self, max_length: int | None) -> list[tuple[int, int]]:
        """The shapes a service warms before it is ready (and captures as CUDA graphs): those up to `max_length`
        tokens, or all."""
        return [s for s in self.shapes() if s[1] <= (max_length or s[1])]


def length_groups(lengths: list[int], max_padding: float) -> list[list[int]]:
    """Indices grouped by token length so each group's padded size is within (1 + max_padding) × its real
    tokens. On a CPU every pad token costs as much as a real one: batching ~80-char texts padded to the
    longest loses throughput (see the harness's batch sweep), so a mixed batch runs as a few tight groups
    (ServiceConfig.effective_max_padding holds the per-device budget)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if group and lengths[i] * (len(group) + 1) <= (1 + max_padding) * (sum(lengths[j] for j in group) + lengths[i]):
            group.append(i)
        else:
            groups.append([i])
    return groups


def plan_calls(lengths: list[int], max_padding: float, buckets: Buckets | None) -> list[list[int]]:
    """Texts (by token count) as model calls: length groups within the padding budget, each cut into bucket
    shapes when there are buckets; shortest group first. The service's batcher and the engine measurements of
    service-shaped batches (harness, tune) plan with this one function."""
    groups = sorted(length_groups(lengths, max_padding), key=min)
    if buckets is None:
        return groups
    return [[group[i] for i in call] for group in groups for call in buckets.split([lengths[i] for i in group])]


def call_shape(buckets: Buckets | None, texts: int, longest: int) -> tuple[int, int]:
    """(rows, length) of a call of `texts` texts whose longest has `longest` tokens."""
    return (buckets.rows(texts), buckets.length(longest)) if buckets else (texts, longest)


@dataclass(frozen=True)
class ServiceCall:
    """One model call as the service would make it: its packed inputs and how many of its rows are texts."""

    inputs: dict
    items: int


def service_calls(tokenizer, texts: Sequence[str], max_batch: int, max_padding: float,
                  buckets: Buckets | None) -> list[ServiceCall]:
    """The calls the service's batcher makes when `max_batch` texts at a time are queued, for every full chunk of
    `texts`: planned as the batcher plans them and packed to their bucket shapes."""
    calls = []
    for i in range(0, len(texts) - max_batch + 1, max_batch):
        _, encodings = counted(tokenizer, list(texts[i:i + max_batch]))
        lengths = [len(e.ids) for e in encodings]  # as packed: ≤ 512
        for group in plan_calls(lengths, max_padding, buckets):
            rows, width = call_shape(buckets, len(group), max(lengths[j] for j in group))
            calls.append(ServiceCall(pack(tokenizer, [encodings[j] for j in group], width, rows), len(group)))
    return calls
