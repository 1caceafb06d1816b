"""`python -m bench report RUN` and `python -m bench compare A B`: argument setup and command functions, wired
into bench/cli.py by `add_report_args` / `add_compare_args` and `set_defaults(func=cmd_report | cmd_compare)`."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import BenchError

RUN_HELP = "a run folder, its results.json, a run id under the results folder, or 'latest'"


def resolve_run(text: str) -> Path:
    """The results.json that RUN names: a path, a run id under results_dir(), or 'latest' (newest run)."""
    from bench.paths import results_dir

    if text == "latest":
        return latest_run(results_dir())
    path = Path(text)
    if path.is_dir():
        path = path / "results.json"
    if path.is_file():
        return path
    by_id = results_dir() / text / "results.json"
    if by_id.is_file():
        return by_id
    raise BenchError(f"no results at {text!r}: expected {RUN_HELP} (looked in {results_dir()})")


def latest_run(root: Path) -> Path:
    """results.json of the most recently written run under `root`."""
    found = sorted(root.glob("*/results.json"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not found:
        raise BenchError(f"no runs under {root}: run `python -m bench run` first, or name a results file")
    return found[-1]


def add_report_args(p: argparse.ArgumentParser) -> None:
    from reports.render import ReportOptions

    d = ReportOptions()
    p.add_argument("run", nargs="?", default="latest", help=f"{RUN_HELP} (default: latest)")
    p.add_argument("--slo-p95-ms", type=float, default=d.slo_p95_ms, help=f"P95 latency target (default {d.slo_p95_ms:g})")
    p.add_argument("--cpu-hour-usd", type=float, default=d.cpu_hour_usd,
                   help=f"price of one CPU host hour for the cost column (default {d.cpu_hour_usd:.2f}, a 2-vCPU VM)")
    p.add_argument("--gpu-hour-usd", type=float, default=d.gpu_hour_usd,
                   help=f"price of one GPU host hour (default {d.gpu_hour_usd:.2f}, e.g. a T4 VM)")


def cmd_report(args: argparse.Namespace) -> int:
    from reports.render import ReportOptions, write_report

    # getattr: `bench all` calls this with its own arguments, which may not include the report options.
    d = ReportOptions()
    options = ReportOptions(*(getattr(args, k, getattr(d, k)) for k in ("slo_p95_ms", "cpu_hour_usd", "gpu_hour_usd")))
    html_path, md_path = write_report(resolve_run(args.run), options)
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
                   help="exit 1 when a significant change passes this limit, e.g. p95:+5%%, qps:-5%% (repeatable)")
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
