"""The report: `build_context(run, options)` gathers plain dicts; templates turn them into HTML and Markdown.

Rendering is pure (results in, text out); only `write_report` touches the disk. Every number comes from the
results file; what was not measured says so, with the reason, instead of showing a number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.errors import ConfigError
from bench.paths import atomic_write_text
from bench.results import RunResult, load_run
from reports import decision, overview, plots, sections, service

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class ReportOptions:
    """What the report needs that the run did not measure: the latency target and the price of a device hour."""

    slo_p95_ms: float = 300.0
    cpu_hour_usd: float = 0.10  # a 2-vCPU cloud VM
    gpu_hour_usd: float = 0.53  # e.g. a T4 VM

    def __post_init__(self) -> None:
        for name in ("slo_p95_ms", "cpu_hour_usd", "gpu_hour_usd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ConfigError(f"ReportOptions.{name} must be a finite number > 0, got {value!r}")


def build_context(run: RunResult, options: ReportOptions = ReportOptions()) -> dict:
    opts = asdict(options)
    cands = decision.candidates(run, opts)
    return {
        "title": f"structbench report: {run.run_id}",
        "header": sections.header(run),
        "options": opts,
        "decision": {"table": decision.decision_table(cands, opts),
                     "recommendation": decision.recommendation(run, cands, opts)},
        "article": [
            {"id": "s31", "title": "3.1 Load time and latency (响应延迟对比)",
             "tables": [sections.load_table(run), sections.latency_table(run), sections.spread_table(run)]},
            {"id": "s32", "title": "3.2 Resources (资源占用情况)", "tables": [sections.resources_table(run)]},
            {"id": "s33", "title": "3.3 Throughput by concurrency (吞吐能力 QPS)",
             "tables": [service.qps_table(run), service.open_loop_table(run), service.timing_table(run)]},
            {"id": "s34", "title": "3.4 Multi-dimension summary (多维度对比总结表)",
             "tables": [overview.summary_table(run)]},
        ],
        "plots": plots.all_plots(run, options.slo_p95_ms),
        "parity": sections.parity_table(run),
        "environment": sections.environment(run, opts),
    }


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
