"""The report: `build_context(run, options)` gathers plain dicts; templates turn them into HTML and Markdown.

Rendering is pure (results in, text out); only `write_report` touches the disk. Every number comes from the
results file; what was not measured says so, with the reason, instead of showing a number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.core.errors import ConfigError
from bench.core.paths import atomic_write_text
from bench.core.results import RunResult, load_run
from reports import decision, overview, plots, searched, sections, servers, service, tune
from reports.hostplots import break_even
from reports.hosts import SOURCES, HostRun, example_cpu_hour, example_gpu_hour, host_runs, positive
from reports.plan import PlanInputs, plan_row
from reports.plansection import plan_sentences, plan_table

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class ReportOptions:
    """What the report needs that the run did not measure: the latency target, prices (example prices per
    device hour unless a host has its own, see reports.hosts) and, for a capacity plan, the traffic."""

    slo_p95_ms: float = 300.0
    cpu_hour_usd: float | None = None  # None: the example, $0.10 per 2 vCPUs of each host (reports.hosts)
    gpu_hour_usd: float | None = None  # None: the example price of each run's GPU model (reports.hosts)
    traffic_rps: float | None = None  # mean req/s to plan for; None: no capacity plan
    peak_factor: float = 1.0  # peak / mean traffic
    target_utilisation: float = 1.0  # share of an instance's capacity to plan on
    prices: tuple = ()  # (host key, USD per hour) pairs from --price
    force: bool = False  # merge runs that measured different things

    def __post_init__(self) -> None:
        for name in ("slo_p95_ms", "cpu_hour_usd", "gpu_hour_usd", "peak_factor", "target_utilisation"):
            value = getattr(self, name)
            if value is None and name in ("cpu_hour_usd", "gpu_hour_usd"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ConfigError(f"ReportOptions.{name} must be a finite number > 0, got {value!r}")
        if self.traffic_rps is not None:
            positive("--traffic", self.traffic_rps)
        if self.target_utilisation > 1:
            raise ConfigError(f"--target-utilisation must be within (0, 1], got {self.target_utilisation!r}")
        for key, usd in self.prices:
            positive(f"--price {key!r}", usd)

    @property
    def plan(self) -> PlanInputs | None:
        if self.traffic_rps is None:
            return None
        return PlanInputs(self.traffic_rps, self.peak_factor, self.target_utilisation)


def host_options(host: HostRun, opts: dict) -> dict:
    """The report options for one host's candidates: its own price where it has one, else the example CPU price
    sized to its vCPUs and the example price of its GPU model (unless --cpu-hour-usd / --gpu-hour-usd named one)."""
    if opts["gpu_hour_usd"] is None:
        usd, source = example_gpu_hour(host.run)
        opts = {**opts, "gpu_hour_usd": usd, "example_gpu": source}
    if host.hour_usd is None:
        example = opts["cpu_hour_usd"] is None
        return {**opts, "cpu_hour_usd": example_cpu_hour(host.run), "example_cpu": True} if example else opts
    return {**opts, "hour_usd": host.hour_usd,
            "price_note": f"${host.hour_usd:.2f}/h for {host.label} ({SOURCES[host.price_source]})"}


def build_context(run: RunResult, options: ReportOptions = ReportOptions()) -> dict:
    host = host_runs([run], options.prices)[0]
    opts = host_options(host, options_dict(options))
    cands = decision.candidates(run, opts)
    plan = plan_context([host], cands, options)
    return {
        "title": f"structbench report: {run.run_id}",
        "header": sections.header(run),
        "options": opts,
        "decision": decision_context(decision.advice(run, cands, opts), decision.not_measured(run, cands), cands,
                                     opts, plan),
        "article": article(run),
        "plots": plots.all_plots(run, options.slo_p95_ms) + tune.tune_plots(run),
        "plan": plan,
        "parity": sections.parity_table(run),
        "accuracy": sections.accuracy_table(run),
        "environment": sections.environment(run, opts),
    }


def decision_context(advice: list[str], gaps: list[str], cands: list, opts: dict, plan: dict | None) -> dict:
    """The top of the report: the answer sentence and its conditions, the narrow table that decides, the other
    sentences, what was not measured; the full decision table for details."""
    return {"answer": advice[0], "more": advice[1:], "gaps": gaps, "conditions": decision.conditions(opts),
            "plan_answer": plan["sentences"][:2] if plan else [], "glance": decision.glance_table(cands, opts),
            "table": decision.decision_table(cands, opts), "recommendation": advice + gaps}


# The sections that regenerate the seed article's tables (docs/article.md): id, title, the article's section
# number and heading (a reference note under the title), and the tables each holds (functions of one run).
ARTICLE = (
    ("s31", "Load time and latency", "3.1 响应延迟对比", (sections.load_table, sections.latency_table,
                                                        sections.spread_table)),
    ("s32", "Resources", "3.2 资源占用情况", (sections.resources_table,)),
    ("s33", "Throughput by concurrency", "3.3 吞吐能力 QPS", (service.qps_table, searched.search_table,
                                                          servers.servers_table,
                                                          service.open_loop_table, service.timing_table,
                                                          service.feeding_table, tune.tune_table)),
    ("s34", "Multi-dimension summary", "3.4 多维度对比总结表", (overview.summary_table,)),
)


def article(run: RunResult) -> list[dict]:
    """The article's sections; a table function returns None where its table does not apply to this run."""
    return [{"id": sid, "title": title, "ref": ref, "tables": [t for t in (fn(run) for fn in fns) if t]}
            for sid, title, ref, fns in ARTICLE]


def plan_context(hosts: list[HostRun], cands: list, options: ReportOptions) -> dict | None:
    """The capacity plan section (None without --traffic): table, sentences and the break-even plot."""
    plan = options.plan
    if plan is None:
        return None
    by_host = {h.label: h for h in hosts}
    rows = [plan_row(by_host[c.host] if c.host else hosts[0], c) for c in cands]
    return {"table": plan_table(rows, plan), "sentences": plan_sentences(rows, plan, hosts),
            "plot": break_even(rows, plan, [h.label for h in hosts]), "rows": [plain(asdict(r)) for r in rows]}


def plain(value):
    """Tuples as lists, as JSON has them: the context is plain data."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return [plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def options_dict(options: ReportOptions) -> dict:
    return plain(asdict(options))


def render_html(run: RunResult, options: ReportOptions = ReportOptions()) -> str:
    return render_context(build_context(run, options), "report.html.j2")


def render_markdown(run: RunResult, options: ReportOptions = ReportOptions()) -> str:
    """summary.md: the same tables and decision as the HTML, without the plots."""
    return render_context(build_context(run, options), "summary.md.j2")


def render_context(context: dict, template: str) -> str:
    return environment().get_template(template).render(**context)


def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(["html.j2"]), trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["md"] = md_cell
    return env


def md_cell(value) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, line breaks flattened."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def decision_lines(run_dir: Path | str, options: ReportOptions = ReportOptions(), most: int = 4) -> list[str]:
    """The decision in a few terminal lines: the report's recommendation sentences (the pick with its CI and
    conditions first), at most `most` of them; the rest is in the report."""
    run = load_run(run_dir)
    host = host_runs([run], options.prices)[0]
    opts = host_options(host, options_dict(options))
    cands = decision.candidates(run, opts)
    advice = decision.advice(run, cands, opts)
    sentences = [advice[0], f"Conditions: {decision.conditions(opts)}", *advice[1:],
                 *decision.not_measured(run, cands)]
    more = len(sentences) - most
    return sentences[:most] + ([f"(+{more} more in the report)"] if more > 0 else [])


def write_report(run_dir: Path | str, options: ReportOptions = ReportOptions()) -> tuple[Path, Path]:
    """Write report.html and summary.md next to results.json (atomically); `run_dir` may be the file itself."""
    path = Path(run_dir)
    folder = path.parent if path.is_file() else path
    run = load_run(path)
    context = build_context(run, options)  # built once: the plots are the slow part
    html_path, md_path = folder / "report.html", folder / "summary.md"
    atomic_write_text(html_path, render_context(context, "report.html.j2"))
    atomic_write_text(md_path, render_context(context, "summary.md.j2"))
    return html_path, md_path
