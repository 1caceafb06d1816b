"""The capacity plan as the report shows it: one table row per configuration and host, and the recommendation
sentences derived from the break-even computation in reports.plan (never written by hand)."""

from __future__ import annotations

from bench.core.stats import overlap
from reports import fmt
from reports.common import column, label, na, num, table, text
from reports.gpu import CPU_ROW
from reports.hosts import HostRun
from reports.plan import (
    ENGINE_ONLY,
    HOURS_PER_MONTH,
    SEARCHED,
    TRAFFIC_RANGE,
    PlanInputs,
    PlanRow,
    cheapest,
    crossings,
    priced_rows,
    segments,
)
from reports.ranking import names_and


def plan_table(rows: list[PlanRow], plan: PlanInputs) -> dict:
    t = plan.traffic_rps
    cols = [column("Host", False), column("Configuration", False), column("Device", False),
            column("Capacity per instance req/s [95% CI]"), column("Capacity from", False),
            column(f"Instances for {fmt.num(t)} req/s [from the CI]"), column("USD / month [from the CI]"),
            column("Host CPU energy kWh / month"), column("GPU board energy kWh / month (NVML)"),
            column("Memory per instance MiB (CPU: RSS; GPU: VRAM)"), column("Price USD / h", False)]
    body = [plan_row_cells(r, plan) for r in rows if r.capacity is not None]
    gaps: dict = {}  # one row per host and reason for what has no capacity (e.g. seven skipped GPU backends)
    for r in rows:
        if r.capacity is None:
            gaps.setdefault((r.host, r.device, r.reason or "no capacity figure"), []).append(r.config)
    body += [[label(host), text(", ".join(configs)), text(device), na(reason, span=8)]
             for (host, device, reason), configs in gaps.items()]
    notes = [f"Traffic {fmt.num(t)} req/s mean × peak factor {plan.peak_factor:g} at target utilisation "
             f"{plan.target_utilisation:.0%}: instances = ceil(traffic × peak / (capacity × utilisation)); a month "
             f"is {HOURS_PER_MONTH:g} h. Brackets: the same from the ends of the capacity CI.",
             f"Capacity from: searched = the highest open-loop Poisson rate whose P95 passed the SLO (stable "
             f"windows, early-stopping tail bound); grid = the best tested load level within the SLO; "
             f"{ENGINE_ONLY} = back-to-back engine throughput (no HTTP, an upper bound).",
             "Energy: per-inference energy of the backend's batch-1 engine cell × traffic × seconds per month "
             "(the work only, not idle instances); (est.) = estimated, not read from a counter. A GPU's board "
             "energy (NVML) is its own column, never added to the host CPU's. Memory: that cell's peak RSS (CPU) "
             "or VRAM (GPU: per-process or device-wide, as labelled)."]
    return table("plan", f"Capacity plan for {fmt.num(t)} req/s", cols, body, notes,
                 empty="no configuration was measured")


def plan_row_cells(r: PlanRow, plan: PlanInputs) -> list:
    head = [label(r.host), label(r.config), text(r.device)]
    price = text(f"${fmt.num(r.hour_usd)} ({r.price_source})")
    t = plan.traffic_rps
    costs = r.cost_range(plan, t)
    lo_hi = [r.instances(plan, t, c) for c in reversed(r.capacity_ci)] if costs else []
    kwh = r.energy_kwh(plan)
    est = " (est.)" if "estimated" in r.energy_label else ""
    return head + [num(fmt.num_ci(r.capacity, r.capacity_ci)), text(r.basis),
                   num(f"{r.instances(plan, t)}" + (f" [{lo_hi[0]}–{lo_hi[1]}]" if lo_hi else " (no CI)")),
                   num(f"{fmt.usd(r.monthly_usd(plan, t))}{fmt.ci_suffix(costs, fmt.usd)}"),
                   num(f"{fmt.num(kwh)}{est}" if kwh is not None else None, r.energy_label), board_kwh(r, plan),
                   num(memory_text(r), r.memory_label), price]


def memory_text(r: PlanRow) -> str | None:
    """MiB per instance; a GPU row's is VRAM and says whose (per-process or device-wide)."""
    if r.memory_bytes is None:
        return None
    return f"{fmt.mib(r.memory_bytes)} ({r.memory_label})" if r.device == "GPU" else fmt.mib(r.memory_bytes)


def board_kwh(r: PlanRow, plan: PlanInputs) -> dict:
    if r.device != "GPU":
        return text(CPU_ROW)
    return num(fmt.num(r.energy_kwh(plan, r.gpu_energy_j)) if r.gpu_energy_j is not None else None,
               r.gpu_energy_label)


def describe(winners: list[PlanRow], multi: bool) -> str:
    """'CPU int8 batching on AMD EPYC 2c' (configurations tied at the same cost named together)."""
    first = winners[0]
    configs = names_and(sorted({w.config for w in winners}))
    same = " (same cost)" if len(winners) > 1 else ""
    where = f" on {names_and(sorted({w.host for w in winners}))}" if multi else ""
    return f"{first.device} {configs}{where}{same}"


def break_even_sentence(rows: list[PlanRow], plan: PlanInputs, multi: bool) -> str:
    """'Below ~N req/s: CPU …; above: GPU …', with the crossing's range from the capacity CIs."""
    segs = segments(rows, plan)
    lo, hi = (f"{x:,.0f}" for x in TRAFFIC_RANGE)
    if len(segs) == 1:
        return f"From {lo} to {hi} req/s, {describe(segs[0][2], multi)} is the cheapest at every traffic."
    first, last = segs[0], segs[-1]
    cross, final = segs[1][0], last[0]
    spread = crossing_range(rows, plan)
    between = f" (between ~{fmt.num(cross)} and ~{fmt.num(final)} req/s the cheapest alternates as whole " \
              "instances are added)" if len(segs) > 2 else ""
    return f"Below ~{fmt.num(cross)} req/s{spread}: {describe(first[2], multi)}; above ~{fmt.num(final)} req/s: " \
        f"{describe(last[2], multi)}{between}."


def crossing_range(rows: list[PlanRow], plan: PlanInputs) -> str:
    """The first crossing again with every capacity at its CI's low end, then its high end."""
    if not all(r.capacity_ci and r.capacity_ci[0] > 0 for r in rows):
        return ""
    ends = [crossings(rows, plan, pick=lambda r, i=i: r.capacity_ci[i]) for i in (0, 1)]
    found = [e[0] for e in ends if e]
    if len(found) < 2:
        return ""
    return f" ({fmt.num(min(found))}–{fmt.num(max(found))} across the capacity CIs)"


def at_traffic_sentence(rows: list[PlanRow], plan: PlanInputs, multi: bool) -> str:
    t = plan.traffic_rps
    best = cheapest(rows, plan, t)
    pick = best[0]
    costs = pick.cost_range(plan, t)
    tied = [r for r in rows if r not in best and costs and r.cost_range(plan, t)
            and overlap(sorted(costs), sorted(r.cost_range(plan, t)))]
    out = f"At {fmt.num(t)} req/s: {describe(best, multi)}, {pick.instances(plan, t)} instance(s), " \
          f"{fmt.usd(pick.monthly_usd(plan, t))} per month"
    if tied:
        out += f"; indistinguishable within the capacity CIs from {names_and([r.name for r in tied])}"
    return out + "."


def plan_sentences(rows: list[PlanRow], plan: PlanInputs, hosts: list[HostRun]) -> list[str]:
    """The recommendation derived from the break-even computation, then what it rests on and what is missing."""
    multi = len(hosts) > 1
    usable = priced_rows(rows)
    if not usable:
        return ["No configuration has a capacity within the SLO on any host: nothing to plan with.",
                *gaps_sentences(rows, hosts)]
    out = [break_even_sentence(usable, plan, multi), at_traffic_sentence(usable, plan, multi)]
    bases = sorted({r.basis for r in usable})
    if bases != [SEARCHED]:
        out.append("Capacities used: " + "; ".join(
            f"{b} for {names_and([r.name for r in usable if r.basis == b])}" for b in bases) + ".")
    left = [r.name for r in rows if r.capacity and r not in usable]
    if left:
        out.append(f"Listed but left out of the break-even (engine-only on a host with load-tested "
                   f"configurations): {names_and(left)}.")
    return out + gaps_sentences(rows, hosts)


def gaps_sentences(rows: list[PlanRow], hosts: list[HostRun]) -> list[str]:
    out = [f"{h.label}: engine-only, not load-tested (no service load tests in run {h.run.run_id})."
           for h in hosts if not h.run.loadtests]
    missing: dict = {}
    for r in rows:
        if r.capacity is None:
            missing.setdefault(r.reason or "no figure", []).append(r.name)
    out += [f"Not in the plan: {names_and(names) if len(names) <= 3 else f'{len(names)} configurations'} "
            f"({reason}; listed in the table)." for reason, names in missing.items()]
    examples = sorted({h.label for h in hosts if h.hour_usd is None})
    if examples:
        out.append(f"Priced at example prices, not quotes: {names_and(examples)} (give --price or --hour-usd).")
    return out
