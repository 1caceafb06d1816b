"""Compare two runs cell by cell: ratios of P50, P95 and throughput, whether each change is significant, and a
verdict against thresholds such as "p95:+5%" with an exit code for CI (after pyperf's compare).

Significance is a bootstrap on the raw latencies: both runs are resampled independently (fixed seed) and a
change counts only when the 95 % interval of the ratio B/A excludes 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from bench.errors import BenchError
from bench.host import same_host
from bench.results import CellResult, RunResult
from reports import fmt

METRICS = ("p50", "p95", "qps")
THRESHOLD = re.compile(r"^(p50|p95|qps):([+-])(\d+(?:\.\d+)?)%$")
N_BOOT = 1000
SEED = 0
# Resample in chunks of at most this many values (8 bytes each): a 100k-sample cell stays near 32 MB.
CHUNK_ELEMENTS = 4_000_000


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
        raise ValueError(f"bad threshold {text!r}: expected METRIC:+N% or METRIC:-N% with METRIC one of "
                         f"{', '.join(METRICS)} (e.g. p95:+5% fails when P95 grows by more than 5 %, "
                         f"qps:-5% when throughput drops by more than 5 %)")
    metric, sign, amount = match.groups()
    return Threshold(metric, float(amount) / 100 * (1 if sign == "+" else -1), text.strip())


@dataclass(frozen=True)
class Change:
    """One metric of one cell in both runs: values, ratio B/A and its 95 % bootstrap interval."""

    metric: str
    a: float
    b: float
    ratio: float
    ci: tuple

    @property
    def significant(self) -> bool:
        return self.ci[0] > 1.0 or self.ci[1] < 1.0


@dataclass(frozen=True)
class CellChange:
    key: str
    changes: tuple  # of Change, in METRICS order

    def get(self, metric: str) -> Change:
        return next(c for c in self.changes if c.metric == metric)


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

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def compare_runs(a: RunResult, b: RunResult, force: bool = False, thresholds=()) -> Comparison:
    """Compare ok cells present in both runs (matched by CellSpec.key); refuse different hosts unless forced."""
    limits = tuple(t if isinstance(t, Threshold) else parse_threshold(t) for t in thresholds)
    differences = host_differences(a, b)
    if differences and not force:
        raise BenchError(f"runs {a.run_id} and {b.run_id} come from different hosts ({'; '.join(differences)}): "
                         f"the comparison would measure the hosts, not the change. Use --force to compare anyway")
    ok_a = {c.spec.key: c for c in a.cells if c.status == "ok" and c.latencies_s}
    ok_b = {c.spec.key: c for c in b.cells if c.status == "ok" and c.latencies_s}
    cells = tuple(compare_cell(ok_a[k], ok_b[k]) for k in ok_a if k in ok_b)
    return Comparison(a.run_id, b.run_id, cells, tuple(k for k in ok_a if k not in ok_b),
                      tuple(k for k in ok_b if k not in ok_a), tuple(differences), limits, violations(cells, limits))


def host_differences(a: RunResult, b: RunResult) -> list[str]:
    return [f"{k}: {a.host.get(k)!r} vs {b.host.get(k)!r}" for k in same_host(a.host, b.host)]


def compare_cell(a: CellResult, b: CellResult) -> CellChange:
    rng = np.random.default_rng(SEED)
    boot_a, boot_b = boot_stats(np.asarray(a.latencies_s), rng), boot_stats(np.asarray(b.latencies_s), rng)
    changes = [Change(m, a.stats[m], b.stats[m], b.stats[m] / a.stats[m], interval(boot_b[m] / boot_a[m]))
               for m in ("p50", "p95")]
    # Throughput is items over wall time, one number per run: its uncertainty comes from the mean latency,
    # which it is inversely proportional to (the same batch size in both runs, since the keys match).
    qps_a, qps_b = a.throughput, b.throughput
    changes.append(Change("qps", qps_a, qps_b, qps_b / qps_a, interval(boot_a["mean"] / boot_b["mean"])))
    return CellChange(a.spec.key, tuple(changes))


def boot_stats(data: np.ndarray, rng: np.random.Generator) -> dict:
    """N_BOOT resampled P50, P95 and means of `data`, drawn chunk by chunk to bound memory."""
    out = {"p50": [], "p95": [], "mean": []}
    rows = max(1, CHUNK_ELEMENTS // data.size)
    for begin in range(0, N_BOOT, rows):
        sample = data[rng.integers(0, data.size, size=(min(rows, N_BOOT - begin), data.size))]
        p50, p95 = np.percentile(sample, [50, 95], axis=1, method="linear")
        out["p50"].append(p50)
        out["p95"].append(p95)
        out["mean"].append(sample.mean(axis=1))
    return {k: np.concatenate(v) for k, v in out.items()}


def interval(ratios: np.ndarray) -> tuple:
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)


def violations(cells: tuple, limits: tuple) -> tuple:
    """'key: p95 +30.2 % (limit +5 %)' for each threshold a cell breaks with a significant change."""
    out = []
    for cell in cells:
        for limit in limits:
            change = cell.get(limit.metric)
            if limit.violated(change.ratio) and change.significant:
                out.append(f"{cell.key}: {limit.metric} {percent_change(change.ratio)} (limit {limit.text})")
    return tuple(out)


def percent_change(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f} %"


def comparison_context(cmp: Comparison) -> dict:
    """Plain dicts for both renderers: one row per cell, each metric as 'A → B' and 'ratio [lo–hi]'."""
    rows = []
    for cell in cmp.cells:
        metrics = []
        for c in cell.changes:
            show = fmt.qps if c.metric == "qps" else fmt.ms
            metrics.append({"metric": c.metric, "a": show(c.a), "b": show(c.b), "change": percent_change(c.ratio),
                            "ci": f"[{fmt.ratio(c.ci[0])}–{fmt.ratio(c.ci[1])}]", "significant": c.significant})
        rows.append({"key": cell.key, "metrics": metrics})
    return {"a": cmp.a_id, "b": cmp.b_id, "rows": rows, "only_in_a": list(cmp.only_in_a),
            "only_in_b": list(cmp.only_in_b), "host_differences": list(cmp.host_differences),
            "thresholds": [t.text for t in cmp.thresholds], "failed": list(cmp.failed), "exit_code": cmp.exit_code}


def render_comparison_text(cmp: Comparison) -> str:
    """One block per cell, one line per metric: A -> B, change, interval of the ratio, significance."""
    ctx = comparison_context(cmp)
    lines = [f"compare {ctx['a']} (A) -> {ctx['b']} (B)"]
    if ctx["host_differences"]:
        lines.append(f"FORCED across different hosts: {'; '.join(ctx['host_differences'])}")
    for row in ctx["rows"]:
        lines.append(row["key"])
        for m in row["metrics"]:
            unit = "items/s" if m["metric"] == "qps" else "ms"
            verdict = "significant" if m["significant"] else "not significant"
            lines.append(f"    {m['metric'].upper() + ' ' + unit:<12}{m['a']:>9} -> {m['b']:<9} {m['change']:>9}  "
                         f"ratio CI {m['ci']:<17} {verdict}")
    lines.append("significant: the 95 % bootstrap interval of the ratio B/A excludes 1")
    lines += [f"only in A (not compared): {', '.join(ctx['only_in_a'])}"] if ctx["only_in_a"] else []
    lines += [f"only in B (not compared): {', '.join(ctx['only_in_b'])}"] if ctx["only_in_b"] else []
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
