"""Locust users for the service: /api/sentiment for a classifier, /api/embed for an embedding model.

Closed loop (default, the article's test): each user posts corpus texts back to back.
    locust -f loadtests/locustfile.py --headless -u 8 -r 8 -t 30s --host http://127.0.0.1:8000
Open loop: STRUCTBENCH_MODE=open STRUCTBENCH_RATE=20 [STRUCTBENCH_ARRIVALS=poisson|constant] — requests are
sent at intended times whatever the server does, and latency is measured from the intended send time so a
slow server cannot hide its queue (no coordinated omission). Under a --master (--processes, or --master with
--worker processes on several machines) there is one scheduler per expected worker, each sending its share of
the rate with its own arrival seed; every process needs the same STRUCTBENCH_* environment.

Environment: STRUCTBENCH_WORKLOAD=corpus|zipf, STRUCTBENCH_SEED, STRUCTBENCH_CLIENT_OUT (JSON file of
client-side figures: Server-Timing means, open-loop latencies, late sends, invalid answers). With it set, every
process that sends requests also writes each request of the timed window to its own samples file beside it
(loadtests/samples.py: `<tag>_samples_<pid>.csv` for `<tag>_client.json`).
"""

from __future__ import annotations

import json
import os
import socket
import time

import gevent
from locust import FastHttpUser, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtests.samples import SampleWriter, samples_path
from loadtests.shapes import LATE_SEND_S, ClientStats, arrival_times, parse_server_timing, route_and_body

MODE = os.environ.get("STRUCTBENCH_MODE", "closed")
# classification: POST /api/sentiment {"text"} → a label and its score; embedding: POST /api/embed {"texts": [text]}
# → one vector (the model's task, bench.core.signature; the sweep sets it)
TASK = os.environ.get("STRUCTBENCH_TASK", "classification")
ROUTE = route_and_body(TASK, "")[0]
DONE = "structbench_done"  # a worker's message to the master: its open-loop schedule is sent and answered
WINDOW = "structbench_window"  # the master's message to its workers: the ramp is over, the timed window starts
STATS = ClientStats()
SAMPLES: SampleWriter | None = None  # this process's raw requests, once init knows it sends any
_RESET_AFTER_RAMP = False  # --reset-stats, as init finds it in the environment
# The sweep's ramp-up, counted from the test's start (nan when run by hand: then Locust's spawning_complete). Locust
# fires spawning_complete as soon as it has started the users: when the rate covers them all in one step (16 users
# at 16/s) that is at once, so the window began on an empty service and left out the work in flight at its end —
# a real share of a short window whose batches take seconds (check tune read the service low: docs/measurements.md).
RAMP_S = float(os.environ.get("STRUCTBENCH_RAMP_S", "nan"))
_TEXTS: list = []
# (process CPU time, wall clock) when the timed window began or was last charged to STATS; None outside it.
# Measured here, not from outside: a whole Locust process's CPU includes its start-up (gevent, Locust and the
# corpus imported), which inflates its CPU per request (docs/measurements.md).
_WINDOW_CPU: list = [None]


def texts() -> list:
    """The same workload generator as the harness: ≈80-char corpus reviews, or Zipf repeats for cache studies."""
    if not _TEXTS:
        from bench.model.corpus import LOAD_TEXTS, length_workload, zipf_workload

        seed = int(os.environ.get("STRUCTBENCH_SEED", "0"))
        kind = os.environ.get("STRUCTBENCH_WORKLOAD", "corpus")
        workload = zipf_workload(5000, seed=seed) if kind == "zipf" else length_workload(LOAD_TEXTS, seed=seed)
        _TEXTS.extend(workload.texts)
    return _TEXTS


def validate(resp, text: str) -> None:
    """Mark anything but a well-formed answer for this text as a failure."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code != 200 or not isinstance(body, dict):
        resp.failure(f"HTTP {resp.status_code}")
    elif not valid_answer(body, text):
        STATS.invalid += 1
        resp.failure("answer does not match the contract")
    else:
        STATS.add_timing(parse_server_timing(resp.headers.get("Server-Timing")))
        resp.success()


def valid_answer(body: dict, text: str) -> bool:
    """The contract of the model's route: this text's label with a score in [0, 1], or this text's vector."""
    if TASK == "embedding":
        results = body.get("results")
        if not isinstance(results, list) or len(results) != 1 or not isinstance(results[0], dict):
            return False
        vector = results[0].get("embedding")
        return results[0].get("text") == text and isinstance(vector, list) and len(vector) > 0 \
            and all(isinstance(v, (int, float)) for v in vector[:4])
    return body.get("text") == text and isinstance(body.get("label"), str) and 0 <= body.get("score", -1) <= 1


def post(client, text: str, context: dict | None = None) -> int:
    """`context` reaches the request event's listeners (the open loop passes its intended send time there)."""
    with client.post(ROUTE, json=route_and_body(TASK, text)[1], catch_response=True, name=ROUTE,
                     context=context or {}) as resp:
        validate(resp, text)
        return resp.status_code


class SentimentUser(FastHttpUser):
    """Closed loop: one request in flight per user, no think time."""

    abstract = MODE == "open"
    wait_time = constant(0)

    def on_start(self) -> None:
        self.i = hash(id(self)) % 1000

    @task
    def analyse(self) -> None:
        pool = texts()
        self.i += 1
        post(self.client, pool[self.i % len(pool)])


class OpenLoopUser(FastHttpUser):
    """Open loop: one scheduler per process sends at intended times, each request in its own greenlet (one per
    worker under a --master, see _share)."""

    abstract = MODE != "open"
    fixed_count = 1
    concurrency = 512
    wait_time = constant(3600)

    @task
    def schedule(self) -> None:
        share, index = _share(self.environment.runner)
        rate = float(os.environ.get("STRUCTBENCH_RATE", "10")) / share
        duration = float(os.environ.get("STRUCTBENCH_DURATION", "10"))
        poisson = os.environ.get("STRUCTBENCH_ARRIVALS", "poisson") == "poisson"
        seed = int(os.environ.get("STRUCTBENCH_SEED", "0")) + index  # independent arrivals: their sum is Poisson
        pool, start, inflight = texts(), time.perf_counter(), []
        offset = index * len(pool) // share  # each worker its own stretch of texts: no extra cache hits
        epoch_offset = time.time() - start  # intended times travel as epoch seconds, like Locust's start_time
        for i, due in enumerate(arrival_times(rate, duration, poisson, seed)):
            gevent.sleep(max(0.0, start + due - time.perf_counter()))
            STATS.intended += 1
            if time.perf_counter() - (start + due) > LATE_SEND_S:
                STATS.late_sends += 1
            inflight.append(gevent.spawn(self.send, pool[(offset + i) % len(pool)], start + due, epoch_offset))
        gevent.joinall(inflight, timeout=30)
        _schedule_done(self.environment.runner)

    def send(self, text: str, intended: float, epoch_offset: float) -> None:
        status = post(self.client, text, {"intended_s": intended + epoch_offset})
        if status == 200:  # latency of accepted requests; rejections (503) are counted apart
            STATS.open_latencies_ms.append((time.perf_counter() - intended) * 1000.0)
        else:
            STATS.rejected += 1


def _share(runner) -> tuple[int, int]:
    """(schedulers, this one's index): 1 and 0 in a single process; under a --master one scheduler per expected
    worker (the master's --expect-workers, which Locust passes on to its workers; _open_loop_master)."""
    if isinstance(runner, WorkerRunner):
        return max(1, int(runner.environment.parsed_options.expect_workers)), max(0, runner.worker_index)
    return 1, 0


def _schedule_done(runner) -> None:
    """A single process quits. A worker tells the master instead: a worker that quits by itself has its scheduler
    handed to another worker, which would send a second schedule. The master quits once every worker is done,
    and that makes each worker stop and send its last figures."""
    if isinstance(runner, WorkerRunner):
        runner.send_message(DONE)
    else:
        runner.quit()


@events.init.add_listener
def _open_loop_master(environment, runner, **_kw) -> None:
    """Open loop under a --master: exactly one scheduler per expected worker, whatever -u says (fewer would
    leave part of the rate unsent), and quit once each has reported its schedule done."""
    options = environment.parsed_options
    if MODE != "open" or not isinstance(runner, MasterRunner) or options is None:
        return
    schedulers, done = int(options.expect_workers), set()
    OpenLoopUser.fixed_count = options.num_users = options.spawn_rate = schedulers

    def on_done(environment, msg, **_kw) -> None:
        done.add(msg.node_id)
        if len(done) >= schedulers:
            gevent.spawn(environment.runner.quit)  # not inside the runner's own message loop, which quit kills

    runner.register_message(DONE, on_done)


def _begin_window_cpu() -> None:
    _WINDOW_CPU[0] = (time.process_time(), time.perf_counter())


def _charge_window_cpu(end: bool = False) -> None:
    """Add this process's CPU and wall time since the window began (or was last charged) to STATS; `end` closes
    the window."""
    if _WINDOW_CPU[0] is not None:
        cpu, wall = time.process_time(), time.perf_counter()
        # keyed by machine and pid, read now: --processes forks its workers after this module is imported
        STATS.charge_window(f"{socket.gethostname()}:{os.getpid()}", cpu - _WINDOW_CPU[0][0], wall - _WINDOW_CPU[0][1])
        _WINDOW_CPU[0] = None if end else (cpu, wall)


@events.report_to_master.add_listener
def _send(client_id, data, **_kw) -> None:
    _charge_window_cpu()
    data["structbench"] = STATS.drain()


@events.worker_report.add_listener
def _receive(client_id, data, **_kw) -> None:
    STATS.merge(data.get("structbench", {}))


@events.quitting.add_listener
def _write(environment, **_kw) -> None:
    """The master (or the single local process) writes the merged client figures."""
    out = os.environ.get("STRUCTBENCH_CLIENT_OUT")
    _charge_window_cpu(end=True)
    if out and not isinstance(environment.runner, WorkerRunner):
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(STATS.summary(), fh)


@events.init.add_listener
def _open_samples(environment, **_kw) -> None:
    """Every process that sends requests (not a --processes master) keeps its own samples file."""
    global SAMPLES, _RESET_AFTER_RAMP
    _RESET_AFTER_RAMP = bool(environment.reset_stats)
    out = os.environ.get("STRUCTBENCH_CLIENT_OUT")
    if out and not isinstance(environment.runner, MasterRunner):
        SAMPLES = SampleWriter(samples_path(out, os.getpid()))
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(WINDOW, _start_window)


@events.request.add_listener
def _record(start_time, response_time, exception=None, context=None, **_kw) -> None:
    if SAMPLES is not None:
        SAMPLES.add(start_time, response_time, exception is None, (context or {}).get("intended_s"))


@events.test_start.add_listener
def _timed_from_start(environment, **_kw) -> None:
    """With the sweep's ramp the window starts by the clock, RAMP_S after the start: a single process starts its
    own; a master resets its totals and tells its workers, which start theirs on that message, as Locust passes on
    its own reset (so only a worker report crossing the message, milliseconds, can split Locust's totals from our
    samples)."""
    if SAMPLES is not None:
        SAMPLES.start_test(time.time())
    if MODE == "open":  # the open loop's window is its whole schedule, which starts now
        _begin_window_cpu()
    if _clock_window() and not isinstance(environment.runner, WorkerRunner):
        gevent.spawn_later(RAMP_S, _start_window, environment)


def _clock_window() -> bool:
    """This test's window starts RAMP_S after its start (the sweep's ramp), not at Locust's spawning_complete."""
    return _RESET_AFTER_RAMP and RAMP_S > 0


def _start_window(environment, **_kw) -> None:
    """The ramp is over: our samples and Locust's own stats (its CSV, our cross-check) start the window together."""
    if SAMPLES is not None:
        SAMPLES.start_window(time.time())
    _begin_window_cpu()
    environment.runner.stats.reset_all()
    if isinstance(environment.runner, MasterRunner):
        environment.runner.send_message(WINDOW)


@events.spawning_complete.add_listener
def _timed_from_reset(**_kw) -> None:
    """--reset-stats: Locust resets its stats in its own spawning_complete listener (locust/runners.py), not via
    events.reset_stats (fired only by the web UI's button). This listener was added at import, before the runner
    added its own, so it runs first in the same greenlet and no request completes between the two resets."""
    if _RESET_AFTER_RAMP and not _clock_window():
        _begin_window_cpu()
        if SAMPLES is not None:
            SAMPLES.start_window(time.time())


@events.test_stop.add_listener
@events.quitting.add_listener
@events.quit.add_listener
def _flush_samples(**_kw) -> None:
    """After the users stop (test_stop) and again at exit, in case a request completed in between."""
    _charge_window_cpu(end=True)
    if SAMPLES is not None:
        SAMPLES.flush()
