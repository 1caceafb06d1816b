"""One report over runs from several machines: every table gains a host column, plots colour by host, the
decision ranks configurations across hosts at each host's price, and the capacity plan (with --traffic) says
which machine to buy for which traffic. Pure like reports.render; only `write_merged_report` touches the disk."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.core.paths import atomic_write_text
from bench.core.results import RunResult, load_run, stored_version
from reports import decision, sections, service
from reports.common import column, label, na, table
from reports.hostplots import latency_cdf_by_host, qps_by_host
from reports.hosts import SOURCES, HostRun, check_mergeable, host_runs
from reports.render import (
    ARTICLE,
    ReportOptions,
    decision_context,
    host_options,
    options_dict,
    plan_context,
    render_context,
)


def tagged(host: HostRun, cand: decision.Candidate) -> decision.Candidate:
    """A candidate named uniquely across hosts ('int8 batching @ AMD EPYC 2c')."""
    return replace(cand, name=f"{cand.name} @ {host.label}", host=host.label)


def host_table(pairs: list[tuple[str, dict | None]]) -> dict | None:
    """Per-host versions of one table as one table with a Host column; a host without rows says why."""
    pairs = [(h, t) for h, t in pairs if t is not None]
    if not pairs:
        return None
    first = pairs[0][1]
    cols, rows = [column("Host", False), *first["columns"]], []
    for host, t in pairs:
        if t["columns"] != first["columns"]:
            rows.append([label(host), na("its columns differ: see that run's own report", span=len(cols) - 1)])
        elif t["empty"] or not t["rows"]:
            rows.append([label(host), na(t["empty"] or "no rows", span=len(cols) - 1)])
        else:
            rows += [[label(host), *row] for row in t["rows"]]
    notes = list(dict.fromkeys(n for _, t in pairs for n in t["notes"]))
    return table(first["id"], first["title"], cols, rows, notes)


def article(hosts: list[HostRun]) -> list[dict]:
    """Sections 3.1–3.4 with a host column; QPS columns cover every host's configurations."""
    names = list(dict.fromkeys(n for h in hosts for n in service.service_configs(h.run) if service.closed(h.run, n)))
    out = []
    for sid, title, ref, fns in ARTICLE:
        tables = [host_table([(h.label, each_run(fn, h.run, names)) for h in hosts]) for fn in fns]
        out.append({"id": sid, "title": title, "ref": ref, "tables": [t for t in tables if t]})
    return out


def each_run(fn, run: RunResult, names: list[str]):
    return fn(run, names) if fn is service.qps_table else fn(run)


def header(hosts: list[HostRun], forced: list[str]) -> dict:
    first = sections.header(hosts[0].run)
    lines = [{"label": f"Host {i}", "value": f"{h.label} · run {h.run.run_id} · {price_text(h)}"}
             for i, h in enumerate(hosts, 1)]
    lines += [{"label": "Merged with --force", "value": reason} for reason in forced]
    issues = [{**i, "what": [f"{h.label}: {w}" for w in i["what"]]} for h in hosts for i in sections.issues(h.run)]
    return {**first, "run_id": " + ".join(h.run.run_id for h in hosts),
            "created": ", ".join(h.run.created for h in hosts),
            "git_commit": ", ".join(dict.fromkeys(str(sections.header(h.run)["git_commit"]) for h in hosts)),
            "synthetic": any(sections.header(h.run)["synthetic"] for h in hosts), "host": lines, "issues": issues,
            "test_data": "; ".join(f"{h.label}: {h.test_data}" for h in hosts if h.test_data) or None}


def price_text(h: HostRun) -> str:
    return f"${h.hour_usd:.2f}/h ({SOURCES[h.price_source]})" if h.hour_usd else "example prices per device"


def recommendation(hosts: list[HostRun], cands: list, opts: dict) -> tuple[list[str], list[str]]:
    """The single-run sentences over every host's candidates (advice, then what was not measured, which adds the
    hosts never load-tested)."""
    levels = tuple(lv for h in hosts for lv in h.run.loadtests)
    merged = replace(hosts[0].run, loadtests=levels)
    advice, gaps = decision.advice(merged, cands, opts), decision.not_measured(merged, cands)
    if levels:
        gaps += [f"{h.label}: engine-only, not load-tested (its QPS is engine throughput, no HTTP)."
                 for h in hosts if not h.run.loadtests]
    return [[s.replace("on this host", "in these runs") for s in part] for part in (advice, gaps)]


def environment(hosts: list[HostRun], opts: dict) -> list[dict]:
    return [{"label": f"{h.label}: {e['label']}", "value": e["value"]} for h in hosts
            for e in sections.environment(h.run, host_options(h, opts))]


def build_multi_context(hosts: list[HostRun], options: ReportOptions, forced: list[str] = ()) -> dict:
    opts = options_dict(options)
    cands = [tagged(h, c) for h in hosts for c in decision.candidates(h.run, host_options(h, opts))]
    table_opts = {**opts, "price_note": "; ".join(f"{h.label} {price_text(h)}" for h in hosts)}
    plan = plan_context(hosts, cands, options)
    return {
        "title": f"structbench report: {len(hosts)} runs ({', '.join(h.label for h in hosts)})",
        "header": header(hosts, list(forced)),
        "options": opts,
        "decision": decision_context(*recommendation(hosts, cands, table_opts), cands, table_opts, plan),
        "article": article(hosts),
        "plots": [latency_cdf_by_host(hosts), qps_by_host(hosts)],
        "plan": plan,
        "parity": host_table([(h.label, sections.parity_table(h.run)) for h in hosts]),
        "environment": environment(hosts, opts),
    }


def load_hosts(paths: list[Path], options: ReportOptions) -> tuple[list[HostRun], list[str]]:
    """Read, check (one line, unless forced) and label the runs; prices are matched to hosts here."""
    runs = [load_run(p) for p in paths]
    forced = check_mergeable(runs, [stored_version(p) for p in paths], options.force)
    return host_runs(runs, options.prices), forced


def write_merged_report(paths: list[Path], options: ReportOptions, out_dir: Path) -> tuple[Path, Path, str]:
    """report.html and summary.md of several runs in `out_dir`; returns their paths and the text summary."""
    hosts, forced = load_hosts(paths, options)
    context = build_multi_context(hosts, options, forced)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / "report.html", out_dir / "summary.md"
    atomic_write_text(html_path, render_context(context, "report.html.j2"))
    atomic_write_text(md_path, render_context(context, "summary.md.j2"))
    return html_path, md_path, text_summary(context)


def text_summary(context: dict) -> str:
    """The compare-like summary for the terminal: hosts, the decision's sentences and rows, the plan."""
    lines = [context["title"], *[f"  {h['label']}: {h['value']}" for h in context["header"]["host"]], "decision:"]
    lines += [f"  - {s}" for s in context["decision"]["recommendation"]]
    lines += table_lines(context["decision"]["table"])
    plan = context["plan"]
    if plan:
        lines += ["capacity plan:", *[f"  - {s}" for s in plan["sentences"]], *table_lines(plan["table"])]
    return "\n".join(lines) + "\n"


def table_lines(t: dict) -> list[str]:
    head = "  " + " | ".join(c["label"] for c in t["columns"])
    return [head, *["  " + " | ".join(cell["text"] for cell in row) for row in t["rows"]]]
