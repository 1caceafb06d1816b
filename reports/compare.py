"""Compare two runs: engine cells (matched by CellSpec.key) and load-test levels (matched by LoadLevel.level_key),
the ratios B/A of P50, P95 and QPS, whether each change is significant, and a verdict against thresholds such as
"p95:+5%" with an exit code for CI (after pyperf's compare). A change is significant only when the 95 % interval
of the ratio B/A excludes 1.

Cells: P50, P95 and the mean latency of each run are resampled with the hierarchical bootstrap of
bench.measure.stats (worker processes first, then samples within each), A and B independently (seeds 0 and 1);
the interval is the 2.5–97.5 % quantiles of the resampled ratios. QPS is items over the timed windows, inversely
proportional to the mean latency, so its interval is that of mean_A / mean_B. A cell measured in one process (every
schema-1 cell) has an interval from that process's samples only: necessarily narrow, since it cannot see the few
per cent by which fresh processes differ. The output says so.

Load-test levels keep 95 % CIs, not samples. Their ratio interval is [lo_B / hi_A, hi_B / lo_A], every ratio of
two values inside the two CIs (QPS: qps_ci across the 2 s windows; P50/P95: p50_ci_ms/p95_ci_ms). It excludes 1
exactly when the two CIs do not overlap, which for 95 % intervals of similar width means p < 0.01: conservative
(a small real change may go unflagged; a flagged one is firm). A level without CIs (schema 1: one window) is
shown and never significant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from bench.errors import BenchError, ConfigError
from bench.host import same_host
from bench.measure.stats import hierarchical_bootstrap_distribution
from bench.records import LoadLevel
from bench.results import CellResult, RunResult
from reports import fmt
from reports.service import label_of, load_point, measured

METRICS = ("p50", "p95", "qps")
THRESHOLD = re.compile(r"^(p50|p95|qps):([+-])(\d+(?:\.\d+)?)%$")
N_BOOT = 1000
SEEDS = (0, 1)  # A and B are resampled independently
SIGNIFICANT = ("significant: the 95 % interval of the ratio B/A excludes 1 (cells: hierarchical bootstrap over "
               "worker processes, then samples; levels: from both runs' CIs, conservative)")


@dataclass(frozen=True)
class Threshold:
    """A limit on the relative change B/A - 1 of one metric: +0.05 fails above +5 %, -0.05 fails below -5 %."""

    metric: str
    limit: float
    text: str

    def violated(self, ratio: float) -> bool:
        change = ratio - 1.0
        return change > self.limit if self.limit >= 0 else change < self.limit


def parse_threshold(text: str) -> Threshold:
    """'p95:+5%' -> Threshold("p95", 0.05). The sign is required: it says which direction is a regression."""
    match = THRESHOLD.match(text.strip().lower().replace(" ", ""))
    if not match:
        raise ConfigError(f"bad threshold {text!r}: expected METRIC:+N% or METRIC:-N% with METRIC one of "
                          f"{', '.join(METRICS)} (e.g. p95:+5% fails when P95 grows by more than 5 %, "
                          f"qps:-5% when throughput drops by more than 5 %)")
    metric, sign, amount = match.groups()
    return Threshold(metric, float(amount) / 100 * (1 if sign == "+" else -1), text.strip())


@dataclass(frozen=True)
class Change:
    """One metric in both runs: values (latencies in ms), ratio B/A and its 95 % interval (() when unknown)."""

    metric: str
    a: float
    b: float
    ratio: float
    ci: tuple

    @property
    def significant(self) -> bool:
        return bool(self.ci) and (self.ci[0] > 1.0 or self.ci[1] < 1.0)


@dataclass(frozen=True)
class CellChange:
    """One compared engine cell or load-test level; `note` says why its intervals are narrow or missing."""

    key: str
    changes: tuple  # of Change, in METRICS order (a level lacks the metrics it did not record)
    note: str = ""
    unit: str = "items/s"  # of its QPS: items per second for cells, requests per second for levels

    def get(self, metric: str) -> Change | None:
        return next((c for c in self.changes if c.metric == metric), None)


@dataclass(frozen=True)
class Comparison:
    """Result of `compare_runs`; `failed` lists significant threshold violations, `exit_code` is 1 if any."""

    a_id: str
    b_id: str
    cells: tuple = ()
    only_in_a: tuple = ()
    only_in_b: tuple = ()
    host_differences: tuple = ()
    thresholds: tuple = ()
    failed: tuple = field(default=())
    levels: tuple = ()
    levels_only_in_a: tuple = ()
    levels_only_in_b: tuple = ()

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def compare_runs(a: RunResult, b: RunResult, force: bool = False, thresholds=()) -> Comparison:
    """Compare ok cells present in both runs (by CellSpec.key) and measured load-test levels present in both (by
    LoadLevel.level_key); refuse different hosts unless forced."""
    limits = tuple(t if isinstance(t, Threshold) else parse_threshold(t) for t in thresholds)
    differences = host_differences(a, b)
    if differences and not force:
        raise BenchError(f"runs {a.run_id} and {b.run_id} come from different hosts ({'; '.join(differences)}): "
                         f"the comparison would measure the hosts, not the change. Use --force to compare anyway")
    ok_a = {c.spec.key: c for c in a.cells if c.status == "ok" and c.latencies_s}
    ok_b = {c.spec.key: c for c in b.cells if c.status == "ok" and c.latencies_s}
    cells = tuple(compare_cell(ok_a[k], ok_b[k]) for k in ok_a if k in ok_b)
    lv_a, lv_b = measured_levels(a), measured_levels(b)
    levels = tuple(compare_level(lv_a[k], lv_b[k]) for k in lv_a if k in lv_b)
    return Comparison(a.run_id, b.run_id, cells, only(ok_a, ok_b), only(ok_b, ok_a), tuple(differences), limits,
                      violations(cells + levels, limits), levels,
                      tuple(level_name(lv_a[k]) for k in only(lv_a, lv_b)),
                      tuple(level_name(lv_b[k]) for k in only(lv_b, lv_a)))


def only(mine: dict, theirs: dict) -> tuple:
    return tuple(k for k in mine if k not in theirs)


def host_differences(a: RunResult, b: RunResult) -> list[str]:
    return [f"{k}: {a.host.get(k)!r} vs {b.host.get(k)!r}" for k in same_host(a.host, b.host)]


def compare_cell(a: CellResult, b: CellResult) -> CellChange:
    boot_a, boot_b = resampled(a, SEEDS[0]), resampled(b, SEEDS[1])
    changes = [Change(m, a.stats[m] * 1000, b.stats[m] * 1000, b.stats[m] / a.stats[m], interval(boot_b[m] / boot_a[m]))
               for m in ("p50", "p95")]
    # Throughput is items over wall time: its uncertainty comes from the mean latency, to which it is inversely
    # proportional (the same batch size in both runs, since the keys match).
    qps_a, qps_b = a.throughput, b.throughput
    changes.append(Change("qps", qps_a, qps_b, qps_b / qps_a, interval(boot_a["mean"] / boot_b["mean"])))
    return CellChange(a.spec.key, tuple(changes), process_note(len(a.runs), len(b.runs)))


def resampled(cell: CellResult, seed: int) -> dict:
    """N_BOOT hierarchical resamples (processes, then samples) of the cell's P50, P95 and mean latency."""
    groups = [r.latencies_s for r in cell.runs if r.latencies_s]
    return {m: hierarchical_bootstrap_distribution(groups, m, N_BOOT, seed) for m in ("p50", "p95", "mean")}


def interval(ratios: np.ndarray) -> tuple:
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)


def process_note(n_a: int, n_b: int) -> str:
    if min(n_a, n_b) >= 2:
        return ""
    return (f"A has {n_a} worker process(es), B {n_b}: with one process the interval sees only that process's "
            "noise and is necessarily narrow (fresh processes differ by a few %); rerun with --processes 2 or more "
            "before trusting 'significant'")


def measured_levels(run: RunResult) -> dict:
    return {lv.level_key: lv for lv in run.loadtests if measured(lv)}


def level_name(lv: LoadLevel) -> str:
    return f"{label_of(lv)} · {load_point(lv)}"


def compare_level(a: LoadLevel, b: LoadLevel) -> CellChange:
    figures = (("p50", a.p50_ms, b.p50_ms, a.p50_ci_ms, b.p50_ci_ms), ("p95", a.p95_ms, b.p95_ms, a.p95_ci_ms,
               b.p95_ci_ms), ("qps", a.qps, b.qps, a.qps_ci, b.qps_ci))
    changes = tuple(Change(m, va, vb, vb / va, ratio_bounds(ca, cb)) for m, va, vb, ca, cb in figures if va and vb)
    missing = [side for side, lv in (("A", a), ("B", b)) if not lv.qps_ci]
    note = f"no CI on {' and '.join(missing)} (schema-1 file: one window): shown, never significant" \
        if missing else ""
    return CellChange(level_name(a), changes, note, unit="req/s")


def ratio_bounds(ci_a: tuple, ci_b: tuple) -> tuple:
    """[lo_B / hi_A, hi_B / lo_A]: every ratio of two values inside the two CIs; () without both CIs."""
    if not ci_a or not ci_b or ci_a[0] <= 0:
        return ()
    return ci_b[0] / ci_a[1], ci_b[1] / ci_a[0]


def violations(rows: tuple, limits: tuple) -> tuple:
    """'key: p95 +30.2 % (limit +5 %)' for each threshold a cell or level breaks with a significant change."""
    out = []
    for row in rows:
        for limit in limits:
            change = row.get(limit.metric)
            if change is not None and limit.violated(change.ratio) and change.significant:
                out.append(f"{row.key}: {limit.metric} {percent_change(change.ratio)} (limit {limit.text})")
    return tuple(out)


def percent_change(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f} %"


def metric_view(row: CellChange, metric: str) -> dict:
    """One metric of a row as text: 'A', 'B', change, '[lo–hi]' of the ratio (or 'no CI'), significance."""
    c = row.get(metric)
    unit = row.unit if metric == "qps" else "ms"
    if c is None:
        return {"metric": metric, "unit": unit, "a": "—", "b": "—", "change": "not recorded", "ci": "",
                "significant": False}
    show = fmt.qps if metric == "qps" else fmt.num
    ci = f"[{fmt.ratio(c.ci[0])}–{fmt.ratio(c.ci[1])}]" if c.ci else "no CI"
    return {"metric": metric, "unit": unit, "a": show(c.a), "b": show(c.b), "change": percent_change(c.ratio),
            "ci": ci, "significant": c.significant}


def comparison_context(cmp: Comparison) -> dict:
    """Plain dicts for both renderers: one row per cell or level, each metric as 'A → B' and 'ratio [lo–hi]'."""
    def rows(items):
        return [{"key": r.key, "note": r.note, "metrics": [metric_view(r, m) for m in METRICS]} for r in items]

    return {"a": cmp.a_id, "b": cmp.b_id, "rows": rows(cmp.cells), "levels": rows(cmp.levels),
            "only_in_a": list(cmp.only_in_a), "only_in_b": list(cmp.only_in_b),
            "levels_only_in_a": list(cmp.levels_only_in_a), "levels_only_in_b": list(cmp.levels_only_in_b),
            "host_differences": list(cmp.host_differences), "thresholds": [t.text for t in cmp.thresholds],
            "failed": list(cmp.failed), "exit_code": cmp.exit_code, "significant_note": SIGNIFICANT}


def row_lines(row: dict) -> list[str]:
    lines = [row["key"]]
    for m in row["metrics"]:
        verdict = "significant" if m["significant"] else "not significant"
        lines.append(f"    {m['metric'].upper() + ' ' + m['unit']:<12}{m['a']:>9} -> {m['b']:<9} {m['change']:>12}  "
                     f"ratio CI {m['ci']:<17} {verdict}")
    return lines + ([f"    note: {row['note']}"] if row["note"] else [])


def render_comparison_text(cmp: Comparison) -> str:
    """One block per cell and per load-test level, one line per metric: A -> B, change, ratio interval, verdict."""
    ctx = comparison_context(cmp)
    lines = [f"compare {ctx['a']} (A) -> {ctx['b']} (B)"]
    if ctx["host_differences"]:
        lines.append(f"FORCED across different hosts: {'; '.join(ctx['host_differences'])}")
    if ctx["rows"]:
        lines.append("engine cells (matched by backend, batch, workload, threads):")
    for row in ctx["rows"]:
        lines += row_lines(row)
    if ctx["levels"]:
        lines.append("load-test levels (matched by configuration, mode, users or offered rate, workers, workload):")
        for row in ctx["levels"]:
            lines += row_lines(row)
    lines.append(ctx["significant_note"])
    for what, keys in (("only in A", ctx["only_in_a"] + ctx["levels_only_in_a"]),
                       ("only in B", ctx["only_in_b"] + ctx["levels_only_in_b"])):
        lines += [f"{what} (not compared): {', '.join(keys)}"] if keys else []
    return "\n".join(lines + verdict_lines(ctx)) + "\n"


def verdict_lines(ctx: dict) -> list[str]:
    if not ctx["thresholds"]:
        return ["no thresholds given: verdict not checked (use --fail-on p95:+5%)"]
    if not ctx["failed"]:
        return [f"PASSED: no significant change beyond {', '.join(ctx['thresholds'])}"]
    return ["FAILED:", *[f"  {v}" for v in ctx["failed"]]]


def render_comparison_html(cmp: Comparison) -> str:
    from reports.render import environment

    ctx = comparison_context(cmp)
    return environment().get_template("compare.html.j2").render(**ctx, metrics=METRICS, verdict=verdict_lines(ctx))
