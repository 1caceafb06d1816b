"""Model replicas behind one service: they run in parallel, are placed on disjoint cores, and one that is killed
fails only its own batch and comes back. Real service processes on 127.0.0.1 with the fake backend (a fixed sleep
per model call, so its time does not depend on threads)."""

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from bench.core.errors import ConfigError
from bench.service.config import ServiceConfig
from bench.service.replicas import place
from loadtests.service_proc import ServiceProcess, ServiceVariant

SLEEP_S = 0.08  # per model call: 1 replica ≈ 12 req/s, far below what the front and the clients can carry


def variant(replicas: int) -> ServiceVariant:
    return ServiceVariant.of(f"fake r{replicas}", backend="fake-fp32-cpu", replicas=replicas, threads=1,
                             batching=False, cache_size=0, backend_options=(("sleep_s", str(SLEEP_S)),))


def hammer(url: str, seconds: float, clients: int = 6) -> list[int]:
    """Closed-loop load from `clients` threads for `seconds`; the status code of every answer."""
    codes: list[int] = []
    end = time.monotonic() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while time.monotonic() < end:
                codes.append(c.post("/api/sentiment", json={"text": f"第{i}条评论 {len(codes)}"}).status_code)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


@pytest.fixture(scope="module")
def two_replicas(tiny_model):
    proc = ServiceProcess("twin:tiny", variant(2))
    yield proc.wait_ready(120)
    proc.stop()


def throughput(url: str, seconds: float = 4.0) -> float:
    codes = hammer(url, seconds)
    assert set(codes) == {200}
    return len(codes) / seconds


@pytest.mark.e2e
def test_two_replicas_serve_about_twice_one_replicas_throughput(tiny_model, two_replicas):
    one = ServiceProcess("twin:tiny", variant(1))
    try:
        single = throughput(one.wait_ready(120))
    finally:
        one.stop()
    double = throughput(two_replicas)
    assert 1.7 < double / single < 2.3, (single, double)
    metrics = httpx.get(two_replicas + "/metrics").text
    per_replica = [float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith("structbench_replica_texts_total{")]
    assert len(per_replica) == 2 and min(per_replica) > 0.3 * max(per_replica)  # both replicas took work


def test_healthz_names_each_replicas_cores_and_process(two_replicas):
    health = httpx.get(two_replicas + "/healthz").json()
    assert health["replicas"] == 2 and health["replicas_up"] == 2 and health["threads"] == 1
    assert len(set(health["replica_pids"])) == 2
    if len(os.sched_getaffinity(0)) >= 2:
        assert health["cores"] == [[c] for c in sorted(os.sched_getaffinity(0))[:2]] and not health["oversubscribed"]
    reply = httpx.post(two_replicas + "/api/sentiment", json={"text": "很好"})
    assert 'replica;desc="' in reply.headers["server-timing"]


def test_model_process_runs_a_single_replica_outside_the_front(tiny_model):
    """--model-process: one model instance, but in its own process (the front's GIL is not the model's), unpinned."""
    own = ServiceVariant.of("fake own process", backend="fake-fp32-cpu", batching=False, cache_size=0,
                            model_process=True)
    assert "--model-process" in own.flags() and own.setup().model_process
    proc = ServiceProcess("twin:tiny", own)
    try:
        url = proc.wait_ready(120)
        health = httpx.get(url + "/healthz").json()
        assert health["replicas"] == 1 and health["replicas_up"] == 1 and health["cores"] == ["any"]
        assert health["replica_pids"][0] != proc.proc.pid
        assert httpx.post(url + "/api/sentiment", json={"text": "很好"}).status_code == 200
    finally:
        proc.stop()


@pytest.mark.e2e
def test_a_killed_replica_loses_no_request_and_comes_back(two_replicas):
    """Its calls in flight (the one running, the next sent ahead) go back to the queue and another replica answers
    them (before: 1 or 2 answers of 500)."""
    before = httpx.get(two_replicas + "/healthz").json()["replica_pids"]
    box: dict = {}
    load = threading.Thread(target=lambda: box.setdefault("codes", hammer(two_replicas, 5.0)))
    load.start()
    time.sleep(1.5)
    os.kill(before[0], signal.SIGKILL)
    load.join()
    codes = box["codes"]
    assert set(codes) == {200}, codes
    end = time.monotonic() + 60
    while time.monotonic() < end:
        health = httpx.get(two_replicas + "/healthz").json()
        if health["replicas_up"] == 2 and before[0] not in health["replica_pids"]:
            break
        time.sleep(0.2)
    assert health["replicas_up"] == 2 and health["replica_pids"][1] == before[1]
    assert "structbench_replica_restarts_total 1" in httpx.get(two_replicas + "/metrics").text
    assert throughput(two_replicas, 2.0) > 0


def test_replica_placement_is_disjoint_until_the_cores_run_out():
    assert place(2, 1, [0, 1]).cores == ((0,), (1,))
    assert place(2, 2, [0, 1, 2, 3]).cores == ((0, 1), (2, 3))
    over = place(3, 1, [0, 1])
    assert over.oversubscribed and over.cores == (None, None, None) and over.describe() == ["any"] * 3


def test_replica_threads_default_to_an_even_split_and_oversubscription_is_recorded():
    cores = len(os.sched_getaffinity(0))
    assert ServiceConfig(replicas=1).replica_threads is None
    assert ServiceConfig(replicas=2).replica_threads == max(1, cores // 2)
    over, alone = ServiceConfig(replicas=cores + 1, threads=1), ServiceConfig(replicas=1, threads=1)
    assert place(over.replicas, over.replica_threads).oversubscribed
    assert not place(alone.replicas, alone.replica_threads).oversubscribed


@pytest.mark.parametrize("flags, words", [(["--replicas", "0"], "replicas must be >= 1"),
                                          (["--threads", "0"], "threads must be >= 1"),
                                          (["--backend", "ort-int9-cpu"], "unknown precision"),
                                          (["--backend-option", "novalue"], "expected KEY=VALUE")])
def test_bad_replica_settings_fail_before_any_work(flags, words):
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "bench.service", "--model", "twin:tiny", *flags],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and words in out.stderr, out.stderr
    assert time.monotonic() - started < 30  # refused at parse time: nothing was loaded or exported


def test_zero_replicas_is_a_config_error():
    with pytest.raises(ConfigError, match="replicas must be >= 1"):
        ServiceConfig(replicas=0)


@pytest.mark.e2e
def test_torch_never_shares_the_front_process_unless_asked_so_a_busy_front_leaves_its_calls_alone(tiny_model):
    """torch's calls take the GIL between kernels: beside a busy Python thread in the front's process a call took
    ~15x longer (docs/measurements.md). By default a torch service runs its model in a worker process, so the same
    busy thread no longer holds the model's calls on the GIL (Server-Timing `model`: the call's own time where it
    runs; the front's wait to read its answer is in `inference`); asked to share the front's process, the call is
    far slower."""
    from bench.service.app import create_app
    from bench.service.config import ServiceConfig
    from bench.service.server import ThreadedServer
    from tests.service_helpers import server_timing, wait_ready

    def inference_ms(url: str, n: int = 12) -> float:
        with httpx.Client(base_url=url, timeout=60) as client:
            times = [server_timing(client.post("/api/sentiment", json={"text": f"忙碌的前端{i}"}))["model"]
                     for i in range(n)]
        return float(sorted(times)[n // 2])

    def idle_and_busy(**settings) -> tuple[float, float, dict]:
        # one intra-op thread: on 2 cores a spinning thread plus torch's 2 threads would oversubscribe the cores,
        # which slows any process; this test is about the GIL the front's process shares with the model
        config = ServiceConfig(model=str(tiny_model), backend="torch-fp32-cpu", cache_size=0, warmup_runs=1,
                               threads=1, **settings)
        with ThreadedServer(create_app(config)) as url:
            with httpx.Client(base_url=url, timeout=60) as client:
                health = wait_ready(client, timeout=180)
            idle = inference_ms(url)
            stop = threading.Event()
            spinner = threading.Thread(target=lambda: [sum(range(3000)) for _ in iter(stop.is_set, True)],
                                       daemon=True)
            spinner.start()
            try:
                busy = inference_ms(url)
            finally:
                stop.set()
                spinner.join()
        return idle, busy, health

    assert ServiceConfig(backend="torch-fp32-cpu").effective_model_process
    assert not ServiceConfig(backend="ort-int8-cpu").effective_model_process
    idle, busy, health = idle_and_busy()
    assert health["replica_pids"][0] != os.getpid()  # the model is not in the front's (this test's) process
    shared_idle, shared_busy, shared = idle_and_busy(model_process=False)
    assert shared["replica_pids"][0] == os.getpid()
    print(f"\ntorch model call, ms (median of 12): own process idle {idle:.1f} / busy front {busy:.1f}; "
          f"in the front's process idle {shared_idle:.1f} / busy {shared_busy:.1f}")
    # The GIL's share of the slowdown is gone; on 2 cores the spinning thread still takes a core from the model's
    # threads (core contention, not the GIL), so the own-process call is slower too, much less so
    assert busy / idle < (shared_busy / shared_idle) / 3
