"""A backend that sleeps a known time (and fault-injecting variants) for testing the harness and service.

options: sleep_s (per batch, default 0.01), per_item_s (added per item), fault: crash | hang | oom | raise,
fault_at: "load" or "infer" (default "infer"), labels (default 2), new_shape_s (a one-off cost the first time a
thread calls with a shape, as cuDNN's attention graphs cached per thread charge; default 0), stall_after and
stall_s (after that many calls, every call takes stall_s longer: a service that does not recover).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Mapping

import numpy as np

from bench.backends.base import Backend
from bench.core.signature import IDS


class FakeBackend(Backend):
    def load(self) -> None:
        self.opts = dict(self.config.options)
        self.shapes_seen: set = set()  # (thread id, shape): what a per-thread shape cache holds
        self.new_shape_calls = self.calls = 0
        if self.opts.get("fault_at") == "load":
            self._fault()

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        ids = inputs[IDS]
        batch = len(ids)
        if self.opts.get("fault") and self.opts.get("fault_at", "infer") == "infer":
            self._fault()
        key = (threading.get_ident(), ids.shape)
        new = key not in self.shapes_seen
        self.shapes_seen.add(key)
        self.new_shape_calls += new
        self.calls += 1
        stalled = self.calls > int(self.opts.get("stall_after", 1 << 62))
        time.sleep(float(self.opts.get("sleep_s", 0.01)) + batch * float(self.opts.get("per_item_s", 0.0)) +
                   new * float(self.opts.get("new_shape_s", 0.0)) + stalled * float(self.opts.get("stall_s", 0.0)))
        logits = np.zeros((batch, int(self.opts.get("labels", 2))), dtype=np.float32)
        logits[:, 1] = ids.sum(axis=1) % 7 / 7.0  # deterministic, input-dependent
        return logits

    def _fault(self) -> None:
        fault = self.opts.get("fault")
        if fault == "crash":
            os._exit(70)  # like a segfaulting native library: no Python cleanup, no result
        if fault == "hang":
            time.sleep(3600)
        if fault == "oom":
            hog = []
            while True:  # bounded by the worker's memory limit (RLIMIT_AS) → MemoryError or a kill
                hog.append(np.ones(64 * 2**20, dtype=np.uint8))
        if fault == "raise":
            raise RuntimeError("injected backend failure")
