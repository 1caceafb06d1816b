"""Start the inference service as a child process, wait until it is ready, read its metrics, stop it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from bench.errors import BenchError

METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)$")


@dataclass(frozen=True)
class ServiceVariant:
    """One service configuration of a sweep."""

    label: str
    backend: str = "ort-int8-cpu"
    batching: bool = True
    max_batch: int = 8
    max_wait_ms: float = 0.0  # 0 = greedy: batch whatever queued while the model was busy, never wait
    cache_size: int = 0

    def flags(self) -> list[str]:
        return ["--backend", self.backend, "--batching" if self.batching else "--no-batching",
                "--max-batch", str(self.max_batch), "--max-wait-ms", str(self.max_wait_ms),
                "--cache-size", str(self.cache_size)]


class ServiceProcess:
    """`python -m bench.service … --port 0` on 127.0.0.1; the URL comes from its `listening on` line."""

    def __init__(self, model: str, variant: ServiceVariant, extra: list[str] | None = None) -> None:
        cmd = [sys.executable, "-m", "bench.service", "--model", model, "--port", "0", "--log-level", "warning",
               *variant.flags(), *(extra or [])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
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
        """SIGTERM (graceful: in-flight requests finish), then SIGKILL after `grace_s`."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def metrics(url: str) -> dict[str, float]:
    """Prometheus text → {name{labels}: value} (enough for counters and histogram sums)."""
    status, text = get(url + "/metrics")
    out: dict[str, float] = {}
    for line in text.splitlines() if status == 200 else ():
        m = METRIC_LINE.match(line.strip())
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out
