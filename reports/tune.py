"""The serving-config search (bench tune): its table in section 3.3 and its plot — offline throughput against P95
per model call, marker area by memory, the Pareto front joined, the service-verified configurations starred."""

from __future__ import annotations

from bench.core.results import RunResult
from bench.core.search_records import TuneCandidate, TuneRecord
from reports import fmt
from reports.common import column, label, na, num, table, text

METHOD = ("Offline: R engine processes × T intra-op threads, each pinned to its own cores as the service pins its "
          "replicas, fed the model calls the service's batcher makes at max batch B (same padding budget), all "
          "replicas at once for a fixed time; throughput CI: t interval across 8 equal windows. The best "
          "configurations are then run as real services beside the default service, closed loop at saturation, "
          "windows interleaved; the recommendation is the highest service QPS (the default service included), and "
          "the configurations it ties with (overlapping intervals) are named. A short tune (make bench) stops after "
          "the offline ranking and load-tests its best in the run's sweep instead.")


def tune_table(run: RunResult) -> dict | None:
    """None for a run without a tune."""
    t = run.tune
    if t is None:
        return None
    cols = [column("Backend, replicas × threads, max batch", False), column("Offline items/s [95% CI]"),
            column("P95 per call ms"), column("Memory MB (all replicas)"), column("Service QPS [95% CI]"),
            column("Service P95 ms"), column("Note", False)]
    rows = [candidate_row(t, c) for c in t.candidates]
    if t.default_qps is not None:
        rows.append([label(t.default_label), na("runs in the service process", 3),
                     num(fmt.num_ci(t.default_qps, t.default_qps_ci)), na("see the load-test tables"),
                     text("the default service, for comparison")])
    searched = ", ".join(t.backends or (t.backend,))
    left = [f"{name} not searched: {why}" for name, why in t.left_out]
    return table("tune", f"Serving configuration (bench tune, {t.cores} cores, {searched})", cols, rows,
                 [METHOD, summary(t), *left])


def candidate_row(t: TuneRecord, c: TuneCandidate) -> list:
    if c.status != "ok":
        return [label(c.label), na(c.reason or "failed", 5), text("failed")]
    notes = [n for n, on in (("recommended" + (" (tie)" if t.tied_with else ""), c.label == t.recommended),
                             ("ties with the recommendation", c.label in t.tied_with),
                             ("Pareto front", c.label in t.pareto),
                             ("oversubscribed: R × T > cores, not pinned", c.oversubscribed)) if on]
    unverified = "ranked offline; the recommendation is served in the load tests" if t.basis == "offline" else \
        "not verified as a service (offline rank too low)"
    service = num(fmt.num_ci(c.service_qps, c.service_qps_ci)) if c.service_qps is not None else na(unverified)
    return [label(c.label), num(fmt.num_ci(c.items_per_s, c.items_ci)), num(fmt.num(c.p95_ms)),
            num(fmt.num(c.rss_mb)), service, num(fmt.num(c.service_p95_ms), "not verified"), text("; ".join(notes))]


def summary(t: TuneRecord) -> str:
    if t.recommended is None:
        return "No configuration could be verified as a service: no recommendation."
    tie = f" It ties with {', '.join(t.tied_with)} (overlapping intervals)." if t.tied_with else ""
    basis = (" Ranked by offline throughput (a short tune): its service figures, across fresh processes beside the "
             "default configurations, are in the load-test tables as \"tuned …\"; `python -m bench tune` also "
             "verifies the best as services at saturation.") if t.basis == "offline" else ""
    return (f"Recommended: {t.recommended}, started with `{t.command}`.{tie}{basis} Search {t.stopped} in "
            f"{t.elapsed_s:.0f} s.")


def tune_plots(run: RunResult) -> list[dict]:
    """The tune's plot, or nothing for a run without a tune."""
    from reports.plots import figure, png

    t = run.tune
    ok = [c for c in (t.candidates if t else ()) if c.status == "ok" and c.items_per_s is not None]
    if not ok:
        return []
    fig, (ax,) = figure()
    for c in ok:
        ax.scatter(c.p95_ms, c.items_per_s, s=20 + (c.rss_mb or 0) / 10, alpha=0.5,
                   marker="x" if c.oversubscribed else "o")
        ax.annotate(c.label, (c.p95_ms, c.items_per_s), fontsize=7, xytext=(4, 3), textcoords="offset points")
        if c.service_qps is not None:
            ax.scatter(c.service_p95_ms or c.p95_ms, c.service_qps, marker="*", s=120, color="black")
    front = sorted((c for c in ok if c.label in t.pareto), key=lambda c: c.p95_ms or 0)
    ax.plot([c.p95_ms for c in front], [c.items_per_s for c in front], "--", color="grey", label="Pareto front")
    ax.set_xlabel("P95 ms (offline: per model call; ★ service: per request)")
    ax.set_ylabel("items/s (offline) · ★ service QPS")
    ax.legend(fontsize=7)
    return [png(fig, "tune", "Serving configurations: throughput vs P95 (area: memory)")]
