"""Start the inference service as a child process, wait until it is ready, read its metrics, stop it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from bench.core.errors import BenchError
from bench.core.processes import lifeline, rss_mb_of, stop_group, tree_pids
from bench.core.records import ServiceSetup
from bench.service.config import ServiceConfig
from loadtests.targets import TargetSpec

MIN_CORES_TO_PIN = 4  # below this, a core given to Locust is taken from the service it measures


@dataclass(frozen=True)
class Pinning:
    """Which cores the service and the load generator run on: apart where the host has cores enough, so Locust's
    CPU does not slow the service it measures; shared (unpinned) on a small host, and said so."""

    service: tuple[int, ...] = ()
    client: tuple[int, ...] = ()

    @classmethod
    def of(cls, cores: list[int]) -> "Pinning":
        if len(cores) < MIN_CORES_TO_PIN:
            return cls()
        n = max(1, len(cores) // 8)  # Locust's share: a core per 8
        return cls(tuple(cores[:-n]), tuple(cores[-n:]))

    def describe(self, cores: int) -> str:
        if not self.client:
            return (f"not pinned: {cores} cores, Locust shares them with the service (pinned apart from "
                    f"{MIN_CORES_TO_PIN} cores)")
        return f"service on cores {span(self.service)}, Locust on {span(self.client)}"

    def pin(self, pid: int, client: bool) -> None:
        """Pin a just-started process (its threads and children inherit it); nothing where not split."""
        cores = self.client if client else self.service
        if cores and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(pid, cores)
            except (OSError, ProcessLookupError):  # it ended already: its window will say so
                pass


def span(cores: tuple[int, ...]) -> str:
    return f"{cores[0]}–{cores[-1]}" if len(cores) > 1 and cores[-1] - cores[0] == len(cores) - 1 \
        else ",".join(map(str, cores))


def host_pinning() -> Pinning:
    from bench.measure.host import available_cores

    return Pinning.of(available_cores())


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)$")


@dataclass(frozen=True)
class ServiceVariant:
    """One service configuration of a sweep: a label and the ServiceConfig the service runs with (its model
    and address fields are set when the service starts)."""

    label: str
    config: ServiceConfig = field(default_factory=ServiceConfig)
    target: TargetSpec | None = None  # None: structbench's service with `config`; else a peer or a URL

    @classmethod
    def of_target(cls, label: str, target: TargetSpec) -> "ServiceVariant":
        """A configuration that is another server: its record says which, and what is known of how it serves."""
        return cls(label, ServiceConfig(batching=target.kind == "litserve",
                                        max_batch=target.max_batch if target.kind == "litserve" else 1,
                                        threads=target.threads, replicas=1, cache_size=0), target)

    @classmethod
    def of(cls, label: str, **settings) -> "ServiceVariant":
        """ServiceVariant.of("int8 no batching", batching=False): settings are ServiceConfig fields."""
        return cls(label, ServiceConfig(**settings))

    def flags(self) -> list[str]:
        c = self.config
        out = ["--backend", c.backend, "--batching" if c.batching else "--no-batching", "--max-batch", str(c.max_batch),
               "--max-wait-ms", str(c.max_wait_ms), "--cache-size", str(c.cache_size)]
        out += ["--threads", str(c.threads)] if c.threads else []
        out += ["--replicas", str(c.replicas)] if c.replicas is not None else []
        out += ["--preferred-batch-sizes", ",".join(map(str, c.preferred_batch_sizes))] if c.preferred_batch_sizes \
            else []
        out += ["--no-cuda-graphs"] if not c.cuda_graphs else []
        out += ["--fronts", str(c.fronts)] if c.fronts != 1 else []
        out += ["--no-trt-bucket-profiles"] if not c.trt_bucket_profiles else []
        out += [] if c.model_process is None else ["--model-process" if c.model_process else "--no-model-process"]
        out += ["--max-queue", str(c.max_queue)] if c.max_queue != ServiceConfig.max_queue else []
        out += [f"--backend-option={k}={v}" for k, v in c.backend_options]
        out += ["--no-shape-buckets"] if not c.shape_buckets else []
        out += ["--warmup-runs", str(c.warmup_runs)] if c.warmup_runs is not None else []
        out += ["--warm-max-length", str(c.warm_max_length)] if c.warm_max_length is not None else []
        return out + (["--max-padding", str(c.max_padding)] if c.max_padding is not None else [])

    def setup(self) -> ServiceSetup:
        """The record of this configuration in the results file."""
        c, t = self.config, self.target
        where = {} if t is None else {"target": t.kind, "protocol": t.protocol.name, "url": t.public_url}
        backend = "unknown" if t is not None and t.kind == "url" else c.backend
        return ServiceSetup(self.label, backend, c.batching, c.max_batch, c.max_wait_ms, c.cache_size,
                            c.replica_threads, c.effective_replicas, c.effective_model_process, **where)


class ServiceProcess:
    """`python -m bench.service … --port 0` on 127.0.0.1; the URL comes from its `listening on` line. A target
    (loadtests/targets.py) whose server-side figures come from its /metrics."""

    scrapes_metrics = True

    def __init__(self, model: str, variant: ServiceVariant, extra: list[str] | None = None) -> None:
        cmd = [sys.executable, "-m", "bench.service", "--model", model, "--port", "0", "--log-level", "warning",
               *variant.flags(), *(extra or [])]
        env, fds = lifeline()  # SIGKILL of this process takes the service down too (no `finally` runs then)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env={**os.environ, **env}, pass_fds=fds)
        host_pinning().pin(self.proc.pid, client=False)  # before it plans its replicas' cores (after its imports)
        self.url: str | None = None
        self.log: list[str] = []
        self._seen = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.log = (self.log + [line.rstrip()])[-50:]
            if line.startswith("listening on "):
                self.url = line.split()[-1].rstrip("/")
                self._seen.set()
        self._seen.set()

    def wait_ready(self, timeout_s: float = 600.0) -> str:
        """Block until /healthz says ready; a dead service or a timeout is a BenchError with its last log."""
        deadline = time.monotonic() + timeout_s
        self._seen.wait(timeout_s)
        while time.monotonic() < deadline and self.proc.poll() is None and self.url:
            if get(self.url + "/healthz", 2.0)[0] == 200:
                return self.url
            time.sleep(0.2)
        tail = " | ".join(self.log[-3:])
        self.stop()
        raise BenchError(f"service did not become ready (exit code {self.proc.returncode}): {tail}")

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM (graceful: in-flight requests finish), then SIGKILL of the group after `grace_s`."""
        stop_group(self.proc, grace_s)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float | None:
        return None  # from /metrics (service_cpu_seconds_total), fronts included

    def rss_mb(self) -> float | None:
        return rss_mb_of(tree_pids(self.proc.pid))


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def metrics(url: str) -> dict[str, float]:
    """Prometheus text → {name{labels}: value} (enough for counters and histogram sums), names without the
    service's prefix (structbench_)."""
    from bench.service.metrics import PREFIX

    status, text = get(url + "/metrics")
    out: dict[str, float] = {}
    for line in text.splitlines() if status == 200 else ():
        m = METRIC_LINE.match(line.strip())
        if m:
            out[m.group(1).removeprefix(PREFIX) + (m.group(2) or "")] = float(m.group(3))
    return out


def open_target(model: str, variant: ServiceVariant):
    """The server of one configuration, started where structbench runs it: our service, a peer, or a URL
    (loadtests/targets.py). Call wait_ready() for its URL and stop() when done."""
    from loadtests.targets import External, Peer

    spec = variant.target
    if spec is None or spec.kind == "structbench":
        return ServiceProcess(model, variant)
    if spec.kind == "url":
        return External(spec)
    return Peer(spec, model)
