"""Run one cell in a fresh worker process (`python -m bench.engine.worker`) and turn what it returns into a CellResult.

A worker that crashes, hangs past its timeout or runs out of memory becomes a failed cell with its reason, so
the caller's run goes on. Keeping the run file current after every cell, and resuming, live in bench.engine.harness.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field, replace

from bench.core.errors import ConfigError
from bench.core.processes import lifeline, stop_group
from bench.core.results import CellResult, CellSpec, cell_from_dict, record_from_dict
from bench.core.stats import StopRule


@dataclass(frozen=True)
class WorkerRequest:
    """Everything a worker needs to measure one cell; sent to it as JSON on stdin."""

    spec: CellSpec
    model_dir: str
    model_file: str | None = None  # the ONNX file an ORT cell runs, resolved by the caller
    seed: int = 0
    stop: StopRule = field(default_factory=StopRule)
    warmup_iters: int = 3  # untimed batches after the first (cold) inference
    tdp_w: float | None = None
    options: dict = field(default_factory=dict)  # backend-specific (e.g. a fake backend's sleep_s)
    gpu: int = 0  # the CUDA device of a GPU cell (as CUDA numbers them, within CUDA_VISIBLE_DEVICES)
    gpu_warmup_s: float = 1.0  # GPU warm-up: every batch shape once, then on until this much time has passed

    def __post_init__(self) -> None:
        if self.warmup_iters < 0:
            raise ConfigError(f"warmup_iters must be >= 0 (got {self.warmup_iters})")
        if self.gpu < 0 or self.gpu_warmup_s < 0:
            raise ConfigError(f"gpu and gpu_warmup_s must be >= 0 (got {self.gpu}, {self.gpu_warmup_s})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "WorkerRequest":
        return record_from_dict(cls, json.loads(text))


@dataclass(frozen=True)
class WorkerLimits:
    timeout_s: float = 180.0
    memory_limit_mb: int | None = None  # RLIMIT_AS of the worker; None = unlimited

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ConfigError(f"worker timeout must be > 0 (got {self.timeout_s})")


@dataclass
class WorkerOutput:
    stdout: str = ""
    stderr_tail: list = field(default_factory=list)
    returncode: int | None = None
    timed_out: bool = False


def limit_memory(pid: int, mb: int | None) -> None:
    """Cap a worker's address space (RLIMIT_AS) from outside: a cell that runs out fails with MemoryError."""
    if mb:
        resource.prlimit(pid, resource.RLIMIT_AS, (mb * 2**20, mb * 2**20))


def memory_limit_mb(request: WorkerRequest, limits: WorkerLimits) -> int | None:
    """The address-space cap of this worker: none for GPU cells, as CUDA reserves tens of GiB of virtual address
    space at initialisation and would fail under any cap that means anything for host memory."""
    from bench.backends import resolve

    return None if resolve(request.spec.backend).on_gpu else limits.memory_limit_mb


def _pump_stderr(proc: subprocess.Popen, out: WorkerOutput, on_progress) -> None:
    for line in proc.stderr:
        if line.startswith("PROGRESS "):
            if on_progress:
                on_progress(float(line.split()[1]))
        else:
            out.stderr_tail = (out.stderr_tail + [line.rstrip()])[-20:]


def spawn_worker(request: WorkerRequest, limits: WorkerLimits, on_progress=None, on_start=None) -> WorkerOutput:
    """Start `python -m bench.engine.worker`, feed it the request, wait up to the timeout, collect its output.
    stdout and stderr are drained by threads so a full pipe can never look like a hang."""
    env, fds = lifeline()
    # its own process group (a timeout kills the worker and anything it started); no preexec_fn, which is unsafe
    # while this process runs threads: the memory cap is set on the child from here, before it has imported much
    proc = subprocess.Popen([sys.executable, "-m", "bench.engine.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **env}, pass_fds=fds)
    limit_memory(proc.pid, memory_limit_mb(request, limits))
    if on_start:
        on_start(proc.pid)
    out = WorkerOutput()
    readers = [threading.Thread(target=_pump_stderr, args=(proc, out, on_progress), daemon=True),
               threading.Thread(target=lambda: setattr(out, "stdout", proc.stdout.read()), daemon=True)]
    for reader in readers:
        reader.start()
    proc.stdin.write(request.to_json())  # small: fits the pipe buffer even if the worker never reads
    proc.stdin.close()
    try:
        proc.wait(timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        out.timed_out = True
    finally:
        stop_group(proc)
        for reader in readers:
            reader.join(timeout=5)
    out.returncode = proc.returncode
    return out


def failure_reason(out: WorkerOutput, limits: WorkerLimits) -> str:
    if out.timed_out:
        return f"hung: no result within {limits.timeout_s:g} s (worker killed)"
    last = next((line for line in reversed(out.stderr_tail) if line.strip()), "")
    if out.returncode is not None and out.returncode < 0:
        sig = signal.Signals(-out.returncode).name
        hint = " (out of memory? the kernel OOM killer sends SIGKILL)" if sig == "SIGKILL" else ""
        return f"crashed: worker killed by {sig}{hint}"
    if "MemoryError" in "\n".join(out.stderr_tail):
        return "out of memory (MemoryError in worker)"
    return f"crashed: worker exited with code {out.returncode} and no result" + \
        (f"; last error: {last}" if last else "")


def parse_result(out: WorkerOutput, spec: CellSpec, limits: WorkerLimits) -> CellResult:
    """The worker's JSON (its last stdout line), or a failed cell saying what went wrong."""
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    if not out.timed_out and lines:
        try:
            return cell_from_dict(json.loads(lines[-1]))
        except (ValueError, TypeError):
            pass
    return CellResult(spec, "failed", failure_reason(out, limits))


def run_cell(request: WorkerRequest, limits: WorkerLimits, sampler_factory=None, on_progress=None) -> CellResult:
    """One cell in a fresh worker, with the resource sampler watching it from this process."""
    spec = request.spec
    holder: dict = {}

    def started(pid: int) -> None:
        if sampler_factory is not None:
            holder["sampler"] = sampler_factory(pid).start()

    out = spawn_worker(request, limits, on_progress=on_progress, on_start=started)
    sampler = holder.get("sampler")
    if sampler is not None:
        sampler.stop()
    cell = parse_result(out, spec, limits)
    if sampler is not None and cell.status == "ok":
        from bench.core.records import Resources, known

        summary = {**sampler.summary(), "sampler_overhead_percent": sampler.self_overhead_percent()}
        run = replace(cell.runs[0], resources=Resources(**known(Resources, summary)))
        cell = replace(cell, runs=(run,))
    return cell
