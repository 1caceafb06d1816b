"""The decision: for a P95 SLO, the highest QPS each configuration sustains, its energy and cost per million
inferences, and a recommendation sentence derived from those numbers.

Every ranked figure carries its 95 % CI, and configurations whose intervals overlap are called a tie, never
ranked (the rule is in reports.ranking). The multi-dimension summary (3.4) is in reports.overview."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from bench.core.results import CellResult, RunResult
from bench.core.summary import board_energy, host_cpu_energy
from bench.model.artifacts import floor_exclusions
from reports import fmt
from reports.common import (
    cell_label,
    column,
    label,
    na,
    num,
    on_gpu,
    one_process,
    table,
    text,
    throughput_ci,
    variant_of,
    why_not,
)
from reports.gpu import CPU_ROW, NO_BOARD
from reports.ranking import CLOSED_LOOP, NO_CI, ONE_PROCESS, ONE_SERVICE, Entry, names_and, standings, tied_with
from reports.searched import searched_for
from reports.service import ci_source, failed_configs, label_of, load_point, measured, service_configs

ENGINE = "engine only, in-process, no HTTP"
SERVICE = "service, HTTP load test"
SHORT = {ENGINE: "engine", SERVICE: "service"}


@dataclass(frozen=True)
class Candidate:
    """One row of the decision table: a service configuration judged by its best load-test level within the SLO,
    or an engine cell judged by its back-to-back throughput. `qps` is None when nothing meets the SLO."""

    name: str
    backend: str | None
    kind: str
    price: float  # USD per device hour (an input, not a measurement)
    gpu: bool = False
    measured: bool = True
    reason: str | None = None
    qps: float | None = None
    qps_ci: tuple = ()
    p95_ms: float | None = None
    p95_ci_ms: tuple = ()
    at: str | None = None
    unranked: str | None = None  # why its CI cannot rank it; None when it can
    energy_per_m_j: float | None = None  # the host CPU's (every cell: RAPL or the estimate)
    energy_estimated: bool = False
    energy_reason: str | None = None
    gpu_energy_per_m_j: float | None = None  # a GPU cell's board (NVML), never added to the host CPU's
    gpu_energy_reason: str | None = None
    host: str = ""  # in a report of several runs: the host label (the name then ends in " @ host")
    unit: str = "inferences"  # what one answer is: "embeddings" for an embedding model (its signature)
    searched: bool = False  # qps is the searched open-loop QPS at the SLO, not a grid level
    requests: int | None = None  # behind the searched figure
    processes: int | None = None  # a grid level's fresh service processes (its CIs are across them when >= 2)
    borderline: bool = False  # meets the SLO by its P95's point estimate while the P95's CI reaches past the SLO

    @property
    def config_name(self) -> str:
        return self.name.removesuffix(f" @ {self.host}") if self.host else self.name

    @property
    def device(self) -> str:
        return "GPU" if self.gpu else "CPU"

    @property
    def cost_per_m(self) -> float | None:
        return cost_per_million(self.price, self.qps)

    @property
    def cost_ci(self) -> tuple:
        """The QPS interval mapped through the cost formula (higher QPS, lower cost)."""
        if not self.qps_ci or self.qps is None:
            return ()
        return cost_per_million(self.price, self.qps_ci[1]), cost_per_million(self.price, self.qps_ci[0]) or math.inf

    def by_cost(self) -> Entry:
        return Entry(self.name, self.cost_per_m, self.cost_ci, self.unranked)

    def by_qps(self) -> Entry:
        return Entry(self.name, self.qps, tuple(self.qps_ci), self.unranked)


def candidates(run: RunResult, options: dict) -> list[Candidate]:
    """Service configs from load tests, then engine cells of backends without a measured service."""
    # Backends with a measured service level are judged by it; a failed service leaves its engine cells in.
    served = {cfg.backend for name, cfg in service_configs(run).items() if name not in failed_configs(run)}
    out = [service_candidate(run, name, cfg.backend, options) for name, cfg in service_configs(run).items()]
    seen_unmeasured = set()
    for cell in run.cells:
        if cell.spec.workload != "corpus" or cell.spec.backend in served:
            continue
        if cell.status == "ok":
            out.append(engine_candidate(cell, options))
        elif cell.spec.backend not in seen_unmeasured:  # one line per backend, not per batch size
            seen_unmeasured.add(cell.spec.backend)
            out.append(replace(base(cell.spec.backend, cell.spec.backend, ENGINE, options), reason=why_not(cell),
                               measured=False))
    unit = "embeddings" if run.model.signature is not None and run.model.signature.is_embedding else "inferences"
    return [replace(c, unit=unit) for c in floor_left_out(like_with_like(out), floor_exclusions(run.model))]


def like_with_like(rows: list[Candidate]) -> list[Candidate]:
    """Services are ranked on one kind of figure: when some have the open-loop QPS searched at the SLO, the others'
    closed-loop grid figures are shown but not ranked against them (closed loop waits for each answer, so it
    offers less load than open loop at the same P95)."""
    if not any(c.searched and c.qps is not None for c in rows if c.kind == SERVICE):
        return rows
    return [replace(c, unranked=CLOSED_LOOP) if c.kind == SERVICE and c.qps is not None and not c.searched
            and c.unranked is None else c for c in rows]


def floor_left_out(rows: list[Candidate], excluded: dict[str, str]) -> list[Candidate]:
    """Rows whose backend lost more accuracy than the floor allows stay in the table, left out of the ranking with
    the reason (a fast configuration that answers wrongly is not a choice)."""
    return [replace(c, measured=False, qps=None, reason=f"left out: {excluded[c.backend]}")
            if c.backend in excluded else c for c in rows]


def base(name: str, backend: str | None, kind: str, options: dict) -> Candidate:
    gpu = on_gpu(backend)
    price = options.get("hour_usd") or (options["gpu_hour_usd"] if gpu else options["cpu_hour_usd"])
    return Candidate(name, backend, kind, price, gpu)


def service_candidate(run: RunResult, name: str, backend: str | None, options: dict) -> Candidate:
    slo = options["slo_p95_ms"]
    row = replace(base(name, backend, SERVICE, options),
                  energy_reason="no service CPU time recorded (a file from before it was, or the SLO search)")
    failed = failed_configs(run).get(name)
    if failed:
        return replace(row, reason=f"failed: {failed}", measured=False)
    search = searched_for(run, name, slo)
    if search is None and saturation_only(run, name):
        return replace(row, measured=False, reason=f"measured only at saturation by bench tune "
                                                   f"({run.tune.users} users, section 3.3), not at the SLO")
    if search is not None and search.status != "failed":
        return searched_candidate(row, search)
    points = [lt for lt in run.loadtests if label_of(lt) == name and measured(lt) and lt.p95_ms is not None]
    # A level with failed or wrong answers does not count as sustained, however fast it was.
    meeting = [lt for lt in points if lt.p95_ms <= slo and not lt.failures and not lt.invalid_answers and lt.qps > 0]
    if not meeting:
        lowest = min((lt.p95_ms for lt in points), default=None)
        return replace(row, reason=f"no tested load meets P95 ≤ {slo:g} ms" +
                       (f" (lowest P95 {fmt.num(lowest)} ms)" if lowest is not None else ""))
    best = max(meeting, key=lambda lt: lt.qps)
    at = load_point(best) + (", client saturated" if best.client_saturated else "")
    if best.energy_per_text_j is not None:  # this configuration's own, at this level (not an engine cell's)
        row = replace(row, energy_per_m_j=best.energy_per_text_j * 1e6, energy_estimated=True, energy_reason=None)
    return replace(row, qps=best.qps, qps_ci=tuple(best.qps_ci), p95_ms=best.p95_ms, p95_ci_ms=tuple(best.p95_ci_ms),
                   at=at + borderline_note(best.p95_ci_ms, slo),
                   unranked=NO_CI if not best.qps_ci else ONE_SERVICE if best.processes < 2 else None,
                   processes=best.processes, borderline=crosses(best.p95_ci_ms, slo))


def crosses(ci, slo: float) -> bool:
    """The P95's 95 % interval reaches past the SLO (its point estimate being within it)."""
    return bool(ci) and ci[-1] > slo


def borderline_note(ci, slo: float) -> str:
    return f"; borderline: the P95's CI reaches {fmt.num(ci[-1])} ms, past {slo:g}" if crosses(ci, slo) else ""


def saturation_only(run: RunResult, name: str) -> bool:
    """A configuration bench tune verified and nothing else measured: its closed loop at saturation queues every
    request behind others (its P95 lands far past the SLO: docs/measurements.md), which says nothing of its QPS
    at the SLO."""
    tune = run.tune
    if tune is None or name not in {tune.default_label, *(c.service_label for c in tune.candidates)}:
        return False
    return all(lt.mode == "closed" and lt.users == tune.users for lt in run.loadtests if label_of(lt) == name)


def searched_candidate(row: Candidate, search) -> Candidate:
    """The searched QPS at the SLO (open loop, with its CI), preferred to the coarse closed-loop grid."""
    if search.qps is None:
        return replace(row, reason=search.reason or f"no searched rate meets P95 ≤ {search.slo_ms:g} ms")
    probe = next((p for p in search.probes if p.passed and p.offered_rps == search.rate_rps), None)
    # Not bracketed (nothing failed before the search stopped): a lower bound, which ranks above what it clears
    ci = tuple(search.qps_ci) if search.bounded or not search.qps_ci else (search.qps_ci[0], math.inf)
    return replace(row, qps=search.qps, qps_ci=ci, p95_ms=probe.p95_ms if probe else None,
                   at=f"searched: open loop, {fmt.num(search.rate_rps)} req/s offered, {search.requests} requests",
                   searched=True, requests=search.requests, unranked=None if search.qps_ci else NO_CI)


def engine_candidate(cell: CellResult, options: dict) -> Candidate:
    slo = options["slo_p95_ms"]
    (per_item, source), board = host_cpu_energy(cell), board_energy(cell)[0]
    row = replace(base(f"{cell_label(cell)} · batch {cell.spec.batch}", cell.spec.backend, ENGINE, options),
                  energy_per_m_j=per_item * 1e6 if per_item is not None else None,
                  energy_estimated=source == "estimate", energy_reason="no host CPU energy reading",
                  gpu_energy_per_m_j=board * 1e6 if board is not None else None, gpu_energy_reason=NO_BOARD,
                  p95_ms=cell.stats["p95"] * 1000,
                  p95_ci_ms=tuple(x * 1000 for x in cell.stats["p95_ci95"]), at="back to back",
                  unranked=ONE_PROCESS if one_process(cell) else None)
    if row.p95_ms > slo:
        return replace(row, reason=f"P95 {fmt.num(row.p95_ms)} ms exceeds the {slo:g} ms SLO")
    return replace(row, qps=cell.throughput, qps_ci=throughput_ci(cell), borderline=crosses(row.p95_ci_ms, slo),
                   at=row.at + borderline_note(row.p95_ci_ms, slo))


def cost_per_million(price_per_hour: float, qps: float | None) -> float | None:
    """Dollars per 1M inferences on one device running flat out at `qps`: price / (qps × 3600) × 1e6."""
    return price_per_hour / (qps * 3600.0) * 1e6 if qps else None


def decision_order(c: Candidate) -> tuple:
    """Configurations that meet the SLO first, cheapest first; then too slow; then not measured."""
    if c.cost_per_m is not None:
        return (0, c.cost_per_m)
    return (1, 0) if c.measured else (2, 0)


def ranks(cands: list[Candidate]) -> dict:
    """name -> Standing by cost among the configurations of the same kind that meet the SLO."""
    out = {}
    for kind in (SERVICE, ENGINE):
        out |= standings([c.by_cost() for c in cands if c.kind == kind and c.cost_per_m is not None], higher=False)
    return out


def decision_table(cands: list[Candidate], options: dict) -> dict:
    slo = options["slo_p95_ms"]
    multi = any(c.host for c in cands)  # runs of several hosts: a host column after the configuration
    cols = [column("Configuration", False), *([column("Host", False)] if multi else []), column("Kind", False),
            column("Device", False), column(f"Max QPS at P95 ≤ {slo:g} ms [95% CI]"),
            column("P95 ms there [95% CI]"), column("At", False), column("Host CPU energy kJ / 1M inferences"),
            column("GPU board energy kJ / 1M inferences (NVML)"), column("Cost USD / 1M inferences [95% CI]"),
            column("Rank by cost within kind (≈ tie: CIs overlap)", False)]
    ordered = sorted(cands, key=decision_order)
    standing = ranks(cands)
    rows = [with_host(decision_row(c, standing.get(c.name)), c.host, multi) for c in ordered if c.measured]
    gaps: dict = {}  # one row per reason for what was not measured
    for c in ordered:
        if not c.measured:
            gaps.setdefault((c.reason, c.kind, c.device, c.host), []).append(c.config_name)
    rows += [with_host([text(", ".join(names)), text(SHORT[kind]), text(device), na(reason, span=7)], host, multi)
             for (reason, kind, device, host), names in gaps.items()]
    notes = decision_notes(options, [c.processes for c in cands if c.processes])
    return table("decision", f"Decision table for the P95 ≤ {slo:g} ms SLO", cols, rows, notes,
                 empty="no configurations measured")


def with_host(row: list, host: str, multi: bool) -> list:
    return [row[0], label(host), *row[1:]] if multi else row


def decision_notes(options: dict, service_processes: list[int]) -> list[str]:
    return ["Kind: engine = back-to-back in-process calls with pre-tokenised inputs on all cores (an upper "
            "bound for a service on the same host); service = HTTP end to end under Locust.",
            f"Cost = device price per hour / (QPS × 3600) × 1,000,000, at "
            f"{options.get('price_note') or price_text(options)} (prices are inputs, not measurements); its CI is "
            "the QPS CI through that formula.",
            f"CIs: service {ci_source(service_processes)}; engine throughput from the hierarchical-"
            "bootstrap CI of the mean latency (processes, then samples). Rank: 1 + the configurations whose whole "
            "cost interval is lower; 'tie' where intervals overlap (indistinguishable on this host). No CI (a "
            "single window) or a CI from one worker process: shown, not ranked with confidence."]


def price_text(options: dict) -> str:
    return f"CPU ${options['cpu_hour_usd']:.2f}/h and GPU ${options['gpu_hour_usd']:.2f}/h"


def decision_row(c: Candidate, standing) -> list:
    head = [label(c.config_name), text(SHORT[c.kind]), text(c.device)]
    if c.qps is None:  # measured, but too slow for the SLO at every tested load
        p95 = num(fmt.num_ci(c.p95_ms, c.p95_ci_ms)) if c.p95_ms is not None else text("")
        return head + [text(c.reason), p95, text(""), text(""), text(""), text(""), text("")]
    return head + [num(fmt.num_ci(c.qps, c.qps_ci)), num(fmt.num_ci(c.p95_ms, c.p95_ci_ms)), text(c.at),
                   *energy_cells(c), num(f"{fmt.usd(c.cost_per_m)}{fmt.ci_suffix(c.cost_ci, fmt.usd)}"),
                   text(standing.text)]


def energy_cells(c: Candidate) -> list[dict]:
    """kJ per million inferences: the host CPU's, then a GPU configuration's board (NVML) in a column of its own."""
    cpu = fmt.num(c.energy_per_m_j / 1000) if c.energy_per_m_j is not None else None
    board = fmt.num(c.gpu_energy_per_m_j / 1000) if c.gpu_energy_per_m_j is not None else None
    return [num(f"{cpu}{' (est.)' if c.energy_estimated else ''}" if cpu else None, c.energy_reason),
            num(board, c.gpu_energy_reason or c.energy_reason) if c.gpu else text(CPU_ROW)]


def advice(run: RunResult, cands: list[Candidate], options: dict) -> list[str]:
    """The pick (or the tie) first, then what limits it.

    Service rows (HTTP load tests) are preferred when any meets the SLO: engine-only throughput leaves out HTTP,
    tokenisation and queueing, so ranking it against end-to-end QPS would favour whatever was not load-tested.
    """
    slo = options["slo_p95_ms"]
    meeting = [c for c in cands if c.cost_per_m is not None]
    if not meeting:
        return [f"No measured configuration sustains P95 ≤ {slo:g} ms."]
    served = [c for c in meeting if c.kind == SERVICE]
    pool = served or meeting
    cheapest = min(pool, key=lambda c: c.cost_per_m)
    out = [pick_sentence(cheapest, pool, "service " if served else "", f"P95 ≤ {slo:g} ms")]
    if cheapest.borderline:
        out.append(f"Borderline: {cheapest.name} meets P95 ≤ {slo:g} ms by its point estimate, "
                   f"{fmt.num_ci(cheapest.p95_ms, cheapest.p95_ci_ms)} ms, whose interval reaches past it; a "
                   "lower load, more service processes or the SLO search (bench sweep --run ID --slo-search) "
                   "settles it.")
    out += fastest_sentence(cheapest, pool)
    if cheapest.kind == ENGINE:
        out.append("Engine throughput leaves out HTTP, tokenisation and queueing: confirm it with the service load "
                   "test before sizing a deployment.")
    out += engine_only_sentence([c for c in meeting if c.kind == ENGINE], bool(served))
    return out + parity_caveat(run, cheapest.backend)


def figures(c: Candidate) -> str:
    return f"{fmt.num_ci(c.qps, c.qps_ci)} {c.unit}/s on one {c.device} at {fmt.usd(c.cost_per_m)} per million " \
        f"{c.unit}"


def pick_sentence(cheapest: Candidate, pool: list[Candidate], kind: str, slo: str) -> str:
    """The cheapest configuration, or the tie it is part of: configurations whose cost intervals overlap the
    cheapest's are indistinguishable on this host and are named together, never ranked."""
    costs = [c.by_cost() for c in pool]
    tied = [c for c in pool if c.by_cost() in tied_with(cheapest.by_cost(), costs)]
    if tied:
        basis = "QPS CIs overlap" if len({c.price for c in [cheapest, *tied]}) == 1 else "cost CIs overlap"
        return f"Meeting {slo}, {tie_phrase([cheapest, *tied], basis)}."
    return f"Cheapest {kind}configuration meeting {slo}: {cheapest.name} ({cheapest.kind}), {figures(cheapest)}" \
        f"{confidence(cheapest.by_cost(), costs)}."


def fastest_sentence(cheapest: Candidate, pool: list[Candidate]) -> list[str]:
    """The highest QPS when that is not the pick (a GPU can be faster and dearer), or its tie by QPS."""
    fastest = max(pool, key=lambda c: c.qps)
    rates = [c.by_qps() for c in pool]
    tied = [c for c in pool if c.by_qps() in tied_with(fastest.by_qps(), rates)]
    if fastest is cheapest or cheapest in tied:
        return []
    if tied:
        return [f"Highest sustained throughput: {tie_phrase([fastest, *tied], 'QPS CIs overlap')}."]
    return [f"Highest sustained throughput: {fastest.name}, {figures(fastest)}{confidence(fastest.by_qps(), rates)}."]


def tie_phrase(group: list[Candidate], basis: str) -> str:
    return f"{names_and([c.name for c in group])} are indistinguishable on this host ({basis}): " + \
        "; ".join(f"{c.name} {figures(c)}" for c in group)


def confidence(entry: Entry, entries: list[Entry]) -> str:
    """What backs a claim of being first among `entries`: its CI is clear of the others', or why the claim is a
    point estimate only (no usable CI, or an overlap: a tie)."""
    others = [o for o in entries if o.name != entry.name]
    if not others:
        return ""
    if not entry.ranked:
        return f" (by point estimate only: {entry.why_not})"
    tied = [o.name for o in tied_with(entry, others)]
    if tied:
        return f" (indistinguishable from {names_and(tied)}: CIs overlap)"
    loose = [o.name for o in others if not o.ranked]
    if not loose:
        return " (its CI is clear of every other configuration's)"
    clear = "its CI is clear of the other intervals; " if len(loose) < len(others) else ""
    return f" ({clear}not ranked with confidence against {names_and(loose)}: no usable CI)"


def engine_only_sentence(engine_only: list[Candidate], served: bool) -> list[str]:
    if not (served and engine_only):
        return []
    best = min(engine_only, key=lambda c: c.cost_per_m)
    return [f"Not load-tested as a service: {', '.join(c.name for c in engine_only)}; of these, {best.name} has the "
            f"lowest engine-only cost ({fmt.usd(best.cost_per_m)} per million, an upper bound without HTTP)"
            f"{confidence(best.by_cost(), [c.by_cost() for c in engine_only])}."]


def parity_caveat(run: RunResult, backend: str | None) -> list[str]:
    variant = variant_of(backend or "")
    parity = run.model.parity(variant)
    if parity is None or parity.label_agreement is None or parity.label_agreement >= 0.99:
        return []
    meaning = " With synthetic weights this says nothing about accuracy on real reviews: re-check with the real " \
              "model." if run.model.synthetic else ""
    return [f"Its {variant} model agrees with PyTorch FP32 on {parity.label_agreement:.1%} of "
            f"{parity.n} labels.{meaning}"]


def not_measured(run: RunResult, cands: list[Candidate]) -> list[str]:
    out = []
    gpu_missing = sorted({c.backend for c in cands if not c.measured and c.gpu})
    gpu_measured = any(c.measured and c.gpu for c in cands)
    if gpu_missing and not gpu_measured:
        out.append(f"No GPU on this host: GPU configurations ({', '.join(gpu_missing)}) not measured, so this "
                   "run cannot say whether a GPU would be cheaper.")
    others = [c for c in cands if not c.measured and c.backend not in gpu_missing]
    out += [f"Not measured: {c.name} ({c.reason})." for c in others]
    if not run.loadtests:
        out.append("No service load tests in this run: every QPS above is engine throughput, not HTTP QPS.")
    if run.model.synthetic:
        out.append("Weights are synthetic: accuracy is not part of this decision.")
    return out


def conditions(options: dict) -> str:
    """What the answer assumes: the SLO, the prices and, with a capacity plan, the traffic."""
    traffic = options.get("traffic_rps")
    load = f"{fmt.num(traffic)} req/s mean traffic" if traffic else "no traffic given (--traffic N adds a plan)"
    return f"P95 ≤ {options['slo_p95_ms']:g} ms; {options.get('price_note') or price_text(options)} " \
           f"(prices are inputs); {load}."


def glance_table(cands: list[Candidate], options: dict) -> dict:
    """The decision table cut to what decides (configuration, device, QPS at the SLO, cost, rank), narrow enough
    for 1,280 px with a host column; the full table (P95, load point, energy) follows on demand."""
    multi = any(c.host for c in cands)
    cols = [column("Configuration", False), *([column("Host", False)] if multi else []),
            column("Runs as", False), column(f"QPS at P95 ≤ {options['slo_p95_ms']:g} ms"), column("USD / 1M"),
            column("Rank by cost", False)]
    standing = ranks(cands)
    rows, reasons = [], []
    for c in sorted((c for c in cands if c.measured), key=decision_order):
        head = [label(c.config_name), *([label(c.host)] if multi else []), text(f"{SHORT[c.kind]} · {c.device}")]
        if c.qps is None:
            rows.append(head + [na(c.reason or "too slow", span=3)])
            continue
        rank = standing.get(c.name)
        if rank is not None and rank.rank is None:
            reasons.append(rank.unranked)
            rank_text = f"not ranked: {rank.unranked.split(',')[0]}"  # the full reason is a note
        else:
            rank_text = rank.text if rank is not None else ""
        rows.append(head + [num(fmt.num_ci(c.qps, c.qps_ci)), num(f"{fmt.usd(c.cost_per_m)}"
                                                                  f"{fmt.ci_suffix(c.cost_ci, fmt.usd)}"),
                            text(rank_text)])
    notes = [f"Not ranked: {why}." for why in dict.fromkeys(reasons)]
    return table("glance", "At a glance", cols, rows, notes, empty="no configurations measured")
