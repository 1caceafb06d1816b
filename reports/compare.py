"""Compare two runs: engine cells (matched by CellSpec.key) and load-test levels (matched by LoadLevel.level_key),
the ratios B/A of P50, P95 and QPS, whether each change is significant, and a verdict against thresholds such as
"p95:+5%" with an exit code for CI (after pyperf's compare).

Cells: the unit of replication is the fresh worker process (on a shared host processes differ by a few per cent,
more than the samples inside one process say). Each process's P50, P95 and QPS are taken on a log scale and A's
processes are set against B's with Welch's t (unequal variances; a ratio is a difference of logs), giving the ratio
B/A with its 95 % interval and a p-value. Every cell × metric of the comparison is one test, and a change is called
significant only after Holm's step-down correction across all of them (the family-wise error rate stays ≤ 5 %
however many cells are compared). A cell measured in one process on either side has no between-process spread to
test against: its ratio is shown, never significant, and the output says so.

`--fail-on p95:+5%` fails when P95 grew by more than 5 % with confidence: a one-sided Welch test of
"ratio > 1.05" per cell, Holm-corrected across every threshold test — not when the interval merely excludes 1.

Load-test levels measured in two or more fresh service processes on both sides (the sweep's default) are tested
the same way: each process's QPS, P50 and P95 on a log scale, Welch's t, in the same Holm family as the cells.
A level from one service process keeps only CIs: its ratio interval is [lo_B / hi_A, hi_B / lo_A], every ratio of
two values inside the two CIs, which excludes 1 exactly when the two CIs do not overlap (for 95 % intervals of
similar width p < 0.01: conservative); a threshold fails when the whole interval is past it. A level without CIs
(schema 1: one window) is shown and never significant.

The comparison also says how many processes per run a change of 10 % needs to be found with 80 % power, from the
spread between processes these two runs show (`bench run --processes N`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from bench.core.errors import BenchError, ConfigError
from bench.core.records import LoadLevel
from bench.core.results import CellResult, RunResult
from bench.core.stats import pooled_stat
from bench.measure.host import same_host
from reports import fmt
from reports.service import label_of, load_point, measured

METRICS = ("p50", "p95", "qps")
THRESHOLD = re.compile(r"^(p50|p95|qps):([+-])(\d+(?:\.\d+)?)%$")
ALPHA = 0.05  # family-wise, after Holm's correction
POWER, DETECT = 0.80, 0.10  # the power statement: a 10 % change found 80 % of the time
SIGNIFICANT = ("significant: cells by Welch's t across worker processes on log P50/P95/QPS, Holm-corrected across "
               "every cell and metric (family-wise error ≤ 5 %); load levels the same across service processes, or, "
               "from one process, when both runs' CIs do not overlap (conservative)")


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
    """One metric in both runs: values (latencies in ms), ratio B/A, its 95 % interval (() when unknown), and the
    test behind it: Welch's statistics for cells (`test`), or None for levels (judged by their CIs)."""

    metric: str
    a: float
    b: float
    ratio: float
    ci: tuple
    test: "Welch | None" = None
    significant: bool = False  # tested rows: after Holm's correction across the comparison; others: the CIs apart


@dataclass(frozen=True)
class Welch:
    """Welch's t on log values: the difference of means (log B/A), its standard error and degrees of freedom."""

    diff: float
    se: float
    df: float
    sd: float = 0.0  # the pooled spread between processes (log SD)

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray) -> "Welch | None":
        """None unless both sides have two processes or more (no spread to test against otherwise)."""
        if len(a) < 2 or len(b) < 2:
            return None
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = float(np.sqrt(va + vb))
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 \
            else float(len(a) + len(b) - 2)
        sd = float(np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)))
        return cls(float(b.mean() - a.mean()), se, float(df), sd)

    def interval(self, confidence: float = 0.95) -> tuple:
        from scipy import stats as sps

        half = sps.t.ppf(0.5 + confidence / 2, self.df) * self.se
        return float(np.exp(self.diff - half)), float(np.exp(self.diff + half))

    def p_two_sided(self) -> float:
        return self.p_beyond(0.0, 0) if self.diff == 0 else 2 * self.p_beyond(0.0, 1 if self.diff > 0 else -1)

    def p_beyond(self, log_limit: float, direction: int) -> float:
        """p of "the log ratio is past `log_limit`" in `direction` (+1: above, -1: below; 0: two-sided at 0)."""
        from scipy import stats as sps

        if direction == 0:
            return 1.0
        if self.se == 0:
            return 0.0 if (self.diff - log_limit) * direction > 0 else 1.0
        t = (self.diff - log_limit) / self.se
        return float(sps.t.sf(t, self.df) if direction > 0 else sps.t.cdf(t, self.df))


def holm(pvalues: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down: which of the hypotheses are rejected with the family-wise error rate held at alpha."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        rejected[i] = True
    return rejected


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
    power: str = ""

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
    lv_a, lv_b = measured_levels(a), measured_levels(b)
    cells = tuple(compare_cell(ok_a[k], ok_b[k]) for k in ok_a if k in ok_b)
    rows = holm_corrected(cells + tuple(compare_level(lv_a[k], lv_b[k]) for k in lv_a if k in lv_b))
    cells, levels = rows[:len(cells)], rows[len(cells):]  # one Holm family: every cell and level × metric
    return Comparison(a.run_id, b.run_id, cells, only(ok_a, ok_b), only(ok_b, ok_a), tuple(differences), limits,
                      violations(cells, levels, limits), levels,
                      tuple(level_name(lv_a[k]) for k in only(lv_a, lv_b)),
                      tuple(level_name(lv_b[k]) for k in only(lv_b, lv_a)), power_line(cells))


def only(mine: dict, theirs: dict) -> tuple:
    return tuple(k for k in mine if k not in theirs)


def host_differences(a: RunResult, b: RunResult) -> list[str]:
    return [f"{k}: {getattr(a.host, k)!r} vs {getattr(b.host, k)!r}" for k in same_host(a.host, b.host)]


def compare_cell(a: CellResult, b: CellResult) -> CellChange:
    """Each metric's ratio B/A (pooled figures, as the report shows them) and Welch's test across processes."""
    pooled = lambda c, stat: pooled_stat([r.latencies_s for r in c.runs if r.latencies_s], stat) * 1000  # noqa: E731
    points = {"p50": (pooled(a, "p50"), pooled(b, "p50")), "p95": (pooled(a, "p95"), pooled(b, "p95")),
              "qps": (a.throughput, b.throughput)}
    changes = []
    for metric, (va, vb) in points.items():
        test = Welch.of(per_process(a, metric), per_process(b, metric))
        changes.append(Change(metric, va, vb, vb / va, test.interval() if test else (), test))
    return CellChange(a.spec.key, tuple(changes), process_note(len(a.runs), len(b.runs)))


def per_process(cell: CellResult, metric: str) -> np.ndarray:
    """log P50, log P95 or log items/s of each worker process of the cell."""
    runs = [r for r in cell.runs if r.latencies_s]
    if metric == "qps":
        values = [len(r.latencies_s) * cell.items_per_batch / r.window_s for r in runs]
    else:
        values = [float(np.percentile(r.latencies_s, 50 if metric == "p50" else 95)) for r in runs]
    return np.log(np.asarray(values, dtype=float))


def holm_corrected(cells: tuple) -> tuple:
    """The rows with `significant` set by Holm's correction over every tested row × metric (rows judged by CI
    overlap keep their own flag)."""
    tested = [(i, j) for i, c in enumerate(cells) for j, ch in enumerate(c.changes) if ch.test is not None]
    rejected = holm([cells[i].changes[j].test.p_two_sided() for i, j in tested])
    flags = {pos: r for pos, r in zip(tested, rejected)}
    return tuple(replace(c, changes=tuple(replace(ch, significant=flags.get((i, j), ch.significant))
                                          for j, ch in enumerate(c.changes))) for i, c in enumerate(cells))


def process_note(n_a: int, n_b: int) -> str:
    if min(n_a, n_b) >= 2:
        return ""
    return (f"A has {n_a} worker process(es), B {n_b}: with one process there is no spread between processes to "
            "test against (fresh processes differ by a few %), so no interval and never significant; rerun with "
            "--processes 3 or more")


def power_line(cells: tuple) -> str:
    """How many processes per run would find a DETECT change with POWER, at the first Holm step over these cells'
    tests (Bonferroni: the strictest), from the spread between processes the cells show."""
    from scipy import stats as sps

    tests = [ch.test for c in cells for ch in c.changes if ch.test is not None]
    if not tests:
        return "power: not computed (no cell has two processes or more on both sides)"
    spread = float(np.sqrt(np.mean([t.sd ** 2 for t in tests])))
    z = sps.norm.ppf(1 - ALPHA / len(tests) / 2) + sps.norm.ppf(POWER)
    need = int(np.ceil(2 * (z * spread / np.log1p(DETECT)) ** 2))
    return (f"power: processes differ by {spread:.1%} (log SD) in these runs; finding a {DETECT:.0%} change in one "
            f"of {len(tests)} tests with {POWER:.0%} power needs about {max(need, 2)} processes per run "
            f"(bench run --processes {max(need, 2)})")


def measured_levels(run: RunResult) -> dict:
    return {lv.level_key: lv for lv in run.loadtests if measured(lv)}


def level_name(lv: LoadLevel) -> str:
    return f"{label_of(lv)} · {load_point(lv)}"


def compare_level(a: LoadLevel, b: LoadLevel) -> CellChange:
    """Levels from two or more service processes on both sides are tested as cells are (Welch's t on the
    processes' log values, in the same Holm family); others by their CIs (conservative)."""
    figures = (("p50", a.p50_ms, b.p50_ms, a.p50_ci_ms, b.p50_ci_ms), ("p95", a.p95_ms, b.p95_ms, a.p95_ci_ms,
               b.p95_ci_ms), ("qps", a.qps, b.qps, a.qps_ci, b.qps_ci))
    if min(a.processes, b.processes) >= 2:
        changes = []
        for metric, va, vb, _, _ in figures:
            test = Welch.of(level_process_values(a, metric), level_process_values(b, metric))
            if va and vb:
                changes.append(Change(metric, va, vb, vb / va, test.interval() if test else (), test))
        return CellChange(level_name(a), tuple(changes), unit="req/s")
    changes = tuple(level_change(m, va, vb, ratio_bounds(ca, cb)) for m, va, vb, ca, cb in figures if va and vb)
    missing = [side for side, lv in (("A", a), ("B", b)) if not lv.qps_ci]
    note = f"no CI on {' and '.join(missing)} (schema-1 file: one window): shown, never significant" \
        if missing else ""
    single = [side for side, lv in (("A", a), ("B", b)) if lv.processes < 2]
    if not missing and single:
        note = (f"{' and '.join(single)} from one service process: judged by CI overlap (conservative); "
                "`bench sweep --service-processes 3` tests across processes")
    return CellChange(level_name(a), changes, note, unit="req/s")


def level_process_values(lv: LoadLevel, metric: str) -> np.ndarray:
    """log QPS, P50 or P95 of each service process of the level."""
    values = {"qps": lv.process_qps, "p50": lv.process_p50_ms, "p95": lv.process_p95_ms}[metric]
    return np.log(np.asarray([v for v in values if v and v > 0], dtype=float))


def level_change(metric: str, a: float, b: float, ci: tuple) -> Change:
    return Change(metric, a, b, b / a, ci, significant=bool(ci) and (ci[0] > 1.0 or ci[1] < 1.0))


def ratio_bounds(ci_a: tuple, ci_b: tuple) -> tuple:
    """[lo_B / hi_A, hi_B / lo_A]: every ratio of two values inside the two CIs; () without both CIs."""
    if not ci_a or not ci_b or ci_a[0] <= 0:
        return ()
    return ci_b[0] / ci_a[1], ci_b[1] / ci_a[0]


def violations(cells: tuple, levels: tuple, limits: tuple) -> tuple:
    """'key: p95 +30.2 % (limit +5 %)' for each threshold passed with confidence: rows with a Welch test (cells,
    levels across service processes) by a one-sided test of the ratio beyond the limit, Holm-corrected across every
    row × threshold; levels from one process when their whole ratio interval lies beyond it."""
    by_ci, tests = [], []
    for row in cells + levels:
        for limit in limits:
            change = row.get(limit.metric)
            if change is None:
                continue
            if change.test is not None and limit.violated(change.ratio):
                tests.append((row, limit, change))
            elif change.test is None and change.ci and limit.violated(change.ci[0] if limit.limit >= 0
                                                                      else change.ci[1]):
                by_ci.append((row, limit, change))
    rejected = holm([ch.test.p_beyond(float(np.log1p(lim.limit)), 1 if lim.limit >= 0 else -1)
                     for _, lim, ch in tests])
    found = [t for t, r in zip(tests, rejected) if r] + by_ci
    return tuple(f"{row.key}: {lim.metric} {percent_change(ch.ratio)} (limit {lim.text})" for row, lim, ch in found)


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
            "failed": list(cmp.failed), "exit_code": cmp.exit_code, "significant_note": SIGNIFICANT,
            "power": cmp.power}


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
    lines += [ctx["power"]] if ctx["power"] else []
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
