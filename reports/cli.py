"""`python -m bench report RUN` and `python -m bench compare A B`: argument setup and command functions, wired
into bench/app/cli.py by `add_report_args` / `add_compare_args` and `set_defaults(func=cmd_report | cmd_compare)`."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.core.paths import RUN_FORMS as RUN_HELP
from bench.core.paths import resolve_run


def add_report_args(p: argparse.ArgumentParser) -> None:
    from reports.render import ReportOptions

    d = ReportOptions()
    p.add_argument("runs", nargs="*", default=["latest"], metavar="run",
                   help=f"{RUN_HELP} (default: latest); two or more: one report over several hosts")
    p.add_argument("--slo-p95-ms", type=float, default=d.slo_p95_ms,
                   help=f"P95 latency target (default {d.slo_p95_ms:g})")
    p.add_argument("--cpu-hour-usd", type=float, default=d.cpu_hour_usd,
                   help="price of one CPU host hour for the cost column (default: an example, $0.10 per 2 vCPUs "
                        "of the host)")
    p.add_argument("--gpu-hour-usd", type=float, default=d.gpu_hour_usd,
                   help="price of one GPU hour (default: an example list price of the run's GPU model, e.g. "
                        "T4 $0.53, L4 $0.80, A100 $4.10, H100 $12.29; see docs/reports.md)")
    p.add_argument("--price", action="append", default=[], metavar="HOST=USD",
                   help="price per hour of a host, matched by the words of its label or its run id, e.g. "
                        "\"AMD EPYC 2c=0.10\" (repeatable; overrides the run's --hour-usd)")
    p.add_argument("--traffic", default=None, metavar="REQ_PER_S",
                   help="add a capacity plan for this mean traffic (requests per second)")
    p.add_argument("--peak-factor", default=d.peak_factor, help="peak / mean traffic for the plan (default 1)")
    p.add_argument("--target-utilisation", default=d.target_utilisation,
                   help="share of each instance's capacity to plan on, within (0, 1] (default 1)")
    p.add_argument("--force", action="store_true", help="merge runs of different models, workloads, SLOs or schemas")
    p.add_argument("--out", type=Path, default=None,
                   help="folder of a merged report (default: results/merged-<run ids>)")


def report_options(args: argparse.Namespace):
    """ReportOptions from the report flags, every number checked before any run is read; `bench all` has none of
    them, so the defaults apply there."""
    from reports.hosts import parse_price, positive
    from reports.render import ReportOptions

    d = ReportOptions()
    traffic = getattr(args, "traffic", None)
    return ReportOptions(
        *(getattr(args, k, getattr(d, k)) for k in ("slo_p95_ms", "cpu_hour_usd", "gpu_hour_usd")),
        traffic_rps=None if traffic is None else positive("--traffic", traffic),
        peak_factor=positive("--peak-factor", getattr(args, "peak_factor", d.peak_factor)),
        target_utilisation=positive("--target-utilisation", getattr(args, "target_utilisation",
                                                                     d.target_utilisation)),
        prices=tuple(parse_price(p) for p in getattr(args, "price", None) or ()),
        force=bool(getattr(args, "force", False)))


def cmd_report(args: argparse.Namespace) -> int:
    from reports.render import write_report

    options = report_options(args)  # a bad number is one error line before any run is read
    runs = args.runs or ["latest"]
    if len(runs) > 1:
        return merged_report([resolve_run(r) for r in runs], options, args.out)
    html_path, md_path = write_report(resolve_run(runs[0]), options)
    print_decision(resolve_run(runs[0]), options, html_path, md_path)
    return 0


def print_decision(run_dir: Path, options, html_path: Path, md_path: Path) -> None:
    """The run's answer in a few lines, then where the report is: the last lines a user sees."""
    from reports.render import decision_lines

    print(f"summary: {md_path}")
    print("decision:")
    for line in decision_lines(run_dir, options):
        print(f"  {line}")
    print(f"report:  {html_path}")


def merged_report(paths: list[Path], options, out: Path | None) -> int:
    from bench.core.paths import results_dir
    from reports.multi import write_merged_report

    folder = out or results_dir() / ("merged-" + "+".join(p.name for p in paths))
    html_path, md_path, summary = write_merged_report(paths, options, folder)
    print(summary, end="")
    print(f"report:  {html_path}")
    print(f"summary: {md_path}")
    return 0


def threshold_arg(text: str):
    from reports.compare import parse_threshold

    try:
        return parse_threshold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help=f"baseline run: {RUN_HELP}")
    p.add_argument("b", help="run to compare against the baseline (same forms)")
    p.add_argument("--force", action="store_true", help="compare runs from different hosts anyway")
    p.add_argument("--fail-on", action="append", default=[], type=threshold_arg, metavar="METRIC:±N%",
                   help="exit 1 when a significant change of an engine cell or a load-test level passes this "
                        "limit, e.g. p95:+5%%, qps:-5%% (repeatable)")
    p.add_argument("--html", type=Path, default=None, help="also write the comparison as HTML to this file")


def cmd_compare(args: argparse.Namespace) -> int:
    """Prints the comparison; returns 1 when a --fail-on limit is significantly exceeded, else 0."""
    from bench.core.paths import atomic_write_text
    from bench.core.results import load_run
    from reports.compare import compare_runs, render_comparison_html, render_comparison_text

    cmp = compare_runs(load_run(resolve_run(args.a)), load_run(resolve_run(args.b)), force=args.force,
                       thresholds=args.fail_on)
    print(render_comparison_text(cmp), end="")
    if args.html:
        atomic_write_text(args.html, render_comparison_html(cmp))
        print(f"html: {args.html}")
    return cmp.exit_code
