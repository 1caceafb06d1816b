"""The results file: frozen dataclasses with a schema version of their own (not the package version).

Raw samples are the truth; statistics are derived on read (`CellResult.stats`) and also written out,
marked derived, so pandas users need not recompute them. The records themselves live in `bench.core.records`.

Schema history (SCHEMA_VERSION):
  1 (2026-11-25) first version: host, model, config, peak GEMM, cells with raw latencies, loadtests as dicts.
  2 (2026-11-25) every record typed: a cell holds one ProcessRun per fresh worker (samples, load phases,
    resources, energy, meta); load-test levels are LoadLevel records with a ServiceSetup, raw-sample CIs and
    Locust's CSV figures beside them. Version 1 files are upgraded on read (`upgrade_v1`).
    (2026-11-25, still 2) additive: `slo_searches`, SloSearch records (bench.core.search_records: the searched QPS at
    the SLO per service configuration); files without it read as having none.
    (still 2) additive: `tune`, a TuneRecord (bench.core.search_records: `python -m bench tune`'s candidates, the
    recommended serving configuration and its command line); files without it read as having none.
    (still 2) additive: `WorkerMeta.gpu_libraries`, the CUDA runtime, cuDNN and TensorRT versions a GPU cell's
    worker loaded; files without it read as {} ("not recorded").
    (2026-12-03, still 2) additive: OpenVINO and torch BF16 backends; `WorkerMeta.openvino`, `openvino_settings`
    (what the compiled model reports: threads, hint, streams, inference precision) and `torch_dtype`; the model
    block's variants gain OpenVINO IRs and accuracy figures with CIs; `accuracy`, the trained twin's accuracy per
    runtime × precision; `config.plan`, the CPU backends the default plan left out and why. Files without them read
    as not recorded.
  3 (2026-12-07) the host and model blocks typed (bench.core.run_records): HostRecord (the fingerprint, its peak
    GEMM rates as a PeakGemm), ModelRecord (SourceMeta, Quantization, the ModelSignature, VariantRecords with their
    ParityRecord and FloorVerdict, the trained twin's TrainedTwinAccuracy); the exported graph's inputs are the
    model block's `graph_inputs`, no longer inside its signature. Unknown keys are not refused there: HostRecord,
    ModelRecord and SourceMeta keep them in their `extra` mapping, the records inside them drop them. Version 2
    files are upgraded on read (`upgrade_v2`); runs without a signature read as None.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from bench.core.errors import BenchError
from bench.core.paths import atomic_write_text
from bench.core.records import CellResult, CellSpec, LoadLevel, ProcessRun
from bench.core.run_records import HostRecord, ModelRecord, from_json
from bench.core.search_records import SloSearch, TuneRecord
from bench.core.upgrade import UPGRADES

__all__ = ["SCHEMA_VERSION", "RunResult", "CellResult", "CellSpec", "LoadLevel", "ProcessRun", "HostRecord",
           "ModelRecord", "load_run", "save_run", "run_from_dict", "run_to_dict", "cell_to_dict", "cell_from_dict",
           "record_from_dict", "stored_version"]

SCHEMA_VERSION = 3

R = TypeVar("R")  # a record type


@dataclass(frozen=True)
class RunResult:
    run_id: str
    created: str
    host: HostRecord  # what produced the run: the fingerprint (bench.measure.host) and the peak GEMM rates
    model: ModelRecord  # what was measured: source, synthetic flag, signature, exported variants (from the manifest)
    config: dict[str, Any]  # the run's settings, as given (RunConfig + stop rule + method)
    peak_gemm_flops: float | None = None
    cells: tuple[CellResult, ...] = ()
    loadtests: tuple[LoadLevel, ...] = ()
    schema_version: int = SCHEMA_VERSION
    slo_searches: tuple[SloSearch, ...] = ()
    tune: TuneRecord | None = None

    def with_cell(self, cell: CellResult) -> "RunResult":
        """A new run with `cell` added or replacing the cell of the same key."""
        kept = tuple(c for c in self.cells if c.spec.key != cell.spec.key)
        return replace(self, cells=kept + (cell,))

    def with_levels(self, levels: tuple[LoadLevel, ...]) -> "RunResult":
        """A new run with these load-test levels added. An earlier level is replaced where a new one measures the
        same configuration at the same load point (a sweep of one level keeps that configuration's others); all
        of a label's earlier levels are, when the new ones ran it with other settings."""
        points = {load_point(lv) for lv in levels}
        setups = {lv.config.label: lv.config for lv in levels}

        def replaced(lv: LoadLevel) -> bool:
            return load_point(lv) in points or lv.config.label in setups and lv.config != setups[lv.config.label]

        return replace(self, loadtests=tuple(lv for lv in self.loadtests if not replaced(lv)) + levels)

    def with_tune(self, tune: TuneRecord) -> "RunResult":
        return replace(self, tune=tune)

    def with_searches(self, searches: tuple[SloSearch, ...]) -> "RunResult":
        """A new run with these searches; earlier searches of the same configurations are replaced."""
        labels = {s.config.label for s in searches}
        kept = tuple(s for s in self.slo_searches if s.config.label not in labels)
        return replace(self, slo_searches=kept + tuple(searches))

    def cell(self, key: str) -> CellResult | None:
        return next((c for c in self.cells if c.spec.key == key), None)


def load_point(level: LoadLevel) -> tuple[str, str, int | None, float | None]:
    """Which configuration under which load: its label, closed or open loop, users or offered rate."""
    return level.config.label, level.mode, level.users, level.offered_rps


def cell_to_dict(cell: CellResult) -> dict[str, Any]:
    out = asdict(cell)
    out["derived"] = {"stats": cell.stats, "throughput_items_s": cell.throughput}  # recomputed on load
    return out


def run_to_dict(run: RunResult) -> dict[str, Any]:
    records = ("cells", "loadtests", "slo_searches", "tune")
    out = {f.name: getattr(run, f.name) for f in fields(run) if f.name not in records}
    out["host"], out["model"] = asdict(run.host), run.model.to_dict()  # replaced in place: the keys keep their order
    out["cells"] = [cell_to_dict(c) for c in run.cells]
    out["loadtests"] = [asdict(level) for level in run.loadtests]
    if run.slo_searches:  # left out when empty, so a run without searches reads in older toolkits too
        out["slo_searches"] = [asdict(s) for s in run.slo_searches]
    if run.tune is not None:  # likewise left out when there was no tune
        out["tune"] = asdict(run.tune)
    return out


def record_from_dict(cls: type[R], data: Any) -> R:
    """A record of type `cls` from its dict, nested records and tuples included; unknown keys are refused
    (the file was edited, or written by another tool)."""
    if not isinstance(data, dict):
        raise BenchError(f"{cls.__name__} must be an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    unknown = set(data) - set(hints)
    if unknown:
        raise BenchError(f"unknown {cls.__name__} fields {sorted(unknown)}: file edited or from another tool")
    return cls(**{k: _typed(hints[k], v) for k, v in data.items()})


def _typed(hint: Any, value: Any) -> Any:
    """`value` converted to the annotated type where that is a record or a tuple (JSON has only lists)."""
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and is_dataclass(hint):
        return record_from_dict(hint, value)
    if origin is tuple:
        return tuple(_typed(args[0], v) for v in value) if args else tuple(value)
    if origin in (typing.Union, types.UnionType):
        return _typed(args[0], value) if len(args) == 1 else value
    return value


def cell_from_dict(data: dict[str, Any]) -> CellResult:
    return record_from_dict(CellResult, {k: v for k, v in data.items() if k != "derived"})


def upgrade(data: dict[str, Any], path: Path) -> dict[str, Any]:
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


def run_from_dict(data: dict[str, Any], path: Path = Path("<memory>")) -> RunResult:
    data = upgrade(dict(data), path)
    try:
        cells = tuple(cell_from_dict(c) for c in data.pop("cells", []))
        levels = tuple(record_from_dict(LoadLevel, lv) for lv in data.pop("loadtests", []))
        searches = tuple(record_from_dict(SloSearch, s) for s in data.pop("slo_searches", []))
        tune = record_from_dict(TuneRecord, data.pop("tune")) if data.get("tune") else None
        host, model = from_json(HostRecord, data.pop("host")), from_json(ModelRecord, data.pop("model"))
        return RunResult(host=host, model=model, cells=cells, loadtests=levels, slo_searches=searches, tune=tune,
                         **data)
    except (TypeError, ValueError, KeyError) as exc:
        raise BenchError(f"{path} is not a valid results file: {exc}") from None


def load_run(path: Path) -> RunResult:
    """Read results.json (or a run folder) with clear errors for missing, corrupt or foreign files."""
    path = results_file(path)
    return run_from_dict(read_json(path), path)


def stored_version(path: Path) -> int | None:
    """The schema version a results file was written in (load_run upgrades it away)."""
    version = read_json(results_file(path)).get("schema_version")
    return version if isinstance(version, int) else None


def results_file(path: Path) -> Path:
    path = Path(path)
    return path / "results.json" if path.is_dir() else path


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"no results file at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path} is corrupt (not JSON: {exc})") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path} is not a structbench results file")
    return data


def save_run(run: RunResult, run_dir: Path) -> Path:
    """Atomically write results.json and the flat summary CSV."""
    from bench.core.summary import summary_csv

    path = Path(run_dir) / "results.json"
    atomic_write_text(path, json.dumps(run_to_dict(run), ensure_ascii=False, indent=1))
    atomic_write_text(Path(run_dir) / "summary.csv", summary_csv(run))
    return path
