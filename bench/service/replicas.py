"""Model replicas as worker processes: each holds its own backend with its own intra-op threads, pinned to its own
cores, and is fed over a pipe by one of the front's batcher threads (one admission queue, one batching policy).

Why processes, not R sessions in one process: the front's event loop, tokeniser and R batcher threads share one
GIL with the model calls' Python glue; separate processes keep the replicas independent, make a crashed native
library kill one replica instead of the service, and let each be pinned with `os.sched_setaffinity`.

A replica that dies (or runs past `inference_timeout_s`) fails only the batch it held: its requests get 500/504,
the batcher thread that owns it starts a fresh process, and the other replicas keep serving meanwhile.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from bench.backends import Backend, BackendConfig
from bench.measure.host import available_cores

log = logging.getLogger("bench.service")
LOAD_TIMEOUT_S = 600.0  # far past a cold load, ORT's or torch's with a first-time import (docs/measurements.md)


SERVING_INFO = "serving_info"  # a message asking the replica's backend for its serving_info()


class ReplicaDied(RuntimeError):
    """The replica process exited or stopped answering; its batch fails and the process is restarted."""


@dataclass(frozen=True)
class Placement:
    """Where the replicas run: one core set per replica, or None each when the cores cannot be split."""

    cores: tuple[tuple[int, ...] | None, ...]
    oversubscribed: bool

    def describe(self) -> list:
        return [list(c) if c is not None else "any" for c in self.cores]


def place(replicas: int, threads: int | None, cores: Sequence[int] | None = None) -> Placement:
    """Disjoint core sets of `threads` cores per replica while R × T fits the cores this process may use; past that
    nobody is pinned (pinning two replicas to one core would serialise them) and the placement says so. `threads`
    None (the runtime decides, as a lone --model-process instance does): nobody is pinned either."""
    if threads is None:
        return Placement((None,) * replicas, False)
    cores = list(cores if cores is not None else available_cores())
    if replicas * threads > len(cores):
        return Placement((None,) * replicas, True)
    return Placement(tuple(tuple(cores[i * threads:(i + 1) * threads]) for i in range(replicas)), False)


def _replica_main(conn, config: BackendConfig, cores: tuple[int, ...] | None) -> None:
    """The replica process: pin, load, say ready, then answer one batch per message until told to stop."""
    from bench import backends
    from bench.core.quiet import quiet_libraries

    quiet_libraries()
    if cores is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    try:
        backend = backends.create(config)
        backend.load()
    except Exception as exc:  # noqa: BLE001  any load failure is reported to the front, which refuses to start
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while (inputs := conn.recv()) is not None:
        try:
            if inputs == SERVING_INFO:
                conn.send(("ok", backend.serving_info()))
                continue
            t0 = time.perf_counter()
            logits = backend.infer(inputs)
            conn.send(("ok", logits, time.perf_counter() - t0))  # the call's own time, here, without the front
        except Exception as exc:  # noqa: BLE001  a failed call fails its batch only, as in one process
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    backend.close()


class ReplicaBackend(Backend):
    """A Backend whose model lives in a child process (the batcher sees an ordinary backend)."""

    def __init__(self, config: BackendConfig, index: int, cores: tuple[int, ...] | None = None,
                 call_timeout_s: float = 30.0) -> None:
        super().__init__(config)
        self.index, self.cores, self.call_timeout_s = index, cores, call_timeout_s
        self.restarts, self.pid = 0, None
        self.last_compute_s: float | None = None  # the last model call's time in the replica's own process
        self._proc = self._conn = None
        self.hung = False  # set by the send watchdog when it killed this process

    def load(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # fork would copy the front's threads and ORT state
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_replica_main, args=(child, self.config, self.cores),
                                 name=f"bench-replica-{self.index}", daemon=True)
        self._proc.start()
        child.close()
        self.hung = False
        kind, value, *_ = self._receive(LOAD_TIMEOUT_S, "load")
        if kind != "ready":
            self.close()
            raise RuntimeError(f"replica {self.index} could not load: {value}")
        self.pid = value

    # Model calls the batcher may have sent at once: the one running and the next, waiting in the pipe (answers
    # come back in order). The pipe's buffer holds the small answers; a large input blocks send() until read.
    depth = 2

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        self.send(inputs)
        return self.receive()

    def send(self, inputs: Mapping[str, np.ndarray]) -> None:
        """A call's inputs into the pipe. A payload past the pipe's buffer (a 32 × 512 INT64 batch is) blocks until
        the replica reads it, so a replica that hangs would hold this thread for ever and the call's timeout would
        never start: a watchdog kills it after the call ahead plus this one's time, and the send then fails."""
        watchdog = threading.Timer(2 * self.call_timeout_s, self._hung)
        watchdog.daemon = True
        watchdog.start()
        try:
            self._conn.send(dict(inputs))
        except (OSError, ValueError) as exc:
            if self.hung:
                raise ReplicaDied(f"replica {self.index} read no input for {2 * self.call_timeout_s:g} s "
                                  f"(hung; killed)") from None
            raise ReplicaDied(f"replica {self.index} is gone ({exc})") from None
        finally:
            watchdog.cancel()
            watchdog.join()  # a kill under way ends (and reaps the process) before anyone asks whether it lives

    def _hung(self) -> None:
        self.hung = True
        self.kill()

    def receive(self) -> np.ndarray:
        """The answer to the oldest call sent; `call_timeout_s` counts from now (the call before it has ended)."""
        kind, value, *compute = self._receive(self.call_timeout_s, "model call")
        if kind == "error":
            raise RuntimeError(f"replica {self.index}: {value}")
        self.last_compute_s = compute[0] if compute else None
        return value

    def _receive(self, timeout_s: float, what: str):
        try:
            if self._conn.poll(timeout_s):
                return self._conn.recv()
        except (EOFError, OSError):
            pass
        code = self._proc.exitcode if self._proc is not None else None
        reason = f"exited with code {code}" if code is not None else f"gave no answer within {timeout_s:g} s"
        self.kill()
        raise ReplicaDied(f"replica {self.index} {reason} during its {what}")

    def serving_info(self) -> dict:
        """The replica's own backend's serving_info(); ask only while no model call is in flight (answers come
        back in order)."""
        self._conn.send(SERVING_INFO)
        return self.receive()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def recover(self) -> None:
        """After a failed batch: if the process is gone, start a fresh one (the batcher thread calls this)."""
        if self.alive:
            return
        self.restarts += 1
        log.warning("replica %d died; restarting it (restart %d)", self.index, self.restarts)
        started = time.perf_counter()
        self.load()
        log.warning("replica %d is back after %.1f s (pid %s)", self.index, time.perf_counter() - started, self.pid)

    def kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)

    def close(self) -> None:
        if self._conn is not None and self.alive:
            try:
                self._conn.send(None)
                self._proc.join(10)
            except (OSError, ValueError):
                pass
        self.kill()
        if self._conn is not None:
            self._conn.close()


def start_replicas(config: BackendConfig, replicas: int, threads: int | None,
                   call_timeout_s: float) -> tuple[list, Placement]:
    """R loaded replicas of `config` with `threads` intra-op threads each, placed on disjoint cores where they fit."""
    placement = place(replicas, threads)
    if placement.oversubscribed:
        log.warning("%d replicas × %d threads exceed the %d cores available: replicas are not pinned",
                    replicas, threads, len(available_cores()))
    members = [ReplicaBackend(replace(config, threads=threads), i, cores, call_timeout_s)
               for i, cores in enumerate(placement.cores)]
    try:
        for member in members:
            member.load()
    except Exception:
        for member in members:
            member.close()
        raise
    return members, placement
