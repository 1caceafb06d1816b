"""Plain-dict building blocks shared by the report sections: table cells, tables, backend names.

A table cell is a dict the templates know how to draw: {"text", "kind"} where kind is "num" (right-aligned),
"text", "na" (not measured, with the reason in the text) or "judgement" (qualitative, marked as such).
"""

from __future__ import annotations

from bench.core.errors import ConfigError
from bench.core.results import CellResult, RunResult
from bench.core.specs import BackendSpec


def num(text: str | None, reason: str = "not recorded in this run") -> dict:
    """A right-aligned number, or "not measured" with `reason` when the value is absent."""
    return na(reason) if text is None else {"text": text, "kind": "num"}


def text(value: str) -> dict:
    return {"text": value, "kind": "text"}


def label(value: str) -> dict:
    """A row label (backend or configuration name): kept on one line."""
    return {"text": value, "kind": "label"}


def na(reason: str, span: int = 1) -> dict:
    return {"text": f"not measured: {reason}", "kind": "na", "span": span}


def judgement(value: str) -> dict:
    return {"text": value, "kind": "judgement"}


def column(label: str, numeric: bool = True) -> dict:
    return {"label": label, "num": numeric}


def table(tid: str, title: str, columns: list, rows: list, notes: list | tuple = (), empty: str | None = None) -> dict:
    """A titled table; `empty` says why there are no rows (rendered instead of the table)."""
    return {"id": tid, "title": title, "columns": columns, "rows": rows, "notes": list(notes),
            "empty": empty if not rows else None}


def backend_parts(name: str | None) -> BackendSpec | None:
    """'ort-int8-cpu' -> engine ort, precision int8, device cpu ('ort-int8': device cpu, BackendSpec.parse's
    default); None for a name that is not ENGINE-PRECISION[-DEVICE] with known parts."""
    try:
        return BackendSpec.parse(name or "")
    except ConfigError:
        return None


def on_gpu(backend: str | None) -> bool:
    """GPU devices are priced per GPU hour; an unreadable backend name counts as CPU."""
    spec = backend_parts(backend)
    return spec is not None and spec.on_gpu


def variant_of(backend: str) -> str | None:
    """The exported variant a backend runs (names as in run.model.variants); None for the FP32 reference."""
    from bench.model.artifacts import gate_variant

    p = backend_parts(backend)
    return None if p is None else gate_variant(p.engine, p.precision, p.device)


def cell_label(cell: CellResult) -> str:
    threads = f" · {cell.spec.threads} threads" if cell.spec.threads else ""
    return f"{cell.spec.backend}{threads}"


def batch1_corpus(run: RunResult) -> list[CellResult]:
    """The article's setting: one ~80-character review per call (batch 1, corpus workload)."""
    return [c for c in run.cells if c.spec.batch == 1 and c.spec.workload == "corpus"]


def throughput_ci(cell: CellResult) -> tuple:
    """95 % interval of a cell's throughput. Throughput is items over the timed windows, inversely proportional
    to the mean batch latency, so its interval is the hierarchical-bootstrap interval of that mean, inverted."""
    s, thr = cell.stats, cell.throughput
    if thr is None or not s or s["mean_ci95"][0] <= 0:
        return ()
    return thr * s["mean"] / s["mean_ci95"][1], thr * s["mean"] / s["mean_ci95"][0]


def one_process(cell: CellResult) -> bool:
    """A cell measured in one worker process: its CI covers that process's noise only, not the spread between
    fresh processes (docs/measurements.md), so it is too narrow to rank cells with confidence."""
    return len(cell.runs) < 2


def why_not(cell: CellResult) -> str:
    """The reason a cell has no numbers, for "not measured: ..."."""
    return f"{cell.status}: {cell.reason or 'no reason recorded'}"


def rows_for(cells: list[CellResult], measured_row, span: int) -> list[list]:
    """Rows of measured cells in run order, then one row per distinct skip/fail reason listing its backends,
    so seven GPU cells skipped for one reason take one line instead of seven identical ones."""
    rows = [measured_row(c) for c in cells if c.status == "ok"]
    groups: dict = {}
    for cell in cells:
        if cell.status != "ok":
            groups.setdefault(why_not(cell), []).append(cell_label(cell))  # a list of names wraps: plain text
    return rows + [[text(", ".join(names)), na(reason, span=span)] for reason, names in groups.items()]
