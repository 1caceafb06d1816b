"""The searched QPS at the SLO of each service configuration (loadtests.slo_search's SloSearch records): its
table in section 3.3, and the figure the decision table uses in place of the closed-loop grid when present."""

from __future__ import annotations

from bench.core.results import RunResult
from bench.core.search_records import SearchProbe, SloSearch
from reports import fmt
from reports.common import column, label, na, num, table, text

METHOD = ("Open-loop Poisson arrivals at a rate found by search (bracket, then bisect); latency counts from each "
          "request's intended send time. A rate passes only when its last 3 windows are stable (each within 10 % "
          "of their mean on keep-up = completions / intended sends, and on mean latency: perf_analyzer's rule, its "
          "default latency), no request failed or was answered wrongly, the achieved rate is within the stated "
          "share of the offered one, and the tail passes an early-stopping binomial bound (MLPerf LoadGen's): "
          "with t of n requests over the SLO, P(Binomial(n, 1 − percentile) ≤ t) ≤ 1 − confidence, i.e. a "
          "service whose true share over the SLO were the allowed one would rarely look this good.")


def search_label(s: SloSearch) -> str:
    """The configuration's name as reports.service.label_of gives it for its load-test levels."""
    name = s.config.label or s.config.backend or "unnamed"
    return name + (f" ({s.workload} texts)" if s.workload not in (None, "corpus") else "")


def searched_for(run: RunResult, name: str, slo_ms: float) -> SloSearch | None:
    """The run's search of configuration `name` at this P95 SLO (a search at another SLO does not apply)."""
    return next((s for s in run.slo_searches if search_label(s) == name and s.percentile == 95.0
                 and abs(s.slo_ms - slo_ms) < 1e-9), None)


def path_text(probes: tuple[SearchProbe, ...]) -> str:
    """'5 pass → 10 pass → 20 fail (tail bound) → …' in the order the probes ran."""
    return " → ".join(f"{fmt.num(p.offered_rps)} {'pass' if p.passed else f'fail ({p.verdict})'}" for p in probes)


def search_table(run: RunResult) -> dict | None:
    """None for a run without searches, so older reports keep their tables."""
    if not run.slo_searches:
        return None
    cols = [column("Configuration", False), column("SLO", False), column("QPS at the SLO [95% CI]"),
            column("Offered rate found req/s"), column("First failing rate req/s"), column("Requests behind it"),
            column("Probes"), column("Search path (offered req/s)", False), column("Stopped", False)]
    rows = [search_row(s) for s in run.slo_searches]
    notes = [METHOD, "CI: the achieved rate across the found rate's windows (t interval), widened up to the "
             "lowest failing rate, since the search resolves the capacity only to that bracket; where no rate "
             "failed before the search stopped, the figure is a lower bound (≥). The found rate is run again at "
             "the end; every probe's tail test judges the same number of requests."]
    return table("searched", "QPS at the SLO, searched (open loop)", cols, rows, notes)


def search_row(s: SloSearch) -> list:
    slo = text(f"P{s.percentile:g} ≤ {s.slo_ms:g} ms (confidence {s.confidence:.0%})")
    head = [label(search_label(s)), slo]
    if s.status == "failed":
        return head + [na(s.reason or "search failed", span=6), text(s.stopped)]
    found = num(fmt.num_ci(s.qps, s.qps_ci)) if s.qps is not None else na(s.reason or "no rate met the SLO")
    return head + [found, num(fmt.num(s.rate_rps), "no rate passed"),
                   num(fmt.num(s.first_failing_rps), "none failed within the search"), num(str(s.requests)),
                   num(str(len(s.probes))), text(path_text(s.probes)),
                   text(f"{s.stopped} after {s.elapsed_s:.0f} s")]
