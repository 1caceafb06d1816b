"""Where the load goes: a target is how a server is reached and, when structbench starts it, started, made ready
and stopped. The sweep, the QPS-at-SLO search, the overload check and the tune's verification open every server
through `open_target`; what they send is the protocol's business (loadtests/protocols.py).

  structbench   our service, started per configuration (loadtests/service_proc.py), with its /metrics
  url           a server somebody else runs, here or on another machine: nothing is started or stopped; readiness
                is the protocol's health route where it has one, else an open TCP port; no /metrics is read
                (server-side figures are not measured)
  kserve        KServe's ModelServer, started here from its own virtual environment on the same ONNX file and
  litserve      threads as ours (loadtests/peers/, `make peers`); server CPU and RSS from its process tree
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.core.errors import BenchError, ConfigError
from bench.core.processes import rss_mb_of, stop_group, tethered, tree_pids
from bench.measure.host import cpu_seconds
from loadtests.protocols import ProtocolSpec

KINDS = ("structbench", "url", "kserve", "litserve")
PEERS = {"kserve": "kserve-v2", "litserve": "http-json"}  # a peer server and the protocol it speaks
LITSERVE_OPTIONS = (("path", "/predict"), ("body", '{"text": "{text}"}'), ("answer", "label"), ("ready", "/health"))
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TargetSpec:
    """A target: its kind, its URL (kind url), the protocol spoken to it, request headers (credentials: never
    written to results, never compared), and for peers started here the ONNX Runtime threads and max batch."""

    kind: str = "structbench"
    url: str | None = None
    protocol: ProtocolSpec = field(default_factory=ProtocolSpec)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False, compare=False)
    threads: int | None = None
    max_batch: int = 8

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown target kind {self.kind!r} (choose from {', '.join(KINDS)})")
        if self.kind == "url":
            parts = urlsplit(self.url or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"--target must be an http(s) URL (got {self.url!r})")
        if self.kind in PEERS and self.protocol.name != PEERS[self.kind]:
            raise ConfigError(f"the {self.kind} peer speaks {PEERS[self.kind]}, not {self.protocol.name}")

    @property
    def public_url(self) -> str | None:
        """The URL as results may show it: no user, password, query or fragment."""
        if not self.url:
            return None
        p = urlsplit(self.url)
        host = p.hostname + (f":{p.port}" if p.port else "")
        return urlunsplit((p.scheme, host, p.path.rstrip("/"), "", ""))

    @property
    def base_url(self) -> str:
        return (self.url or "").rstrip("/")


def peer_spec(kind: str, task: str, model_dir: str | None, threads: int | None = None) -> TargetSpec:
    """A peer server structbench starts, speaking its own protocol to the same model."""
    if kind == "kserve":
        protocol = ProtocolSpec("kserve-v2", task, "structbench", model_dir)
    else:
        protocol = ProtocolSpec("http-json", task, None, model_dir, LITSERVE_OPTIONS)
    return TargetSpec(kind, protocol=protocol, threads=threads)


def peer_python(kind: str) -> Path:
    """The peer's own virtual environment (its pins may clash with ours: kserve pins fastapi, uvicorn,
    protobuf; litserve pins its FastAPI stack); `make peers` makes it, STRUCTBENCH_PEERS moves it."""
    root = Path(os.environ.get("STRUCTBENCH_PEERS", REPO / ".venv-peers"))
    python = root / kind / "bin" / "python"
    if not python.exists():
        raise BenchError(f"the {kind} peer server is not installed ({python} is missing): run `make peers`")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(url: str, ready_path: str | None, headers: dict[str, str], timeout: float = 2.0) -> str | None:
    """None when the server answers its readiness route with 200 (or, with none, accepts a TCP connection); else
    why not, in words."""
    import httpx

    if ready_path:
        try:
            status = httpx.get(url + ready_path, headers=headers, timeout=timeout).status_code
        except httpx.HTTPError as exc:
            return f"{url}{ready_path}: {type(exc).__name__}: {exc}"
        return None if status == 200 else f"{url}{ready_path} answered HTTP {status}"
    p = urlsplit(url)
    try:
        with socket.create_connection((p.hostname, p.port or (443 if p.scheme == "https" else 80)), timeout):
            return None
    except OSError as exc:
        return f"{p.hostname}:{p.port}: {exc.strerror or exc}"


class External:
    """A server somebody else runs: waiting for it is polling its readiness; nothing to stop."""

    scrapes_metrics = False
    pid: int | None = None

    def __init__(self, spec: TargetSpec) -> None:
        from loadtests.protocols import ready_path

        self.spec, self.url = spec, spec.base_url
        self.ready_path = ready_path(spec.protocol)

    def wait_ready(self, timeout_s: float = 10.0) -> str:
        """Ready: its protocol's health route answers 200, or the server has no such route (404, 405) but takes
        connections — then a wrong protocol shows as failures by cause in the windows, not as a start failure."""
        deadline, why = time.monotonic() + timeout_s, None
        headers = dict(self.spec.headers)
        while time.monotonic() < deadline:
            why = reachable(self.url, self.ready_path, headers)
            if why is None or (why.endswith(("HTTP 404", "HTTP 405")) and reachable(self.url, None, {}) is None):
                return self.url
            time.sleep(0.5)
        raise BenchError(f"target not ready after {timeout_s:.0f} s: {why}")

    def stop(self) -> None:
        pass

    def cpu_seconds(self) -> float | None:
        return None

    def rss_mb(self) -> float | None:
        return None


class Peer(External):
    """A peer server started here in its own process group from its own venv, on a free 127.0.0.1 port, serving
    the ORT INT8 file structbench's own service runs (exported here when missing)."""

    def __init__(self, spec: TargetSpec, model: str) -> None:
        from bench.core.signature import IDS, MASK, TYPES
        from bench.model.artifacts import model_file
        from bench.model.sources import materialize
        from bench.model.tokenize import Tokenizer
        from exporters.pipeline import ExportConfig, export_all

        python = peer_python(spec.kind)
        onnx_dir, _ = export_all(ExportConfig(model=model))
        onnx = model_file(onnx_dir, "ort", "int8", "cpu")
        port = free_port()
        cmd = [str(python), str(REPO / "loadtests" / "peers" / f"{spec.kind}_server.py"), "--model-file", str(onnx),
               "--port", str(port), "--threads", str(spec.threads or len(os.sched_getaffinity(0)))]
        if spec.kind == "litserve":
            folder = str(materialize(model))
            cmd += ["--tokenizer", folder, "--max-batch", str(spec.max_batch),
                    "--feeds", ",".join((IDS, MASK, TYPES)), "--pad-id", str(Tokenizer(folder).pad_id)]
        super().__init__(TargetSpec("url", f"http://127.0.0.1:{port}", spec.protocol))
        self.kind = spec.kind
        self.log: list[str] = []
        self.proc = tethered(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,  # gone with us
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        self.pid = self.proc.pid
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.log = (self.log + [line.rstrip()])[-30:]

    def wait_ready(self, timeout_s: float = 120.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if reachable(self.url, self.ready_path, {}) is None:
                return self.url
            time.sleep(0.3)
        tail = " | ".join(self.log[-3:])
        self.stop()
        raise BenchError(f"the {self.kind} server did not become ready "
                         f"(exit code {self.proc.returncode}): {tail}")

    def stop(self, grace_s: float = 10.0) -> None:
        stop_group(self.proc, grace_s)  # its workers (LitServe spawns an inference process) go with the group

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(tree_pids(self.proc.pid))

    def rss_mb(self) -> float | None:
        return rss_mb_of(tree_pids(self.proc.pid))
