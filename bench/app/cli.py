"""`python -m bench <command>`: export, run, serve, all, sweep, tune, report, runs, compare, check.

This module runs the commands: their flags and configs are in bench.app.args, what they print in bench.app.console,
the work in bench.app.pipeline (a run's stages) and the packages below it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from bench.app.args import (
    add_run_args,
    all_args,
    backend_options,
    check_args,
    hour_usd,
    max_drop,
    run_config,
    runs_args,
    sweep_args,
    sweep_config,
    tune_config,
)
from bench.app.console import print_loadtests, print_searches, print_tune
from bench.core.errors import ConfigError, raise_on_terminate, run_entry


def measure_run(args: argparse.Namespace):
    from bench.app import pipeline
    from bench.core.summary import print_summary

    cfg, ctx = pipeline.prepare(run_config(args), hour_usd(args))
    ctx = pipeline.accuracy(ctx, max_drop(args))
    ctx = pipeline.measure(cfg, ctx)
    print_summary(ctx.result)
    print(f"results: {ctx.run_dir / 'results.json'}")
    return ctx


def cmd_run(args: argparse.Namespace) -> int:
    measure_run(args)
    return 0


def quick_sweep(cfg):
    """The short sweep that matches the quick engine profile."""
    return replace(cfg, users=(1, 4, 8), duration_s=min(cfg.duration_s, 4.0), ramp_s=min(cfg.ramp_s, 1.0),
                   open_rates=())


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench.app import pipeline

    cfg = sweep_config(args)  # validated before any work starts
    ctx = pipeline.sweep(cfg, pipeline.sweep_context(args.model, args.seed, args.run, args.run_id))
    print_searches(ctx.result.slo_searches)
    print_loadtests(ctx.result.loadtests, ctx.run_dir / "results.json")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bench.service.cli import config_from_args, serve_or_fail

    return serve_or_fail(config_from_args(args), args.log_level)


def cmd_all(args: argparse.Namespace) -> int:
    """What `make bench` runs: measure every backend, a short load-test sweep into the same run, the report."""
    from bench.app import pipeline
    from reports.cli import report_options

    deadline = time.monotonic() + args.budget_s if args.budget_s > 0 else None
    sweep = with_backend_options(sweep_config(args), backend_options(args.backend_option or ()))
    sweep = quick_sweep(sweep) if args.quick else sweep  # validated before any work starts
    tuning = None if args.no_tune or args.no_loadtest or args.quick else tune_config(args)
    ctx = measure_run(args)
    if tuning is not None:
        from bench.model.artifacts import floor_exclusions

        tuning = replace(tuning, exclude=tuple(floor_exclusions(ctx.result.model).items()))
        ctx = pipeline.tune(tuning, ctx)
        print_tune(ctx.result.tune)
        sweep = with_tuned(sweep, ctx.result.tune)
    if not args.no_loadtest:
        ctx = pipeline.sweep(sweep, ctx, deadline)
        print_searches(ctx.result.slo_searches)
        print_loadtests(ctx.result.loadtests, ctx.run_dir / "results.json")
    from reports.cli import print_decision

    options = report_options(args)
    html, md = pipeline.report(ctx, options)
    print_decision(ctx.run_dir, options, html, md)
    return 0


def with_backend_options(sweep, options: dict):
    """--backend-option applies to a backend's services as to its cells (e.g. the fake's sleep_s)."""
    return replace(sweep, variants=tuple(
        replace(v, config=replace(v.config, backend_options=v.config.backend_options + tuple(
            options.get(v.config.backend, {}).items()))) for v in sweep.variants))


def with_tuned(sweep, record):
    """The sweep plus the tune's recommendation where the sweep does not already run it."""
    from bench.app.tune.search import tuned_variant

    extra = tuned_variant(record, sweep.variants)
    return replace(sweep, variants=sweep.variants + (extra,)) if extra else sweep


def cmd_check(args: argparse.Namespace) -> int:
    from bench.app import checks
    from bench.app.args import target_variant

    target = target_variant(args)  # validated before any work starts
    if args.which == "gpu":
        return checks.CHECKS["gpu"](args.model, args.gpu)
    if args.which == "soak":
        return checks.CHECKS["soak"](args.model, args.minutes)
    if args.which == "overload":
        return checks.CHECKS["overload"](args.model, target)
    if target is not None:
        raise ConfigError(f"check {args.which} measures structbench's own service: --target is for check overload "
                          "(and bench sweep)")
    return checks.CHECKS[args.which](args.model)


def cmd_runs(args: argparse.Namespace) -> int:
    """List runs across folders and hosts from their stores (rebuilt from results.json where missing)."""
    from bench.core import paths, store

    since = store.since_time(args.since)  # a bad date fails before any run is read
    found = store.select(store.read_store(args.paths or [paths.results_dir()]), args.host, args.backend, since)
    shown = found[args.table] if args.table else store.listing(found["runs"])
    print(store.printable(shown).to_string(index=False, na_rep="-") if not shown.empty else
          f"no {args.table or 'runs'} match")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """The serving-config search as a stage of its own, into an existing run or a new one."""
    from bench.app import pipeline

    cfg = tune_config(args)  # validated before any work starts
    ctx = pipeline.tune(cfg, pipeline.sweep_context(args.model, args.seed, args.run, args.run_id))
    print_tune(ctx.result.tune)
    print(f"results: {ctx.run_dir / 'results.json'}")
    return 0


def commands() -> tuple:
    """(name, help, add-arguments, handler) of every subcommand."""
    from bench.app.args import tune_args
    from bench.service.cli import add_arguments as serve_args
    from exporters.cli import add_export_args, cmd_export
    from reports.cli import add_compare_args, add_report_args, cmd_compare, cmd_report

    return (
        ("export", "export FP32 / fused FP32 / INT8 / FP16 ONNX with a parity gate", add_export_args, cmd_export),
        ("run", "measure every backend (each cell in fresh workers) and write results.json", add_run_args, cmd_run),
        ("serve", "run the inference service (FastAPI + uvicorn, 127.0.0.1 by default)", serve_args, cmd_serve),
        ("all", "what make bench runs: run + short load-test sweep + report", all_args, cmd_all),
        ("sweep", "load-test the service with Locust across concurrency levels", sweep_args, cmd_sweep),
        ("tune", "find the best way to serve here: replicas × threads × max batch, verified as a service",
         tune_args, cmd_tune),
        ("report", "render report.html and summary.md for a run (default: latest)", add_report_args, cmd_report),
        ("runs", "list runs across folders and hosts, or print one of their tables (results store)", runs_args,
         cmd_runs),
        ("compare", "compare two runs cell by cell; --fail-on p95:+5%% for CI gates", add_compare_args, cmd_compare),
        ("check", "benchmark commands: measured ratios against targets, exit 1 when one is missed", check_args,
         cmd_check),
    )


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Every subcommand is listed, but only the chosen one's flags are set up: setting up a command's flags may
    import its stack (report: matplotlib), which another command, e.g. `check gpu` on a GPU host with only torch,
    onnxruntime and nvidia-ml-py, must not need."""
    words = sys.argv[1:] if argv is None else argv
    chosen = next((w for w in words if not w.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="structbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_args, handler in commands():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:
            add_args(p)
        p.set_defaults(func=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    from bench.core.quiet import quiet_libraries


    quiet_libraries()
    if args.command != "serve":  # the service drains on SIGTERM itself (uvicorn); every other command unwinds
        raise_on_terminate()
    return run_entry(lambda: args.func(with_tokenizer(args)))


def with_tokenizer(args):
    """--tokenizer DIR folded into the model spec (onnx:PATH#tokenizer=DIR), so every layer below sees one spec."""
    if getattr(args, "tokenizer", None):
        from bench.model.sources import onnx_spec_with_tokenizer

        args.model = onnx_spec_with_tokenizer(args.model, args.tokenizer)
    return args
