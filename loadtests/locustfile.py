"""Locust users for any server: each request is one corpus text, sent and checked through a protocol
(loadtests/protocols.py: structbench's /api/sentiment or /api/embed, TEI, KServe v2, OpenAI embeddings, a JSON
template). Every setting is a Locust option (`--help` lists them, all --sb-*), so config files, the
environment (LOCUST_SB_*) and distributed workers carry them: a --master passes them to its workers.

Closed loop (default, the article's test): each user posts texts back to back.
    locust -f loadtests/locustfile.py --headless -u 8 -r 8 -t 30s --host http://127.0.0.1:8000
    locust -f loadtests/locustfile.py … --host http://tei:8080 --sb-protocol tei --sb-task embedding
Open loop: --sb-mode open --sb-rate 20 [--sb-arrivals poisson|constant] — requests are sent at intended times
whatever the server does, and latency is measured from the intended send time so a slow server cannot hide its
queue (no coordinated omission). Under a --master (--processes, or --master with --worker processes on several
machines) there is one scheduler per expected worker, each sending its share of the rate with its own seed.

--sb-client-out FILE: a JSON file of client-side figures (Server-Timing means, open-loop latencies, late sends,
invalid answers); with it, every process that sends requests also writes each request of the timed window to its
own samples file beside it (loadtests/samples.py: `<tag>_samples_<pid>.csv` for `<tag>_client.json`). Request
headers (credentials) come from LOCUST_SB_HEADERS, a JSON object, never from the command line.
"""

from __future__ import annotations

import json
import os
import socket
import time

import gevent
from locust import FastHttpUser, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtests.protocols import PROTOCOLS, Protocol, ProtocolSpec, build, parse_options
from loadtests.samples import SampleWriter, samples_path
from loadtests.shapes import LATE_SEND_S, ClientStats, arrival_times, parse_server_timing

DONE = "structbench_done"  # a worker's message to the master: its open-loop schedule is sent and answered
WINDOW = "structbench_window"  # the master's message to its workers: the ramp is over, the timed window starts
STATS = ClientStats()
SAMPLES: SampleWriter | None = None  # this process's raw requests, once the test knows it sends any
_RESET_AFTER_RAMP = False  # --reset-stats, as init finds it
_PROTOCOL: list = []  # this process's Protocol, built from the options at the test's start
_RAMP_S = [0.0]  # --sb-ramp-s, as the test's start finds it (spawning_complete's listeners get no environment)
_TEXTS: list = []
# (process CPU time, wall clock) when the timed window began or was last charged to STATS; None outside it.
# Measured here, not from outside: a whole Locust process's CPU includes its start-up (gevent, Locust and the
# corpus imported), which inflates its CPU per request (docs/measurements.md).
_WINDOW_CPU: list = [None]


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    """structbench's settings as Locust options (a master sends them to its workers with each spawn)."""
    g = parser  # Locust's parser takes include_in_web_ui on its own add_argument, not on a group's
    hidden = {"include_in_web_ui": False}
    g.add_argument("--sb-protocol", default="structbench", choices=PROTOCOLS, help="how requests are spoken",
                   **hidden)
    g.add_argument("--sb-task", default="classification", choices=("classification", "embedding"),
                   help="the model's task: which route and answer the protocol uses", **hidden)
    g.add_argument("--sb-model-name", default=None, help="the server's name for the model (kserve-v2, OpenAI)",
                   **hidden)
    g.add_argument("--sb-model-dir", default=None, help="model folder (kserve-v2 tokenises with its tokenizer)",
                   **hidden)
    g.add_argument("--sb-protocol-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a protocol option (http-json: path, body, answer, method, ready)", **hidden)
    g.add_argument("--sb-mode", default="closed", choices=("closed", "open"), help="closed or open loop", **hidden)
    g.add_argument("--sb-rate", type=float, default=10.0, help="open loop: requests/s offered", **hidden)
    g.add_argument("--sb-duration", type=float, default=10.0, help="open loop: seconds of schedule", **hidden)
    g.add_argument("--sb-arrivals", default="poisson", choices=("poisson", "constant"), **hidden)
    g.add_argument("--sb-workload", default="corpus", choices=("corpus", "zipf"), **hidden)
    g.add_argument("--sb-seed", type=int, default=0, **hidden)
    # The sweep's ramp-up, counted from the test's start (0 when run by hand: then Locust's spawning_complete).
    # Locust fires spawning_complete as soon as it has started the users: when the rate covers them all in one
    # step (16 users at 16/s) that is at once, so the window began on an empty service and left out the work in
    # flight at its end — a real share of a short window whose batches take seconds (docs/measurements.md).
    g.add_argument("--sb-ramp-s", type=float, default=0.0, help="the timed window starts this long after start",
                   **hidden)
    g.add_argument("--sb-timeout", type=float, default=30.0,
                   help="seconds a request may take before it fails (a hanging server fails, users go on)", **hidden)
    g.add_argument("--sb-client-out", default="", help="write client figures here (and samples beside it)",
                   **hidden)


def options(environment):
    return environment.parsed_options


def protocol(environment) -> Protocol:
    """This process's protocol, built once from its options (on a worker, the master's)."""
    if not _PROTOCOL:
        o = options(environment)
        _PROTOCOL.append(build(ProtocolSpec(o.sb_protocol, o.sb_task, o.sb_model_name, o.sb_model_dir,
                                            parse_options(o.sb_protocol_option))))
    return _PROTOCOL[0]


def headers() -> dict:
    raw = os.environ.get("LOCUST_SB_HEADERS")
    return json.loads(raw) if raw else {}


def texts(environment) -> list:
    """The same workload generator as the harness: ≈80-char corpus reviews, or Zipf repeats for cache studies."""
    if not _TEXTS:
        from bench.model.corpus import LOAD_TEXTS, length_workload, zipf_workload

        seed, kind = options(environment).sb_seed, options(environment).sb_workload
        workload = zipf_workload(5000, seed=seed) if kind == "zipf" else length_workload(LOAD_TEXTS, seed=seed)
        _TEXTS.extend(workload.texts)
    return _TEXTS


def validate(resp, text: str, speaker: Protocol) -> None:
    """Mark anything but a well-formed answer for this text as a failure, by cause (Locust counts failures by
    their message: the level record keeps them, loadtests/levels.py)."""
    if resp.status_code != 200:
        resp.failure(f"HTTP {resp.status_code}" if resp.status_code else f"no answer: {resp.error}")
        return
    try:
        body = resp.json()
    except ValueError:
        STATS.invalid += 1
        resp.failure("answer is not JSON")
        return
    why = speaker.check(body, text)
    if why:
        STATS.invalid += 1
        resp.failure(f"wrong answer: {why}")
    else:
        STATS.add_timing(parse_server_timing(resp.headers.get("Server-Timing")))
        resp.success()


def post(user, text: str, context: dict | None = None) -> int:
    """`context` reaches the request event's listeners (the open loop passes its intended send time there)."""
    speaker = protocol(user.environment)
    req = speaker.request(text)
    with user.client.request(req.method, req.path, json=req.body, headers=user.sb_headers, catch_response=True,
                             name=req.path, context=context or {}) as resp:
        validate(resp, text, speaker)
        return resp.status_code


class SentimentUser(FastHttpUser):
    """Closed loop: one request in flight per user, no think time."""

    wait_time = constant(0)
    network_timeout = connection_timeout = 30.0  # a hanging server fails its requests instead of holding users
    sb_headers: dict = {}

    def on_start(self) -> None:
        self.i = hash(id(self)) % 1000
        self.sb_headers = headers()

    @task
    def analyse(self) -> None:
        pool = texts(self.environment)
        self.i += 1
        post(self, pool[self.i % len(pool)])


class OpenLoopUser(FastHttpUser):
    """Open loop: one scheduler per process sends at intended times, each request in its own greenlet (one per
    worker under a --master, see _share)."""

    fixed_count = 1
    concurrency = 512
    wait_time = constant(3600)
    network_timeout = connection_timeout = 30.0
    sb_headers: dict = {}

    def on_start(self) -> None:
        self.sb_headers = headers()

    @task
    def schedule(self) -> None:
        share, index = _share(self.environment.runner)
        o = options(self.environment)
        rate, duration, poisson = o.sb_rate / share, o.sb_duration, o.sb_arrivals == "poisson"
        seed = o.sb_seed + index  # independent arrivals: their sum is Poisson
        pool, start, inflight = texts(self.environment), time.perf_counter(), []
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
        status = post(self, text, {"intended_s": intended + epoch_offset})
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
def _one_mode(environment, runner, **_kw) -> None:
    """The user class of the chosen loop only (a worker keeps both: it runs whichever its master sends)."""
    o = environment.parsed_options
    if o is not None and not isinstance(runner, WorkerRunner):
        keep = OpenLoopUser if o.sb_mode == "open" else SentimentUser
        environment.user_classes[:] = [keep]


@events.init.add_listener
def _open_loop_master(environment, runner, **_kw) -> None:
    """Open loop under a --master: exactly one scheduler per expected worker, whatever -u says (fewer would
    leave part of the rate unsent), and quit once each has reported its schedule done."""
    opts = environment.parsed_options
    if opts is None or opts.sb_mode != "open" or not isinstance(runner, MasterRunner):
        return
    schedulers, done = int(opts.expect_workers), set()
    OpenLoopUser.fixed_count = opts.num_users = opts.spawn_rate = schedulers

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
    out = environment.parsed_options.sb_client_out if environment.parsed_options else ""
    _charge_window_cpu(end=True)
    if out and not isinstance(environment.runner, WorkerRunner):
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(STATS.summary(), fh)


@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    global _RESET_AFTER_RAMP
    _RESET_AFTER_RAMP = bool(environment.reset_stats)
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(WINDOW, _start_window)


def _open_samples(environment) -> None:
    """Every process that sends requests (not a --processes master) keeps its own samples file, beside the client
    figures (a worker learns where from its master's options, which arrive with the test's start)."""
    global SAMPLES
    out = environment.parsed_options.sb_client_out if environment.parsed_options else ""
    if out and SAMPLES is None and not isinstance(environment.runner, MasterRunner):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        SAMPLES = SampleWriter(samples_path(out, os.getpid()))


@events.request.add_listener
def _record(start_time, response_time, exception=None, context=None, **_kw) -> None:
    if SAMPLES is not None:
        SAMPLES.add(start_time, response_time, exception is None, (context or {}).get("intended_s"))


@events.test_start.add_listener
def _timed_from_start(environment, **_kw) -> None:
    """With the sweep's ramp the window starts by the clock, --sb-ramp-s after the start: a single process starts its
    own; a master resets its totals and tells its workers, which start theirs on that message, as Locust passes on
    its own reset (so only a worker report crossing the message, milliseconds, can split Locust's totals from our
    samples)."""
    _RAMP_S[0] = options(environment).sb_ramp_s
    for user in (SentimentUser, OpenLoopUser):  # read when each user's client is made, after this
        user.network_timeout = user.connection_timeout = options(environment).sb_timeout
    _open_samples(environment)
    protocol(environment)  # a bad protocol setting fails here, once, not in every request
    if SAMPLES is not None:
        SAMPLES.start_test(time.time())
    if options(environment).sb_mode == "open":  # the open loop's window is its whole schedule, which starts now
        _begin_window_cpu()
    if _clock_window() and not isinstance(environment.runner, WorkerRunner):
        gevent.spawn_later(_RAMP_S[0], _start_window, environment)


def _clock_window() -> bool:
    """This test's window starts --sb-ramp-s after its start (the sweep's ramp), not at spawning_complete."""
    return _RESET_AFTER_RAMP and _RAMP_S[0] > 0


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
