"""The service's admission queue and its batching rule, with Triton's dynamic-batcher semantics.

One bounded FIFO of texts for every model instance. A worker whose instance is free takes a batch under the queue's
lock, so it can see how many texts wait and when the oldest arrived before it takes any, and leave the rest at the
head for the next free instance (in arrival order; nothing goes back to the tail). The rule, as Triton's
`dynamic_batching { preferred_batch_size, max_queue_delay_microseconds }` states it:
- a batch of a preferred size that can be formed is sent at once, the largest such;
- else a full batch (`max_batch`) is sent at once;
- else the batch waits until the oldest queued text has waited `max_delay_s` (counted from its arrival, not from when
  a worker first looked), then goes with what is there; with no delay (the default) it goes at once: greedy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, Protocol, Sequence, TypeVar


class Queued(Protocol):
    enqueued: float  # time.perf_counter() at arrival


T = TypeVar("T", bound=Queued)


class Full(Exception):
    """No room for every text of the request (or the queue is closed)."""


def batch_size(waiting: int, max_batch: int, preferred: Sequence[int], due: bool) -> int:
    """How many of `waiting` queued texts to send now (0: keep waiting). `due`: the oldest has waited its delay."""
    formable = [p for p in preferred if p <= waiting]
    if formable:
        return max(formable)
    if waiting >= max_batch or (due and waiting):
        return min(waiting, max_batch)
    return 0


class AdmissionQueue(Generic[T]):
    """A bounded FIFO that hands out whole batches by `batch_size`'s rule; all or none of a request is admitted."""

    def __init__(self, maxsize: int, max_batch: int, max_delay_s: float = 0.0,
                 preferred: Sequence[int] = ()) -> None:
        self.maxsize, self.max_batch, self.max_delay_s = maxsize, max_batch, max_delay_s
        self.preferred = tuple(sorted(p for p in preferred if p <= max_batch))
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def no_room(self, n: int = 1) -> str | None:
        """Why `n` more texts cannot be admitted now (None: they can)."""
        if self.closed:
            return "the service is shutting down"
        if len(self._items) + n > self.maxsize:
            return f"the queue is full ({self.maxsize} texts waiting)"
        return None

    def put_all(self, items: Sequence[T]) -> None:
        with self._cond:
            why = self.no_room(len(items))
            if why:
                raise Full(why)
            self._items.extend(items)
            self._cond.notify()

    def requeue(self, items: Sequence[T]) -> None:
        """Put texts already admitted back at the head (their replica died holding them), whatever the bound: they
        were counted when they came in."""
        with self._cond:
            self._items.extendleft(reversed(items))
            self._cond.notify()

    def close(self) -> None:
        """Admit nothing more; what is queued is still handed out, and then every taker is told to stop."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self, block: bool = True) -> tuple[list[T], bool]:
        """The next batch by the rule, and whether the queue is closed and empty (the taker should stop). With
        `block` False: only a batch that may go now, else an empty list."""
        with self._cond:
            while True:
                waiting = len(self._items)
                now = time.perf_counter()
                due = self.closed or (waiting and now >= self._items[0].enqueued + self.max_delay_s)
                n = batch_size(waiting, self.max_batch, self.preferred, bool(due))
                if n:
                    batch = [self._items.popleft() for _ in range(n)]
                    if self._items:  # leftovers stay at the head: another free instance may take them now
                        self._cond.notify()
                    return batch, self.closed and not self._items
                if self.closed and not waiting:
                    self._cond.notify_all()
                    return [], True
                if not block:
                    return [], False
                self._cond.wait(self._items[0].enqueued + self.max_delay_s - now if waiting else None)
