"""A load test's settings and one Locust window run with them: the sweep's config (SweepConfig, with the service
presets it defaults to and the SLO search's SearchConfig it may carry) and `run_locust`, one headless Locust run
against a service. The sweep, its distributed windows, the SLO search and the overload check all build on this
module, so their imports go one way (sweep → distributed, slo_search → windows; never back).
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import BenchError, ConfigError
from bench.core.processes import stop_group, tethered
from bench.model.buckets import GPU_MAX_PADDING
from loadtests.protocols import ProtocolSpec, Spoken
from loadtests.samples import sample_paths
from loadtests.service_proc import ServiceVariant, host_pinning
from loadtests.shapes import client_cpu

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# Sweeps measure the model, so the cache is off except where it is the point (one default: ServiceConfig's).
PRESETS = {
    "batch": ServiceVariant.of("int8 batching", cache_size=0),
    "nobatch": ServiceVariant.of("int8 no batching (article)", batching=False, cache_size=0),
    "cache": ServiceVariant.of("int8 batching + LRU cache", cache_size=1024),
    # Triton's dynamic-batcher knobs (bench.service.admission): a batch of 4 at once, else wait up to 10 ms
    "triton": ServiceVariant.of("int8 batching, preferred 4, delay 10 ms", cache_size=0, preferred_batch_sizes=(4,),
                                max_wait_ms=10.0),
    "fp32": ServiceVariant.of("fused fp32 batching", backend="ort-fp32-fused-cpu", cache_size=0),
    "torch": ServiceVariant.of("torch fp32 batching", backend="torch-fp32-cpu", cache_size=0),
    # a backend that sleeps a known time (bench.backends.fake): the service and compare's own tests of themselves
    "fake": ServiceVariant.of("fake batching (test backend)", backend="fake-fp32-cpu", cache_size=0),
    # On a GPU batching is where throughput comes from: up to 32 texts a call, with ServiceConfig's GPU padding
    # budget (idle lanes make pad tokens nearly free there).
    "gpu": ServiceVariant.of("fp16 CUDA batching (GPU)", backend="ort-fp16-cuda", max_batch=32,
                             max_padding=GPU_MAX_PADDING, cache_size=0),
    # the same on PyTorch's CUDA build, for a GPU host whose onnxruntime has no CUDA provider
    "gpu-torch": ServiceVariant.of("torch fp16 CUDA batching (GPU)", backend="torch-fp16-cuda", max_batch=32,
                                   max_padding=GPU_MAX_PADDING, cache_size=0),
}
CPU_DEFAULTS = ("batch", "nobatch")
DEFAULT_VARIANTS = tuple(PRESETS[name] for name in CPU_DEFAULTS)  # a CPU host's defaults

# The SLO search's probes (loadtests.slo_search)
MIN_COUNTED = 300  # requests a probe aims to count: enough for the bound to allow a few over the SLO
MAX_WINDOW_S = 10.0
LOCUST_START_S = 4.0  # a Locust run's own start and stop, for the time cap's estimate


@dataclass(frozen=True)
class SearchConfig:
    """How to search: the SLO and its test, the windows of a probe, the bracket and bisection, the time cap."""

    slo_ms: float = 300.0
    percentile: float = 95.0
    confidence: float = 0.99
    window_s: float = 2.0  # at least; longer at low rates so that a probe counts about MIN_COUNTED requests
    windows: int = 5  # per probe, the first of them warm-up
    stability: float = 0.10
    rate_tolerance: float = 0.05
    start_rps: float | None = None  # None: from the closed-loop levels where known, else slo_search.DEFAULT_START_RPS
    # The configuration's saturated closed-loop QPS where known: the bracket steps up to it before past it (an
    # open-loop rate at saturation cannot keep a P95, so the first failing probe lands there, not at 2× the start
    # rate deep in overload, whose backlog the next probe inherits)
    ceiling_rps: float | None = None
    min_rps: float = 0.5
    growth: float = 2.0
    precision: float = 0.05  # stop when the first failing rate / the last passing one ≤ 1 + precision
    time_cap_s: float = 180.0  # per configuration
    max_probes: int = 14
    trials: int = 2  # runs of one rate while it is unstable

    def __post_init__(self) -> None:
        if not (self.slo_ms > 0 and 50 <= self.percentile < 100 and 0.5 <= self.confidence < 1):
            raise ConfigError(f"bad SLO test: P{self.percentile} <= {self.slo_ms} ms at confidence {self.confidence}")
        if self.window_s <= 0 or self.windows < 4 or not 0 < self.stability < 1 or not 0 < self.rate_tolerance < 1:
            raise ConfigError("a probe needs window_s > 0, >= 4 windows (warm-up + 3), stability and rate "
                              "tolerance within (0, 1)")
        if self.growth <= 1 or self.precision <= 0 or self.time_cap_s <= 0 or self.min_rps <= 0:
            raise ConfigError("search needs growth > 1, precision > 0, a time cap > 0 and min_rps > 0")
        if any(r is not None and r <= 0 for r in (self.start_rps, self.ceiling_rps)) or self.max_probes < 1 \
                or self.trials < 1:
            raise ConfigError("start_rps and ceiling_rps must be > 0, max_probes and trials >= 1")

    def window_for(self, rate: float) -> float:
        counted = self.windows - 1
        # a little over MIN_COUNTED: Poisson arrivals must not leave a probe short of the JUDGED requests
        return min(MAX_WINDOW_S, max(self.window_s, 1.15 * MIN_COUNTED / (rate * counted)))

    def probe_seconds(self, rate: float) -> float:
        return self.window_for(rate) * self.windows + LOCUST_START_S


@dataclass(frozen=True)
class SweepConfig:
    """A load-test sweep. `variants` defaults to a CPU host's; the CLI adds the GPU preset on a GPU host
    (default_variant_names), so building a config never probes the hardware."""

    model: str = "twin"
    variants: tuple = DEFAULT_VARIANTS
    users: tuple = (1, 2, 4, 8, 16)
    open_rates: tuple = ()
    duration_s: float = 10.0
    ramp_s: float = 2.0
    workers: int = 1
    workload: str = "corpus"
    seed: int = 0
    processes: int = 3  # fresh service processes per configuration, one round each: CIs are across them
    repeats: int = 1  # windows per configuration, level and process, interleaved A B B A
    window_s: float = 2.0  # QPS is counted per window of this length (one process's CI is across them)
    slo_search: SearchConfig | None = None  # also search each configuration's QPS at the SLO (off: None)
    request_timeout_s: float = 30.0  # a request unanswered this long fails (a hanging target), the window goes on

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.processes < 1 or self.window_s <= 0:
            raise ConfigError(f"repeats and processes must be >= 1 and window_s > 0 (got {self.repeats}, "
                              f"{self.processes}, {self.window_s})")
        if not self.variants or any(u < 1 for u in self.users) or any(r <= 0 for r in self.open_rates):
            raise ConfigError("a sweep needs service variants, users >= 1 and open-loop rates > 0")
        if self.duration_s <= 0 or self.ramp_s < 0 or self.workers < 1:
            raise ConfigError(f"bad sweep timing/workers: duration {self.duration_s}, ramp {self.ramp_s}, "
                             f"workers {self.workers}")
        if not self.request_timeout_s > 0:
            raise ConfigError(f"request timeout must be > 0 (got {self.request_timeout_s})")
        if self.workload not in ("corpus", "zipf"):
            raise ConfigError(f"workload must be corpus or zipf (got {self.workload!r})")


def locust_command(url: str, users: int, cfg: SweepConfig, prefix: Path, rate: float | None, spoken: Spoken,
                   client_out: Path) -> list[str]:
    """One headless Locust run of our locustfile; structbench's settings go as Locust options (locustfile.py)."""
    run_s = cfg.ramp_s + cfg.duration_s
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url, "--csv", str(prefix),
           "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "10", "--exit-code-on-error", "0",
           *sb_options(cfg, spoken, client_out, rate)]
    if rate is not None:
        return cmd + ["-u", "1", "-r", "1", "-t", f"{cfg.duration_s + 30:.0f}s"]
    spawn = users / cfg.ramp_s if cfg.ramp_s > 0 else users
    cmd += ["-u", str(users), "-r", f"{spawn:.3f}", "-t", f"{math.ceil(run_s)}s", "--reset-stats"]
    return cmd + (["--processes", str(cfg.workers)] if cfg.workers > 1 else [])


def sb_options(cfg: SweepConfig, spoken: Spoken, client_out: Path, rate: float | None) -> list[str]:
    """The locustfile's own options for one window: protocol, loop, workload, where its figures go."""
    p = spoken.spec
    out = ["--sb-protocol", p.name, "--sb-task", p.task, "--sb-workload", cfg.workload, "--sb-seed", str(cfg.seed),
           "--sb-client-out", str(client_out), "--sb-timeout", f"{cfg.request_timeout_s:g}"]
    out += ["--sb-mode", "open", "--sb-rate", f"{rate:g}", "--sb-duration", f"{cfg.duration_s:g}"] if rate \
        else ["--sb-mode", "closed", "--sb-ramp-s", f"{cfg.ramp_s:g}"]
    out += ["--sb-model-name", p.model_name] if p.model_name else []
    out += ["--sb-model-dir", p.model_dir] if p.model_dir else []
    return out + [f"--sb-protocol-option={k}={v}" for k, v in p.options]


def run_locust(url: str, users: int, cfg: SweepConfig, out_dir: Path, tag: str, rate: float | None = None,
               spoken: Spoken | None = None) -> dict:
    """One Locust run; returns the aggregated CSV row, the failures by cause, client figures and the client's CPU
    in its timed window."""
    prefix = out_dir / tag
    client_out = out_dir / f"{tag}_client.json"
    for stale in sample_paths(client_out):  # a re-run with the same tag must not merge an older run's samples
        stale.unlink()
    spoken = spoken or ours(cfg.model)
    proc = tethered(locust_command(url, users, cfg, prefix, rate, spoken, client_out), env=locust_env(spoken),
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # gone with this process
    host_pinning().pin(proc.pid, client=True)  # Locust's --processes children inherit it
    limit = cfg.ramp_s + cfg.duration_s + 120
    try:
        output, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        stop_locust(proc)
        raise BenchError(f"locust ran past {limit:.0f} s for {tag}: stopped") from None
    except BaseException:  # Ctrl-C, SIGTERM (bench.core.errors.Terminated): Locust must not run on alone
        stop_locust(proc)
        raise
    return window_result(prefix, client_out, tag, proc.returncode, output)


def window_result(prefix: Path, client_out: Path, tag: str, code: int | None, output: str) -> dict:
    if code is not None and code < 0:  # what it wrote (if anything) is a window cut short
        raise BenchError(f"locust was killed by {signal.Signals(-code).name} during {tag}: {output.strip()[-300:]}")
    row = aggregated_row(Path(f"{prefix}_stats.csv"))
    if row is None:
        raise BenchError(f"locust wrote no stats for {tag} (exit {code}): {output.strip()[-300:]}")
    client = json.loads(client_out.read_text()) if client_out.exists() else {}
    client["failure_causes"] = failure_causes(Path(f"{prefix}_failures.csv"))
    return {"row": row, "client": client, **client_cpu(client)}


def failure_causes(path: Path) -> dict[str, int]:
    """Locust's failures CSV as {cause: occurrences} (the locustfile names each: HTTP 503, wrong answer: …)."""
    if not path.exists():
        return {}
    out: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            cause = (r.get("Error") or "unknown").strip()
            if cause.startswith("CatchResponseError("):  # Locust wraps resp.failure()'s message
                cause = cause[len("CatchResponseError("):].rstrip(")").strip("'\"")
            out[cause] = out.get(cause, 0) + int(float(r.get("Occurrences") or 0))
    return out


def stop_locust(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM Locust's group (its --processes workers too), SIGKILL after `grace_s`."""
    stop_group(proc, grace_s)


def locust_env(spoken: Spoken) -> dict:
    """The environment of every Locust process of one window: request headers (credentials) go here, not on a
    command line that `ps` shows."""
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SB_HEADERS"}
    return {**env, "LOCUST_SB_HEADERS": json.dumps(dict(spoken.headers))} if spoken.headers else env


def ours(model: str) -> Spoken:
    """structbench's own protocol for the model's task."""
    return Spoken(ProtocolSpec("structbench", model_task(model)))


def spoken_for(model: str, variant: ServiceVariant) -> Spoken:
    """What a configuration's server is spoken to with: ours, or its target's protocol and headers."""
    t = variant.target
    return ours(model) if t is None or t.kind == "structbench" else Spoken(t.protocol, t.headers)


def model_task(model: str) -> str:
    """What the model answers (bench.core.signature): the locustfile posts to its route and checks its answer."""
    from bench.core.signature import read_signature
    from bench.model.sources import materialize

    return read_signature(materialize(model)).task


def aggregated_row(path: Path) -> dict | None:
    if not path.exists():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        return next((r for r in csv.DictReader(fh) if r.get("Name") == "Aggregated"), None)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
