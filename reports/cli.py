"""`python -m bench report RUN` and `python -m bench compare A B`: argument setup and command functions, wired
into bench/cli.py by `add_report_args` / `add_compare_args` and `set_defaults(func=cmd_report | cmd_compare)`."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.paths import RUN_FORMS as RUN_HELP
from bench.paths import resolve_run


def add_report_args(p: argparse.ArgumentParser) -> None:
    from reports.render import ReportOptions

    d = ReportOptions()
    p.add_argument("run", nargs="?", default="latest", help=f"{RUN_HELP} (default: latest)")
    p.add_argument("--slo-p95-ms", type=float, default=d.slo_p95_ms,
                   help=f"P95 latency target (default {d.slo_p95_ms:g})")
    p.add_argument("--cpu-hour-usd", type=float, default=d.cpu_hour_usd,
                   help=f"price of one CPU host hour for the cost column (default {d.cpu_hour_usd:.2f}, a 2-vCPU VM)")
    p.add_argument("--gpu-hour-usd", type=float, default=d.gpu_hour_usd,
                   help=f"price of one GPU host hour (default {d.gpu_hour_usd:.2f}, e.g. a T4 VM)")


def report_options(args: argparse.Namespace):
    """ReportOptions from the report flags; `bench all` has none of them, so the defaults apply there."""
    from reports.render import ReportOptions

    d = ReportOptions()
    return ReportOptions(*(getattr(args, k, getattr(d, k)) for k in ("slo_p95_ms", "cpu_hour_usd", "gpu_hour_usd")))


def cmd_report(args: argparse.Namespace) -> int:
    from reports.render import write_report

    html_path, md_path = write_report(resolve_run(args.run), report_options(args))
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
    from bench.paths import atomic_write_text
    from bench.results import load_run
    from reports.compare import compare_runs, render_comparison_html, render_comparison_text

    cmp = compare_runs(load_run(resolve_run(args.a)), load_run(resolve_run(args.b)), force=args.force,
                       thresholds=args.fail_on)
    print(render_comparison_text(cmp), end="")
    if args.html:
        atomic_write_text(args.html, render_comparison_html(cmp))
        print(f"html: {args.html}")
    return cmp.exit_code
