"""Runs from several machines in one report: each run labelled by its host (CPU model × cores, GPU model) and its
price per hour, and the checks that refuse runs which measured different things (model, workload, SLO, schema
version). Different hosts are never a reason to refuse: comparing them is the point of a merged report.

Prices are inputs, in this order: `--price "HOST=USD"` at report time, the run's own `hour_usd` (given to
`bench run/all --hour-usd`), else the example price of the device below, which the report marks as an example.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from bench.core.errors import BenchError, ConfigError
from bench.core.results import RunResult
from bench.core.run_records import SourceMeta

# Examples only, never measurements: on-demand list prices of two common instance shapes, rounded.
EXAMPLE_PRICES = {"cpu": 0.10, "gpu": 0.53}  # USD per hour; the defaults of --cpu-hour-usd / --gpu-hour-usd
EXAMPLE_VCPUS = 2  # the CPU example's size: a CPU host of n vCPUs is priced n/2 times it
EXAMPLE_SOURCE = ("example prices, not quotes: AWS EC2 On-Demand list prices, us-east-1, Linux, as published "
                  "in 2024 — c6i.large (2 vCPU) $0.085/h ≈ CPU $0.10/h per 2 vCPUs of the host, g4dn.xlarge "
                  "(1× T4) $0.526/h ≈ GPU $0.53/h for a T4, other GPU models at their own instance's price per "
                  "GPU (reports.hosts.GPU_EXAMPLES); not re-checked since: give --price or --hour-usd for your own")
SOURCES = {"price": "--price at report time", "run": "stored in the run (--hour-usd)", "example": "example price"}
# A GPU is priced by its model, not at one price for every card: (name in the NVML model name, USD per GPU hour,
# the instance behind it). Examples, never quotes: AWS EC2 On-Demand list prices, us-east-1, Linux, as published in
# 2024, per GPU of the instance; not re-checked since. A model not listed gets the T4's, and the report says so.
GPU_EXAMPLES = (("H100", 12.29, "p5.48xlarge $98.32/h ÷ 8 GPUs"), ("A100", 4.10, "p4d.24xlarge $32.77/h ÷ 8 GPUs"),
                ("A10G", 1.01, "g5.xlarge $1.006/h"), ("L4", 0.80, "g6.xlarge $0.805/h"),
                ("T4", 0.53, "g4dn.xlarge $0.526/h"))


@dataclass(frozen=True)
class HostRun:
    """One run in a report: its host label, and its price per hour where one was given (None: example prices)."""

    label: str
    run: RunResult
    hour_usd: float | None = None
    price_source: str = "example"  # a key of SOURCES

    @property
    def has_gpu(self) -> bool:
        return bool(self.run.host.gpu_name)

    @property
    def test_data(self) -> str | None:
        """Why this run is not a measurement (tests build fake-GPU runs), or None for a real run."""
        return self.run.host.test_data or self.run.config.get("test_data")


def host_label(run: RunResult) -> str:
    """'AMD EPYC 7B13 2c' or 'Intel Xeon 8c + NVIDIA T4': what a user names in --price."""
    host = run.host
    cpu = " ".join(w for w in re.sub(r"\((R|TM|tm)\)", "", host.cpu_model or "unknown CPU").split()
                   if w not in ("Processor", "CPU"))  # "Intel(R) Xeon(R) Processor" → "Intel Xeon"
    label = f"{cpu or 'unknown CPU'} {host.logical_cores or '?'}c"
    return label + (f" + {host.gpu_name}" if host.gpu_name else "")


def example_cpu_hour(run: RunResult) -> float:
    """The CPU example price for this run's host: a CPU configuration keeps every core of it busy, so it needs a
    VM of as many vCPUs (a 16-vCPU host at the 2-vCPU VM's price made its CPU rows look 8× too cheap)."""
    vcpus = run.host.logical_cores
    vcpus = vcpus if isinstance(vcpus, int) and vcpus > 0 else EXAMPLE_VCPUS
    return EXAMPLE_PRICES["cpu"] * vcpus / EXAMPLE_VCPUS


def example_gpu_hour(run: RunResult) -> tuple[float, str]:
    """The example price of this run's GPU model, and where it comes from (2024 list prices, see GPU_EXAMPLES)."""
    name = (run.host.gpu_name or "").upper()
    for model, usd, source in GPU_EXAMPLES:
        if model in name:
            return usd, f"{model} example: {source}, 2024 list price"
    what = f"no example price for {run.host.gpu_name}" if run.host.gpu_name else "no GPU in this run"
    return EXAMPLE_PRICES["gpu"], f"{what}: the T4 example (g4dn.xlarge $0.526/h, 2024); give --price"


def parse_price(text: str) -> tuple[str, float]:
    """'AMD EPYC 2c=0.10' -> ('AMD EPYC 2c', 0.1); the price must be a finite number > 0."""
    key, sep, value = str(text).rpartition("=")
    try:
        usd = float(value)
    except ValueError:
        usd = math.nan
    if not sep or not key.strip() or not math.isfinite(usd) or usd <= 0:
        raise ConfigError(f"--price needs HOST=USD_PER_HOUR with a number > 0, e.g. \"AMD EPYC 2c=0.10\"; "
                          f"got {text!r}")
    return key.strip(), usd


def positive(name: str, value) -> float:
    """`value` as a finite number > 0, or a ConfigError naming the flag."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")
    return number


def matches(key: str, label: str, run_id: str) -> bool:
    """Every word of `key` appears in the host label (case-insensitive), or `key` is the run's id."""
    words = label.lower()
    return key == run_id or all(w in words for w in key.lower().split())


def host_runs(runs: list[RunResult], prices: tuple = ()) -> list[HostRun]:
    """Label and price every run. Two runs of one host are told apart by their run ids; a --price that names
    no host, or a host named by two prices, is refused."""
    labels = [host_label(r) for r in runs]
    labels = [f"{lb} ({r.run_id})" if labels.count(lb) > 1 else lb for lb, r in zip(labels, runs)]
    given: dict[int, tuple[str, float]] = {}
    for key, usd in prices:
        hits = [i for i, (lb, r) in enumerate(zip(labels, runs)) if matches(key, lb, r.run_id)]
        if not hits:
            raise ConfigError(f"--price {key!r} matches no host (hosts: {'; '.join(labels)})")
        for i in hits:
            if i in given and given[i][1] != usd:
                raise ConfigError(f"host {labels[i]!r} has two prices: {given[i][0]!r} and {key!r}")
            given[i] = (key, usd)
    return [priced(lb, r, given.get(i)) for i, (lb, r) in enumerate(zip(labels, runs))]


def priced(label: str, run: RunResult, given: tuple[str, float] | None) -> HostRun:
    if given:
        return HostRun(label, run, given[1], "price")
    stored = run.config.get("hour_usd")
    if isinstance(stored, (int, float)) and not isinstance(stored, bool) and stored > 0:
        return HostRun(label, run, float(stored), "run")
    return HostRun(label, run)


def model_identity(run: RunResult) -> SourceMeta | str | None:
    """What the model is, without where it lay on its machine (folders differ between hosts)."""
    source = run.model.source
    if source is None:
        return run.model.spec
    return replace(source, note=None, extra={k: v for k, v in source.extra.items()
                                             if k not in ("model_dir", "path", "local_dir")})


def refusals(runs: list[RunResult], versions: list[int | None]) -> list[str]:
    """Why these runs measured different things (empty: they may share a report). Hosts may differ."""
    first, out = runs[0], []
    for run, version in zip(runs[1:], versions[1:]):
        pair = f"{first.run_id} vs {run.run_id}"
        if model_identity(run) != model_identity(first):
            out.append(f"different models ({pair}: {first.model.spec} vs {run.model.spec})")
        if run.config.get("seed") != first.config.get("seed"):
            out.append(f"different workloads ({pair}: corpus seed {first.config.get('seed')} vs "
                       f"{run.config.get('seed')})")
        loads = [sorted({lt.workload for lt in r.loadtests}) for r in (first, run)]
        if all(loads) and loads[0] != loads[1]:
            out.append(f"different load-test workloads ({pair}: {loads[0]} vs {loads[1]})")
        slos = [sorted({(s.slo_ms, s.percentile) for s in r.slo_searches}) for r in (first, run)]
        if all(slos) and slos[0] != slos[1]:
            out.append(f"different SLOs searched ({pair}: {slos[0]} vs {slos[1]})")
        if version != versions[0]:
            out.append(f"different schema versions ({pair}: {versions[0]} vs {version})")
    return out


def check_mergeable(runs: list[RunResult], versions: list[int | None], force: bool = False) -> list[str]:
    """Refuse, in one line, runs that measured different things unless `force`; returns what was forced."""
    reasons = refusals(runs, versions)
    if reasons and not force:
        raise BenchError(f"refusing to merge runs that measured different things: {'; '.join(reasons)} "
                         f"(add --force to merge anyway)")
    return reasons
