"""The results file: frozen dataclasses with a schema version of their own (not the package version).

Raw samples are the truth; statistics are derived on read (`CellResult.stats`) and also written out,
marked derived, so pandas users need not recompute them.

Schema history (SCHEMA_VERSION):
  1 (2026-11-25) first version: host, model, config, peak GEMM, cells with raw latencies, loadtests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path

from bench.errors import BenchError
from bench.paths import atomic_write_text

SCHEMA_VERSION = 1
STATUSES = ("ok", "skipped", "failed")


@dataclass(frozen=True)
class CellSpec:
    """One point of the grid: backend × batch × workload (corpus text or fixed-length bucket) × threads."""

    backend: str
    batch: int = 1
    workload: str = "corpus"  # "corpus" (≈80-char reviews) or "bucket"
    seq_len: int | None = None  # tokens, for bucket workloads
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1 (got {self.batch})")
        if self.workload not in ("corpus", "bucket"):
            raise ValueError(f"workload must be corpus or bucket (got {self.workload!r})")
        if self.workload == "bucket" and not (self.seq_len and 3 <= self.seq_len <= 512):
            raise ValueError(f"sequence length must be within 3..512 tokens (got {self.seq_len})")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (got {self.threads})")

    @property
    def key(self) -> str:
        shape = f"L{self.seq_len}" if self.workload == "bucket" else "corpus"
        return f"{self.backend}|b{self.batch}|{shape}|t{self.threads or 'all'}"


@dataclass(frozen=True)
class CellResult:
    """Everything one worker measured for one cell, or why it was skipped / failed."""

    spec: CellSpec
    status: str
    reason: str | None = None
    load: dict = field(default_factory=dict)  # imports_s, create_s, first_infer_s
    warmup_s: tuple = ()
    latencies_s: tuple = ()  # every timed batch, in order
    items_per_batch: int = 0
    tokens_per_item: float = 0.0
    window_s: float = 0.0  # wall time of the timed loop
    stop_reason: str | None = None
    resources: dict = field(default_factory=dict)  # sampler summary: RSS/USS/CPU (+ GPU)
    energy: dict = field(default_factory=dict)  # energy_j, source, estimated, assumptions
    device_memory: dict = field(default_factory=dict)
    flops_per_batch: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"cell status must be one of {STATUSES} (got {self.status!r})")

    @property
    def throughput(self) -> float | None:
        """Items per second over the timed window: measured, not derived from the mean latency."""
        if self.status != "ok" or self.window_s <= 0:
            return None
        return len(self.latencies_s) * self.items_per_batch / self.window_s

    @property
    def achieved_flops(self) -> float | None:
        """Model FLOPs per second at the mean batch latency (for the roofline)."""
        if not self.flops_per_batch or not self.stats:
            return None
        return self.flops_per_batch / self.stats["mean"]

    @cached_property
    def stats(self) -> dict:
        from bench.measure.stats import bootstrap_ci, summarize

        if self.status != "ok" or not self.latencies_s:
            return {}
        out = summarize(self.latencies_s)
        for stat in ("mean", "p50", "p95", "p99"):
            out[f"{stat}_ci95"] = list(bootstrap_ci(self.latencies_s, stat, n_boot=1000, seed=0))
        return out


@dataclass(frozen=True)
class RunResult:
    run_id: str
    created: str
    host: dict
    model: dict
    config: dict
    peak_gemm_flops: float | None = None
    cells: tuple = ()
    loadtests: tuple = ()
    schema_version: int = SCHEMA_VERSION

    def with_cell(self, cell: CellResult) -> "RunResult":
        """A new run with `cell` added or replacing the cell of the same key."""
        kept = tuple(c for c in self.cells if c.spec.key != cell.spec.key)
        return replace(self, cells=kept + (cell,))

    def cell(self, key: str) -> CellResult | None:
        return next((c for c in self.cells if c.spec.key == key), None)


def cell_to_dict(cell: CellResult) -> dict:
    out = asdict(cell)
    out["latencies_s"], out["warmup_s"] = list(cell.latencies_s), list(cell.warmup_s)
    out["derived"] = {"stats": cell.stats, "throughput_items_s": cell.throughput}  # recomputed on load
    return out


def run_to_dict(run: RunResult) -> dict:
    out = {f.name: getattr(run, f.name) for f in fields(run) if f.name not in ("cells", "loadtests")}
    out["cells"] = [cell_to_dict(c) for c in run.cells]
    out["loadtests"] = list(run.loadtests)
    return out


def cell_from_dict(data: dict) -> CellResult:
    data = {k: v for k, v in data.items() if k != "derived"}
    spec = CellSpec(**data.pop("spec"))
    known = {f.name for f in fields(CellResult)}
    unknown = set(data) - known
    if unknown:
        raise BenchError(f"unknown cell fields {sorted(unknown)}: file edited or from another tool")
    data["latencies_s"] = tuple(float(x) for x in data.get("latencies_s", ()))
    data["warmup_s"] = tuple(float(x) for x in data.get("warmup_s", ()))
    return CellResult(spec=spec, **data)


UPGRADES: dict = {}  # version -> function(dict) -> dict of version + 1; none yet


def upgrade(data: dict, path: Path) -> dict:
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise BenchError(f"{path} has no integer schema_version: not a structbench results file")
    if version > SCHEMA_VERSION:
        raise BenchError(f"{path} has schema_version {version}, newer than this toolkit's {SCHEMA_VERSION}: "
                         f"upgrade structbench to read it")
    while version < SCHEMA_VERSION:
        if version not in UPGRADES:
            raise BenchError(f"{path} has schema_version {version}, which this toolkit cannot upgrade")
        data = UPGRADES[version](data)
        version = data["schema_version"]
    return data


def run_from_dict(data: dict, path: Path = Path("<memory>")) -> RunResult:
    data = upgrade(dict(data), path)
    try:
        cells = tuple(cell_from_dict(c) for c in data.pop("cells", []))
        loadtests = tuple(data.pop("loadtests", []))
        return RunResult(cells=cells, loadtests=loadtests, **data)
    except (TypeError, ValueError, KeyError) as exc:
        raise BenchError(f"{path} is not a valid results file: {exc}") from None


def load_run(path: Path) -> RunResult:
    """Read results.json (or a run folder) with clear errors for missing, corrupt or foreign files."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"no results file at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path} is corrupt (not JSON: {exc})") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path} is not a structbench results file")
    return run_from_dict(data, path)


def save_run(run: RunResult, run_dir: Path) -> Path:
    """Atomically write results.json and the flat summary CSV."""
    path = Path(run_dir) / "results.json"
    atomic_write_text(path, json.dumps(run_to_dict(run), ensure_ascii=False, indent=1))
    atomic_write_text(Path(run_dir) / "summary.csv", summary_frame_csv(run))
    return path


SUMMARY_COLUMNS = ("key", "backend", "batch", "workload", "seq_len", "threads", "status", "reason", "n",
                   "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "stdev_ms", "p50_ci_lo_ms", "p50_ci_hi_ms",
                   "p95_ci_lo_ms", "p95_ci_hi_ms", "throughput_items_s", "peak_rss_mb", "mean_cpu_percent",
                   "energy_j_per_item", "energy_source", "load_total_s", "stop_reason")


def summary_rows(run: RunResult) -> list[dict]:
    return [summary_row(c) for c in run.cells]


def summary_row(c: CellResult) -> dict:
    s, ms = c.stats, (lambda v: None if v is None else round(v * 1000, 3))
    energy = c.energy.get("energy_j")
    n_items = len(c.latencies_s) * c.items_per_batch
    return {
        "key": c.spec.key, "backend": c.spec.backend, "batch": c.spec.batch, "workload": c.spec.workload,
        "seq_len": c.spec.seq_len, "threads": c.spec.threads, "status": c.status, "reason": c.reason,
        "n": s.get("n"), **{f"{k}_ms": ms(s.get(k)) for k in ("mean", "p50", "p90", "p95", "p99", "stdev")},
        "p50_ci_lo_ms": ms(s["p50_ci95"][0]) if s else None, "p50_ci_hi_ms": ms(s["p50_ci95"][1]) if s else None,
        "p95_ci_lo_ms": ms(s["p95_ci95"][0]) if s else None, "p95_ci_hi_ms": ms(s["p95_ci95"][1]) if s else None,
        "throughput_items_s": c.throughput,
        "peak_rss_mb": (c.resources.get("peak_rss_bytes") or 0) / 2**20 or None,
        "mean_cpu_percent": c.resources.get("mean_cpu_percent"),
        "energy_j_per_item": energy / n_items if energy is not None and n_items else None,
        "energy_source": c.energy.get("source"), "load_total_s": sum(c.load.values()) if c.load else None,
        "stop_reason": c.stop_reason,
    }


def summary_frame_csv(run: RunResult) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(summary_rows(run))
    return buf.getvalue()
