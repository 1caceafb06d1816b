"""A thread-safe LRU cache of answers keyed by normalised text (the article's hot-text cache, section 5.1)."""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from typing import Generic, TypeVar

from bench.core.errors import ConfigError

V = TypeVar("V")


def normalise(text: str) -> str:
    """NFKC, then strip and collapse every run of Unicode whitespace to one space.

    The model is fed this form too, so texts that differ only in full-width forms or spacing share one answer
    and one cache entry (the article's advice: normalise input so results are stable)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


class LruCache(Generic[V]):
    """Least-recently-used map with hit/miss counters; `size` 0 turns it off (nothing stored, nothing counted)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ConfigError(f"cache size must be >= 0 (got {size})")
        self.size = size
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def get(self, key: str) -> V | None:
        if not self.enabled:
            return None
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: V) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
