"""The results store: every run's records as tidy tables that pandas and DuckDB read directly, across runs and hosts.

Five tables, written beside results.json as `store/<table>.parquet`: `runs` (one row per run: what produced it and
what it holds), `cells` (one row per engine cell), `levels` (per load-test level), `probes` (per SLO-search probe)
and `tune` (per tune candidate). Every row carries the run's identity (IDENTITY), so one table answers a question
across runs and hosts without a join. `run_id` is the run's folder name, what `--run`, `report` and `compare` take:
a renamed copy of a folder is a run of its own (`runs.stored_run_id` keeps the id its results.json says).

results.json stays the truth: the store is derived from it, as summary.csv is, and `read_store` rebuilds a run's
tables from its results.json where the store is missing (runs older than the store), from another store version,
or written from another results.json (`runs.source_sha256`). pandas and pyarrow are imported only when used.

Store history (STORE_VERSION):
  1 (2026-12-03) first version: runs, cells, levels, probes, tune.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.errors import BenchError
from bench.core.records import CellResult, LoadLevel, ServiceSetup
from bench.core.search_records import SearchProbe, SloSearch, TuneRecord

if TYPE_CHECKING:
    import pandas as pd

    from bench.core.results import RunResult

STORE_VERSION = 1
S, I, F, B, T = "string", "Int64", "float64", "boolean", "datetime64[us, UTC]"  # noqa: E741  column types (pandas dtypes), short so the schemas read as tables
IDENTITY = {"run_id": S, "host_label": S, "cpu_model": S, "gpu_name": S, "commit": S, "created": T}
# What a backend name says (engine × precision × device) and whether it is priced per GPU hour.
BACKEND = {"backend": S, "engine": S, "precision": S, "device": S, "on_gpu": B}
SETUP = {"config": S, **BACKEND, "batching": B, "max_batch": I, "max_wait_ms": F, "replicas": I, "threads": I,
         "cache_size": I}
SCHEMAS = {
    "runs": {**IDENTITY, "stored_run_id": S, "logical_cores": I, "model": S, "synthetic": B, "hour_usd": F,
             "schema_version": I, "store_version": I, "source_sha256": S, "cells_ok": I, "cells_total": I,
             "levels": I, "searches": I, "tune_candidates": I, "best_qps": F},
    # summary.csv's columns (bench.core.summary), CIs named <stat>_lo_ms / <stat>_hi_ms, throughput items_per_s
    "cells": {**IDENTITY, "key": S, **BACKEND, "batch": I, "workload": S, "seq_len": I, "threads": I, "status": S,
              "reason": S, "processes": I, "n": I, "mean_ms": F, "p50_ms": F, "p50_lo_ms": F, "p50_hi_ms": F,
              "p90_ms": F, "p95_ms": F, "p95_lo_ms": F, "p95_hi_ms": F, "p99_ms": F, "p99_lo_ms": F, "p99_hi_ms": F,
              "stdev_ms": F, "process_spread": F, "items_per_s": F, "items_lo": F, "items_hi": F, "peak_rss_mb": F,
              "mean_cpu_percent_window": F, "energy_j_per_item": F, "energy_source": S, "energy_estimated": B,
              "gpu_energy_j_per_item": F, "gpu_energy_source": S, "peak_vram_mb": F, "vram_scope": S,
              "providers": S, "tf32": S, "engine_build_s": F, "gpu_device": S, "load_total_s": F,
              "stop_reason": S, "synthetic": B},
    "levels": {**IDENTITY, **SETUP, "mode": S, "users": I, "offered_rps": F, "workload": S, "repeats": I,
               "duration_s": F, "status": S, "reason": S, "requests": I, "failures": I, "invalid_answers": I,
               "qps": F, "qps_lo": F, "qps_hi": F, "achieved_rps": F, "mean_ms": F, "p50_ms": F, "p50_lo_ms": F,
               "p50_hi_ms": F, "p95_ms": F, "p95_lo_ms": F, "p95_hi_ms": F, "p99_ms": F, "p99_lo_ms": F,
               "p99_hi_ms": F, "mean_batch_size": F, "client_cpu_percent": F, "client_saturated": B},
    # one row per probe; a search with no probes (not run, failed) keeps one row with its status and reason
    "probes": {**IDENTITY, **SETUP, "slo_ms": F, "percentile": F, "search_status": S, "search_reason": S,
               "search_rate_rps": F, "search_qps": F, "search_qps_lo": F, "search_qps_hi": F,
               "first_failing_rps": F, "stopped": S, "step": I, "offered_rps": F, "passed": B, "found": B,
               "verdict": S, "requests": I, "over_slo": I, "failures": I, "invalid_answers": I, "achieved_rps": F,
               "achieved_lo": F, "achieved_hi": F, "p95_ms": F, "p99_ms": F, "stable": B},
    "tune": {**IDENTITY, "label": S, **BACKEND, "replicas": I, "threads": I, "max_batch": I, "oversubscribed": B,
             "status": S, "reason": S, "items_per_s": F, "items_lo": F, "items_hi": F, "p95_ms": F, "rss_mb": F,
             "service_label": S, "service_qps": F, "service_qps_lo": F, "service_qps_hi": F, "service_p95_ms": F,
             "recommended": B, "pareto": B, "cores": I, "users": I},
}
TABLES = tuple(SCHEMAS)
SUMMARY_NAMES = {"p50_ci_lo_ms": "p50_lo_ms", "p50_ci_hi_ms": "p50_hi_ms", "p95_ci_lo_ms": "p95_lo_ms",
                 "p95_ci_hi_ms": "p95_hi_ms", "throughput_items_s": "items_per_s", "synthetic_weights": "synthetic"}


def host_label(run: RunResult) -> str:
    """The run's own `config.host_label` where given, else 'AMD EPYC 7B13 2c + NVIDIA T4': CPU model without
    trademarks × logical cores, and the GPU; never the hostname. The same label as reports.hosts.host_label (a
    test holds them equal), so a label from `bench runs` names the host in `report --price` too."""
    given = run.config.get("host_label")
    if isinstance(given, str) and given.strip():
        return given.strip()
    host = run.host
    cpu = " ".join(w for w in re.sub(r"\((R|TM|tm)\)", "", host.cpu_model or "unknown CPU").split()
                   if w not in ("Processor", "CPU"))
    label = f"{cpu or 'unknown CPU'} {host.logical_cores or '?'}c"
    return label + (f" + {host.gpu_name}" if host.gpu_name else "")


def tables(run: RunResult, host_label: str | None = None, run_id: str | None = None,
           source_sha256: str | None = None) -> dict[str, pd.DataFrame]:
    """The run's five tidy tables (SCHEMAS), each row with the run's identity. `run_id` defaults to the run's own
    id; `source_sha256`: the digest of the results.json they were built from (None: built from memory)."""
    ident = identity(run, host_label, run_id)
    rows = {"runs": [run_row(run, ident, source_sha256)],
            "cells": [{**ident, **cell_row(c, run.model.synthetic)} for c in run.cells],
            "levels": [{**ident, **level_row(lv)} for lv in run.loadtests],
            "probes": [{**ident, **row} for s in run.slo_searches for row in probe_rows(s)],
            "tune": [{**ident, **row} for row in tune_rows(run.tune)]}
    return {name: frame(rows[name], SCHEMAS[name]) for name in TABLES}


def identity(run: RunResult, label: str | None, run_id: str | None) -> dict[str, Any]:
    import pandas as pd

    created = pd.to_datetime(run.created, utc=True, errors="coerce", format="ISO8601")
    return {"run_id": run_id or run.run_id, "host_label": label or host_label(run),
            "cpu_model": run.host.cpu_model, "gpu_name": run.host.gpu_name, "commit": run.host.git_commit,
            "created": created}


def frame(rows: list[dict[str, Any]], schema: dict[str, str]) -> pd.DataFrame:
    """Rows as a frame of exactly the schema's columns and types (absent values: NA; no rows: the columns)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=list(schema)).astype(schema)


def run_row(run: RunResult, ident: dict[str, Any], source_sha256: str | None) -> dict[str, Any]:
    hour = run.config.get("hour_usd")
    served = [lv.qps for lv in run.loadtests if lv.status == "ok" and lv.qps] + \
             [s.qps for s in run.slo_searches if s.qps]
    return {**ident, "stored_run_id": run.run_id, "logical_cores": run.host.logical_cores,
            "model": run.model.spec, "synthetic": run.model.synthetic,
            "hour_usd": hour if isinstance(hour, (int, float)) and not isinstance(hour, bool) else None,
            "schema_version": run.schema_version, "store_version": STORE_VERSION, "source_sha256": source_sha256,
            "cells_ok": sum(c.status == "ok" for c in run.cells), "cells_total": len(run.cells),
            "levels": len(run.loadtests), "searches": len(run.slo_searches),
            "tune_candidates": len(run.tune.candidates) if run.tune else 0, "best_qps": max(served, default=None)}


def backend_columns(name: str | None) -> dict[str, Any]:
    """'ort-int8-cpu' → engine ort, precision int8, device cpu (not on a GPU); a name that does not parse keeps
    only itself."""
    from bench.core.errors import ConfigError
    from bench.core.specs import BackendSpec

    try:
        spec = BackendSpec.parse(name or "")
    except ConfigError:
        return {"backend": name or None}
    return {"backend": name, "engine": spec.engine, "precision": spec.precision, "device": spec.device,
            "on_gpu": spec.on_gpu}


def bounds(prefix: str, ci: tuple[float | None, ...], unit: str = "") -> dict[str, Any]:
    """A CI as two columns, <prefix>_lo<unit> and <prefix>_hi<unit> (NA where there is none)."""
    lo, hi = (ci[0], ci[1]) if len(ci) == 2 else (None, None)
    return {f"{prefix}_lo{unit}": lo, f"{prefix}_hi{unit}": hi}


def cell_row(c: CellResult, synthetic: bool | None) -> dict[str, Any]:
    """summary.csv's row of the cell (bench.core.summary.summary_row), renamed, plus the P99 and throughput CIs."""
    from bench.core.summary import ms, summary_row

    row = {SUMMARY_NAMES.get(k, k): v for k, v in summary_row(c, synthetic).items()}
    s = c.stats
    p99 = tuple(ms(x) for x in s["p99_ci95"]) if s else ()
    return {**row, **backend_columns(c.spec.backend), **bounds("p99", p99, "_ms"), **bounds("items", items_ci(c))}


def items_ci(c: CellResult) -> tuple[float, ...]:
    """95 % interval of a cell's throughput: the bootstrap interval of its mean batch latency, inverted (items per
    second are inversely proportional to it), as reports.common.throughput_ci computes it for the report."""
    s, thr = c.stats, c.throughput
    if thr is None or not s or s["mean_ci95"][0] <= 0:
        return ()
    return thr * s["mean"] / s["mean_ci95"][1], thr * s["mean"] / s["mean_ci95"][0]


def setup_columns(setup: ServiceSetup) -> dict[str, Any]:
    return {"config": setup.label, **backend_columns(setup.backend), "batching": setup.batching,
            "max_batch": setup.max_batch, "max_wait_ms": setup.max_wait_ms, "replicas": setup.replicas,
            "threads": setup.threads, "cache_size": setup.cache_size}


def level_row(lv: LoadLevel) -> dict[str, Any]:
    return {**setup_columns(lv.config), "mode": lv.mode, "users": lv.users, "offered_rps": lv.offered_rps,
            "workload": lv.workload, "repeats": lv.repeats, "duration_s": lv.duration_s, "status": lv.status,
            "reason": lv.reason, "requests": lv.requests, "failures": lv.failures,
            "invalid_answers": lv.invalid_answers, "qps": lv.qps, **bounds("qps", lv.qps_ci),
            "achieved_rps": lv.achieved_rps, "mean_ms": lv.mean_ms, "p50_ms": lv.p50_ms,
            **bounds("p50", lv.p50_ci_ms, "_ms"), "p95_ms": lv.p95_ms, **bounds("p95", lv.p95_ci_ms, "_ms"),
            "p99_ms": lv.p99_ms, **bounds("p99", lv.p99_ci_ms, "_ms"), "mean_batch_size": lv.mean_batch_size,
            "client_cpu_percent": lv.client_cpu_percent, "client_saturated": lv.client_saturated}


def probe_rows(s: SloSearch) -> list[dict[str, Any]]:
    """One row per probe in the order they ran, each with its search's result; `found` marks the probe whose
    rate the search reports."""
    search = {**setup_columns(s.config), "slo_ms": s.slo_ms, "percentile": s.percentile, "search_status": s.status,
              "search_reason": s.reason, "search_rate_rps": s.rate_rps, "search_qps": s.qps,
              **bounds("search_qps", s.qps_ci), "first_failing_rps": s.first_failing_rps, "stopped": s.stopped}
    if not s.probes:
        return [search]
    return [{**search, **probe_columns(p), "step": i, "found": p.passed and p.offered_rps == s.rate_rps}
            for i, p in enumerate(s.probes)]


def probe_columns(p: SearchProbe) -> dict[str, Any]:
    return {"offered_rps": p.offered_rps, "passed": p.passed, "verdict": p.verdict, "requests": p.requests,
            "over_slo": p.over_slo, "failures": p.failures, "invalid_answers": p.invalid_answers,
            "achieved_rps": p.achieved_rps, **bounds("achieved", p.achieved_ci), "p95_ms": p.p95_ms,
            "p99_ms": p.p99_ms, "stable": p.stable}


def tune_rows(record: TuneRecord | None) -> list[dict[str, Any]]:
    """One row per candidate; `recommended` and `pareto` as the tune decided them. A candidate recorded before the
    tune searched backends ran the record's backend."""
    if record is None:
        return []
    return [{"label": c.label, **backend_columns(c.backend or record.backend), "replicas": c.replicas,
             "threads": c.threads, "max_batch": c.max_batch, "oversubscribed": c.oversubscribed, "status": c.status,
             "reason": c.reason, "items_per_s": c.items_per_s, **bounds("items", c.items_ci), "p95_ms": c.p95_ms,
             "rss_mb": c.rss_mb, "service_label": c.service_label, "service_qps": c.service_qps,
             **bounds("service_qps", c.service_qps_ci), "service_p95_ms": c.service_p95_ms,
             "recommended": c.label == record.recommended, "pareto": c.label in record.pareto,
             "cores": record.cores, "users": record.users} for c in record.candidates]


def digest(path: Path) -> str | None:
    """SHA-256 of a results file (None where there is none): which results.json a store was built from."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def write_store(run: RunResult, run_dir: Path) -> Path:
    """Write `run_dir/store/<table>.parquet`, each atomically (temp file, then os.replace); the runs table last,
    so a store cut short reads as outdated and is rebuilt from results.json. Returns the store folder."""
    from bench.core.paths import atomic_write_bytes

    run_dir = Path(run_dir)
    built = tables(run, run_id=run_dir.name, source_sha256=digest(run_dir / "results.json"))
    for name in (*TABLES[1:], TABLES[0]):
        buf = io.BytesIO()
        built[name].to_parquet(buf, engine="pyarrow", index=False)
        atomic_write_bytes(run_dir / "store" / f"{name}.parquet", buf.getvalue())
    return run_dir / "store"


def update_store(run: RunResult, run_dir: Path) -> bool:
    """write_store for the pipeline, after results.json: a store that cannot be written (no pyarrow, a full or
    read-only disk, data the schema refuses) is a warning, never a lost run; `read_store` rebuilds it."""
    try:
        write_store(run, run_dir)
    except (OSError, ImportError, ValueError) as exc:
        print(f"[store] warning: {run_dir}/store not written ({type(exc).__name__}: {exc}); results.json is "
              f"intact and `python -m bench runs` rebuilds the tables from it", file=sys.stderr, flush=True)
        return False
    return True


def read_store(paths: list[Path]) -> dict[str, pd.DataFrame]:
    """Every table concatenated over the runs at `paths`: run folders, results.json files, folders holding run
    folders (a results/ folder), or globs. A run whose store is missing or outdated is rebuilt from results.json
    in memory (reading never writes)."""
    import pandas as pd

    per_run = [run_tables(p) for p in run_sources(paths)]
    out = {}
    for name in TABLES:
        parts = [t[name] for t in per_run if not t[name].empty]
        out[name] = frame([], SCHEMAS[name]) if not parts else pd.concat(parts, ignore_index=True).astype(
            SCHEMAS[name])
    return out


def run_sources(paths: list[Path]) -> list[Path]:
    """The run folders (and loose results files) that `paths` name, each once, in the order given."""
    import glob

    found: list[Path] = []
    for path in map(Path, paths):
        if any(ch in str(path) for ch in "*?["):
            hits = [Path(h) for h in sorted(glob.glob(str(path)))]
            found += [run for hit in hits for run in runs_at(hit, named=False)]
            if not hits:
                raise BenchError(f"no runs match {path}")
        else:
            found += runs_at(path, named=True)
    if not found:
        raise BenchError(f"no runs at {', '.join(map(str, paths))} (a run folder holds results.json)")
    return list({p.resolve(): p for p in found}.values())


def is_run(folder: Path) -> bool:
    return (folder / "results.json").is_file() or (folder / "store" / "runs.parquet").is_file()


def runs_at(path: Path, named: bool) -> list[Path]:
    """A run folder, a results file (results.json: its folder), or the run folders directly inside `path`.
    A path named on the command line that holds no run is an error; a glob's hit is skipped, and of its files
    only results.json counts."""
    if path.is_file() and (named or path.name == "results.json"):
        return [path.parent if path.name == "results.json" else path]
    if is_run(path):
        return [path]
    runs = sorted(p for p in path.iterdir() if p.is_dir() and is_run(p)) if path.is_dir() else []
    if named and not runs:
        raise BenchError(f"no runs at {path}: expected a run folder, its results.json, a folder of run folders "
                         f"(e.g. results/) or a glob")
    return runs


def run_tables(source: Path) -> dict[str, pd.DataFrame]:
    """One run's tables: its store where that is current, else rebuilt from its results file."""
    from bench.core.results import load_run

    if source.is_file():  # a results file of another name, e.g. tests/data/*.json: its own run id
        return tables(load_run(source), source_sha256=digest(source))
    stored, sha = stored_tables(source), digest(source / "results.json")
    if stored is not None and (sha is None or stored["runs"]["source_sha256"].iloc[0] == sha):  # still current
        return {name: t.assign(run_id=source.name) for name, t in stored.items()}
    if sha is None:
        raise BenchError(f"{source}/store is incomplete or not of store version {STORE_VERSION}, and there is no "
                         f"results.json to rebuild it from")
    return tables(load_run(source), run_id=source.name, source_sha256=sha)


def stored_tables(folder: Path) -> dict[str, pd.DataFrame] | None:
    """The tables of `folder/store`, or None when a file is missing or the store is of another version."""
    import pandas as pd

    files = {name: folder / "store" / f"{name}.parquet" for name in TABLES}
    if not all(f.is_file() for f in files.values()):
        return None
    try:
        read = {name: pd.read_parquet(f, engine="pyarrow") for name, f in files.items()}
    except (OSError, ValueError, ImportError):  # truncated, foreign, or no pyarrow here: rebuilt from results.json
        return None
    runs = read["runs"]
    if len(runs) != 1 or "store_version" not in runs or runs["store_version"].iloc[0] != STORE_VERSION:
        return None
    return {name: t.reindex(columns=list(SCHEMAS[name])).astype(SCHEMAS[name]) for name, t in read.items()}


def since_time(text: str | None) -> pd.Timestamp | None:
    """--since YYYY-MM-DD as midnight UTC (None: no limit); anything else is one error line."""
    import datetime

    import pandas as pd

    if text is None:
        return None
    try:
        return pd.Timestamp(datetime.date.fromisoformat(text), tz="UTC")
    except ValueError:
        raise BenchError(f"--since needs a date YYYY-MM-DD, got {text!r}") from None


def select(store: dict[str, pd.DataFrame], host: str | None = None, backend: str | None = None,
           since: pd.Timestamp | None = None) -> dict[str, pd.DataFrame]:
    """The store cut to the matching runs: `host`, every word in the host label, CPU or GPU model (any case);
    `since`, created then or later; `backend`, runs with a measured (ok) cell, load level or tune candidate of
    it, and of the other tables only that backend's rows."""
    from bench.core.specs import BackendSpec

    runs = store["runs"]
    keep = runs.run_id.notna()
    if host:
        words = host.lower().split()
        text = (runs.host_label.fillna("") + " " + runs.cpu_model.fillna("") + " " + runs.gpu_name.fillna(""))
        keep &= text.str.lower().map(lambda t: all(w in t for w in words)).astype(bool)
    if since is not None:
        keep &= (runs.created >= since).fillna(False)
    if backend:
        BackendSpec.parse(backend)  # a name that cannot be a backend is an error, not an empty list
        ran = {i for name in ("cells", "levels", "tune") for i in
               store[name].run_id[(store[name].backend == backend) & (store[name].status == "ok")]}
        keep &= runs.run_id.isin(ran)
    ids = set(runs.run_id[keep])
    out = {name: t[t.run_id.isin(ids)].reset_index(drop=True) for name, t in store.items()}
    if backend:
        out.update({name: t[t.backend == backend].reset_index(drop=True) for name, t in out.items() if name != "runs"})
    return out


def listing(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table as `bench runs` prints it: oldest first, commit shortened, cells as ok/total."""
    r = runs.sort_values(["created", "run_id"])
    return r.assign(created=r.created.dt.strftime("%Y-%m-%d %H:%M"),
                    commit=r.commit.str.replace(r"^([0-9a-f]{10})[0-9a-f]+", r"\1", regex=True),
                    cells=r.cells_ok.astype(str) + "/" + r.cells_total.astype(str), best_qps=r.best_qps.round(1),
                    )[["run_id", "created", "host_label", "cpu_model", "gpu_name", "commit", "cells", "levels",
                       "best_qps"]]


def printable(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with every missing value as '-' (to_string's na_rep misses pandas' <NA> of text and integers)."""
    other = [c for c, t in table.dtypes.items() if t.kind not in "fM"]
    return table.astype({c: object for c in other}).fillna({c: "-" for c in other})
