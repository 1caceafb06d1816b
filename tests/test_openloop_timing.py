"""Open-loop latency counts from the intended send time, checked with the real locustfile in a real Locust process
against a small scripted HTTP server on 127.0.0.1.

The server logs when each request arrived and when it was answered. Request i is due at start + SCHEDULE[i] (the
locustfile's seeded Poisson arrivals), and request 0 cannot arrive before it is due, so
`answered_i - (arrived_0 - SCHEDULE[0] + SCHEDULE[i])` is a lower bound on request i's latency from its intended
send time. Every percentile Locust reports must be at least the same percentile of those bounds: a stall, on the
server or in the client itself, cannot drop out of the figures."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import psutil
import pytest

from bench.model.corpus import length_workload
from loadtests.shapes import arrival_times
from loadtests.windows import SweepConfig, run_locust

pytestmark = pytest.mark.e2e  # the slow tier: real processes (make test runs it, make test-fast does not)

RATE, DURATION_S, STALL_S = 20.0, 3.0, 1.5
CFG = SweepConfig(model="twin:tiny", duration_s=DURATION_S, open_rates=(RATE,))
SCHEDULE = arrival_times(RATE, DURATION_S, poisson=True, seed=CFG.seed)  # as the locustfile computes it
POOL = length_workload(2000, seed=0).texts  # the locustfile's texts (corpus workload, seed 0), sent in order


class ScriptedServer(ThreadingHTTPServer):
    """Answers POST /api/sentiment in the service's shape. With `stall_s`, the first request starts a stall:
    every request that arrives before it ends is answered only when it ends."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, stall_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.stall_s, self.stall_end = stall_s, None
        self.log: dict[int, tuple[float, float]] = {}  # request index -> (arrived, answered), perf_counter
        self.first = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def hold(self, arrived: float) -> None:
        with self.lock:
            if self.stall_end is None:
                self.stall_end = arrived + self.stall_s
        time.sleep(max(0.0, self.stall_end - time.perf_counter()))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real service

    def do_POST(self) -> None:  # noqa: N802 - http.server's spelling
        arrived = time.perf_counter()
        text = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"]
        self.server.first.set()
        self.server.hold(arrived)
        answered = time.perf_counter()  # before the reply is written: the client cannot have it earlier
        body = json.dumps({"text": text, "label": "正面", "label_id": 1, "score": 0.9, "inference_time_ms": 1.0,
                           "truncated": False, "cached": False}, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.log[POOL.index(text)] = (arrived, answered)

    def log_message(self, *args) -> None:  # quiet
        pass


def latency_floor_ms(log: dict[int, tuple[float, float]]) -> np.ndarray:
    """Per request, a lower bound on its latency from its intended send time (see the module docstring)."""
    start = log[0][0] - SCHEDULE[0]  # at or after the real start
    return np.array([1000.0 * (answered - (start + SCHEDULE[i])) for i, (_, answered) in sorted(log.items())])


def serve(stall_s: float = 0.0) -> ScriptedServer:
    server = ScriptedServer(stall_s)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check_percentiles(loop: dict, floor: np.ndarray) -> None:
    assert loop["accepted"] == loop["intended"] == len(floor)  # the server saw every request Locust scheduled
    for q in (50, 95, 99):
        assert loop[f"p{q}_ms"] >= np.percentile(floor, q), (q, loop, np.percentile(floor, q))


def test_server_stall_is_counted_for_requests_queued_behind_it(tmp_path):
    server = serve(STALL_S)
    try:
        loop = run_locust(server.url, 1, CFG, tmp_path, "stall", rate=RATE)["client"]["open_loop"]
    finally:
        server.shutdown()
    during = [i for i, (arrived, _) in server.log.items() if 0 < i and arrived < server.stall_end]
    # Open loop: the client kept sending on schedule while the server was stuck (a closed loop would send none).
    # Every request due over the stall, less 0.1 s for a send's own lateness, must have arrived during it.
    due = int(np.sum((SCHEDULE > SCHEDULE[0]) & (SCHEDULE <= SCHEDULE[0] + STALL_S - 0.1)))
    assert due >= 10 and len(during) >= due, (due, sorted(during))
    check_percentiles(loop, latency_floor_ms(server.log))
    assert loop["p99_ms"] >= 0.9 * STALL_S * 1000  # the first request waited the whole stall


def pause_when_first_request_arrives(server: ScriptedServer, pause_s: float) -> None:
    """SIGSTOP the Locust process 0.3 s into its schedule, SIGCONT it `pause_s` later: its sends fall behind."""
    assert server.first.wait(120), "Locust sent nothing"
    time.sleep(0.3)
    [locust] = [p for p in psutil.Process().children(recursive=True)  # Locust itself, not its tether
                if p.cmdline()[1:3] == ["-m", "locust"]]
    os.kill(locust.pid, signal.SIGSTOP)
    try:
        time.sleep(pause_s)
    finally:
        os.kill(locust.pid, signal.SIGCONT)


def test_late_sends_count_from_their_intended_time(tmp_path):
    """A client that falls behind (here: stopped for STALL_S) sends the overdue requests late; their latency
    must include the lateness, or the report would hide the client's own stall (coordinated omission)."""
    server = serve()
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(run_locust, server.url, 1, CFG, tmp_path, "late", RATE)
            pause_when_first_request_arrives(server, STALL_S)
            loop = running.result()["client"]["open_loop"]
    finally:
        server.shutdown()
    floor = latency_floor_ms(server.log)
    start = server.log[0][0] - SCHEDULE[0]
    late = [i for i, (arrived, _) in server.log.items() if arrived - (start + SCHEDULE[i]) > 0.1]
    assert len(late) >= 10 and np.percentile(floor, 99) >= 1000  # the pause really delayed the sends
    # The client counted the sends the server saw arrive > 0.1 s late (less the one or two it had spawned on time
    # just before the pause, which reached the socket only after it).
    assert loop["late_sends"] >= len(late) - 2
    # Timed from the actual send, the answers (instant) would give a P99 of a few ms, far under the floor's.
    check_percentiles(loop, floor)
