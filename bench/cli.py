"""`python -m bench <command>`: export, run, serve, all, sweep, tune, report, runs, compare, check.

This module parses and prints; the work happens in bench.pipeline (a run's stages) and the packages below it.
Defaults come from the config dataclasses, so they are stated once.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.argtypes import floats, ints, names
from bench.errors import BenchError, run_entry


def run_config(args: argparse.Namespace):
    from bench.harness import RunConfig
    from bench.runner import WorkerLimits

    return RunConfig(model=args.model, seed=args.seed, profile="quick" if args.quick else args.profile,
                     backends=args.backends, batches=args.batches, lengths=args.lengths,
                     service_shaped=args.service_shaped, threads=tuple(args.threads) if args.threads else (None,), max_time_s=args.duration,
                     min_time_s=args.min_time, processes=args.processes, run_id=args.run_id, resume=args.resume,
                     force=args.force, tdp_w=args.tdp_w, limits=WorkerLimits(args.cell_timeout, args.memory_limit_mb),
                     gpu=args.gpu, backend_options=backend_options(args.backend_option or ()))


def backend_options(pairs) -> dict:
    """--backend-option BACKEND:KEY=VALUE (repeatable) as {backend: {key: value}}."""
    out: dict = {}
    for text in pairs:
        backend, sep, rest = text.partition(":")
        key, eq, value = rest.partition("=")
        if not sep or not eq or not backend.strip() or not key.strip():
            raise BenchError(f"--backend-option expects BACKEND:KEY=VALUE, e.g. fake-fp32-cpu:sleep_s=0.011 "
                             f"(got {text!r})")
        out.setdefault(backend.strip(), {})[key.strip()] = value.strip()
    return out


def add_run_args(p: argparse.ArgumentParser) -> None:
    from bench.harness import PROFILES, RunConfig
    from bench.runner import WorkerLimits
    from exporters.cli import add_model_args
    from exporters.parity import DEFAULT_MAX_ACCURACY_DROP

    d, limits = RunConfig(), WorkerLimits()
    add_model_args(p)
    p.add_argument("--quick", action="store_true", help="short profile (about 2 minutes once models exist)")
    p.add_argument("--profile", default=d.profile, choices=tuple(PROFILES),
                   help="default (the decision's cells) | full (wide batch and length sweeps) | quick")
    p.add_argument("--backends", type=names, default=d.backends, help="comma list, e.g. ort-int8-cpu,torch-fp32-cpu")
    p.add_argument("--batches", type=ints, default=d.batches, help="comma list of batch sizes, e.g. 1,4,8")
    p.add_argument("--lengths", type=ints, default=d.lengths, help="comma list of token lengths, e.g. 16,64,256")
    p.add_argument("--service-shaped", type=ints, default=d.service_shaped,
                   help="comma list of max batches: also time review texts as the service sends them (its length "
                        "groups and shape buckets), to set the service against its engine on equal shapes")
    p.add_argument("--threads", type=ints, default=None, help="comma list of intra-op thread counts")
    p.add_argument("--backend-option", action="append", default=None, metavar="BACKEND:KEY=VALUE",
                   help="an option for one backend's cells, e.g. fake-fp32-cpu:sleep_s=0.011 (repeatable)")
    p.add_argument("--duration", type=float, default=d.max_time_s, help="max timed seconds per cell and process")
    p.add_argument("--min-time", type=float, default=d.min_time_s, help="min timed seconds per cell and process")
    p.add_argument("--processes", type=int, default=d.processes,
                   help="fresh worker processes per cell (default: the profile's, 3; quick 2)")
    p.add_argument("--run-id", default=d.run_id, help="name of the results/<run-id> folder (default: timestamp)")
    p.add_argument("--resume", default=d.resume,
                   help="continue an interrupted run with its own settings (its id, folder, results.json or latest)")
    p.add_argument("--force", action="store_true", help="resume on another host or with other settings anyway")
    p.add_argument("--tdp-w", type=float, default=d.tdp_w, help="CPU TDP for the power estimate (no RAPL)")
    p.add_argument("--hour-usd", default=None,
                   help="this host's price per hour, stored in the run for the report's cost and capacity plan")
    p.add_argument("--cell-timeout", type=float, default=limits.timeout_s, help="seconds before a worker counts as hung")
    p.add_argument("--memory-limit-mb", type=int, default=limits.memory_limit_mb,
                   help="address-space limit per CPU worker (GPU workers get none: CUDA reserves huge ranges)")
    p.add_argument("--gpu", type=int, default=d.gpu,
                   help="CUDA device of the GPU cells, numbered as CUDA does within CUDA_VISIBLE_DEVICES (default 0)")
    p.add_argument("--max-accuracy-drop", type=float, default=100 * DEFAULT_MAX_ACCURACY_DROP,
                   help="accuracy floor in points below FP32 on held-out reviews (default 1, as MLPerf keeps 99 %% of "
                        "FP32): variants below it are left out of the decision and the tune, and say so")


def max_drop(args: argparse.Namespace) -> float:
    """--max-accuracy-drop in points as a fraction (1 → 0.01); one error line for a value outside [0, 100)."""
    points = args.max_accuracy_drop
    if not 0 <= points < 100:
        raise BenchError(f"--max-accuracy-drop is in points below FP32, within [0, 100) (got {points:g})")
    return points / 100


def hour_usd(args: argparse.Namespace) -> float | None:
    """--hour-usd as a number > 0 (one error line before any work otherwise)."""
    from reports.hosts import positive

    value = getattr(args, "hour_usd", None)
    return None if value is None else positive("--hour-usd", value)


def measure_run(args: argparse.Namespace):
    from bench import pipeline
    from bench.summary import print_summary

    cfg, ctx = pipeline.prepare(run_config(args), hour_usd(args))
    ctx = pipeline.accuracy(ctx, max_drop(args))
    ctx = pipeline.measure(cfg, ctx)
    print_summary(ctx.result)
    print(f"results: {ctx.run_dir / 'results.json'}")
    return ctx


def cmd_run(args: argparse.Namespace) -> int:
    measure_run(args)
    return 0


def add_sweep_args(p: argparse.ArgumentParser, users: tuple | None = None, duration: float | None = None,
                   open_rates: tuple | None = None, search: tuple = (False, None), ramp: float | None = None) -> None:
    from loadtests.sweep import DEFAULT_VARIANTS, PRESETS, SweepConfig

    d = SweepConfig(variants=DEFAULT_VARIANTS)  # the host's GPU is probed only when a sweep runs
    p.add_argument("--variants", type=names, default=None,
                   help=f"service configs: {', '.join(PRESETS)} (default batch,nobatch, and gpu on a host with a "
                        f"usable NVIDIA GPU)")
    p.add_argument("--users", type=ints, default=users or d.users, help="closed-loop concurrency levels")
    p.add_argument("--open-rates", type=floats, default=d.open_rates if open_rates is None else open_rates,
                   help="open-loop offered rates (req/s), e.g. 5,10")
    p.add_argument("--lt-duration", type=float, default=duration or d.duration_s, help="seconds measured per window")
    p.add_argument("--ramp", type=float, default=d.ramp_s if ramp is None else ramp, help="ramp-up seconds before stats reset")
    p.add_argument("--service-processes", type=int, default=d.processes,
                   help=f"fresh service processes per configuration, one round each (default {d.processes}): QPS "
                        "and percentile CIs are across them")
    p.add_argument("--repeats", type=int, default=d.repeats,
                   help=f"interleaved windows per configuration, level and process (default {d.repeats})")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="Locust processes (closed loop: --processes; open loop: a master + workers sharing the rate)")
    p.add_argument("--workload", default=d.workload, help="corpus (≈80 chars) or zipf (repeats, cache study)")
    add_search_args(p, *search)


def add_search_args(p: argparse.ArgumentParser, on: bool = False, time_cap_s: float | None = None) -> None:
    from loadtests.slo_search import SearchConfig

    d = SearchConfig()
    p.add_argument("--slo-search", action=argparse.BooleanOptionalAction, default=on,
                   help=f"also search each service configuration's QPS at the SLO (open loop; {'on' if on else 'off'} "
                        f"by default)")
    p.add_argument("--slo-p95-ms", type=float, default=d.slo_ms,
                   help=f"P95 latency target of the search and the report (default {d.slo_ms:g})")
    cap = time_cap_s or d.time_cap_s
    p.add_argument("--search-time-cap", type=float, default=cap,
                   help=f"seconds the search may take per configuration (default {cap:g})")


def sweep_config(args: argparse.Namespace):
    from loadtests.sweep import PRESETS, SweepConfig, default_variant_names

    chosen = args.variants or default_variant_names()
    unknown = [v for v in chosen if v not in PRESETS]
    if unknown:
        raise BenchError(f"unknown service variant(s) {unknown} (choose from {', '.join(PRESETS)})")
    return SweepConfig(model=args.model, variants=tuple(PRESETS[v] for v in chosen), users=args.users,
                       open_rates=args.open_rates, duration_s=args.lt_duration, ramp_s=args.ramp,
                       workers=args.workers, workload=args.workload, seed=args.seed, repeats=args.repeats,
                       processes=args.service_processes,
                       slo_search=search_config(args))


def search_config(args: argparse.Namespace):
    """The SLO search's settings with --slo-search, else None (no search)."""
    from loadtests.slo_search import SearchConfig

    if not getattr(args, "slo_search", False):
        return None
    return SearchConfig(slo_ms=args.slo_p95_ms, time_cap_s=args.search_time_cap)


def quick_sweep(cfg):
    """The short sweep that matches the quick engine profile."""
    return replace(cfg, users=(1, 4, 8), duration_s=min(cfg.duration_s, 4.0), ramp_s=min(cfg.ramp_s, 1.0),
                   open_rates=())


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench import pipeline

    cfg = sweep_config(args)  # validated before any work starts
    ctx = pipeline.sweep(cfg, pipeline.sweep_context(args.model, args.seed, args.run, args.run_id))
    print_searches(ctx.result.slo_searches)
    print_loadtests(ctx.result.loadtests, ctx.run_dir / "results.json")
    return 0


def print_searches(searches: tuple) -> None:
    for s in searches:
        found = f"{s.qps:.2f} req/s {ci_text(s.qps_ci, '.2f')} at {s.rate_rps:.3g} offered, {s.requests} requests" \
            if s.qps is not None else f"none: {s.reason}"
        print(f"QPS at P{s.percentile:g} <= {s.slo_ms:g} ms, {s.config.label}: {found} ({len(s.probes)} probes, "
              f"{s.stopped})")


def ci_text(ci: tuple, spec: str = ".1f") -> str:
    return f"[{ci[0]:{spec}}–{ci[1]:{spec}}]" if ci else "[no CI]"


def print_loadtests(levels: tuple, path: Path) -> None:
    print(f"{'service config':<30} {'mode':<6} {'users':>5} {'rate':>6} {'QPS [95% CI]':>20} {'P95 ms [95% CI]':>22} "
          f"{'fail':>5} {'batch':>6} {'client CPU%':>11}")
    for lv in levels:
        if lv.status == "failed":
            print(f"{lv.config.label:<30} FAILED: {lv.reason}")
            continue
        print(f"{lv.config.label:<30} {lv.mode:<6} {lv.users or '':>5} {lv.offered_rps or '':>6} "
              f"{lv.qps or 0:7.2f} {ci_text(lv.qps_ci, '.2f'):>12} {lv.p95_ms or 0:8.1f} {ci_text(lv.p95_ci_ms):>13} "
              f"{lv.failures:>5} {lv.mean_batch_size or 0:6.2f} {lv.client_cpu_percent or 0:10.0f}"
              f"{'!' if lv.client_saturated else ''}")
    print(f"results: {path}")


def sweep_args(p: argparse.ArgumentParser) -> None:
    from exporters.cli import add_model_args

    add_model_args(p)
    add_sweep_args(p)
    add_run_target(p)


def add_run_target(p: argparse.ArgumentParser) -> None:
    """Where a stand-alone stage (sweep, tune) writes: an existing run, or a new one."""
    p.add_argument("--run", default=None, help="add to this run (id, folder or 'latest'); default: a new run")
    p.add_argument("--run-id", default=None, help="name of a new run folder")


def cmd_serve(args: argparse.Namespace) -> int:
    from bench.service.cli import config_from_args, serve_or_fail

    return serve_or_fail(config_from_args(args), args.log_level)


def all_args(p: argparse.ArgumentParser) -> None:
    add_run_args(p)
    # make bench's sweep: the article's levels (1 and 8 users) in 3 s windows after a 1 s ramp, each
    # configuration in 3 fresh service processes, interleaved; then each configuration's QPS at the SLO, searched
    # open loop (the figure the decision uses) in what the run's budget leaves (on a slow host: nothing, recorded
    # so). Wider grids, longer windows and searches: `bench sweep`.
    add_sweep_args(p, users=(1, 8), duration=3.0, ramp=1.0, open_rates=(), search=(True, 180.0))
    p.add_argument("--no-loadtest", action="store_true", help="skip the load-test sweep (and the tune)")
    p.add_argument("--no-tune", action="store_true", help="skip the short serving-config search (bench tune)")
    p.add_argument("--budget-s", type=float, default=570.0,
                   help="wall-clock budget of the whole run (make bench: under 10 min); the QPS-at-SLO searches get "
                        "what the other stages leave, and are recorded as not run when that is too little "
                        "(0 = no budget)")
    from bench.tune.cli import add_tune_args

    add_tune_args(p, short=True)


def cmd_all(args: argparse.Namespace) -> int:
    """What `make bench` runs: measure every backend, a short load-test sweep into the same run, the report."""
    from bench import pipeline
    from bench.tune.cli import print_tune, tune_config
    from reports.cli import report_options

    deadline = time.monotonic() + args.budget_s if args.budget_s > 0 else None
    sweep = sweep_config(args)  # validated before any work starts
    sweep = quick_sweep(sweep) if args.quick else sweep
    tuning = None if args.no_tune or args.no_loadtest or args.quick else tune_config(args)
    ctx = measure_run(args)
    if tuning is not None:
        from bench.artifacts import floor_exclusions

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


def with_tuned(sweep, record):
    """The sweep plus the tune's recommendation where the sweep does not already run it."""
    from bench.tune.search import tuned_variant

    extra = tuned_variant(record, sweep.variants)
    return replace(sweep, variants=sweep.variants + (extra,)) if extra else sweep


def cmd_check(args: argparse.Namespace) -> int:
    from bench import checks

    if args.which == "gpu":
        return checks.CHECKS["gpu"](args.model, args.gpu)
    return checks.CHECKS[args.which](args.model)


def check_args(p: argparse.ArgumentParser) -> None:
    from bench import checks
    from exporters.cli import add_model_args

    p.add_argument("which", choices=tuple(checks.CHECKS))
    add_model_args(p)
    p.add_argument("--gpu", type=int, default=0, help="check gpu: the CUDA device to check (default 0)")


def runs_args(p: argparse.ArgumentParser) -> None:
    from bench.store import TABLES

    p.add_argument("paths", nargs="*", type=Path,
                   help="run folders, results.json files, folders of runs or globs (default: the results folder)")
    p.add_argument("--host", default=None, help="runs whose host label, CPU or GPU model has every word of TEXT")
    p.add_argument("--backend", default=None, help="runs that measured this backend (and only its rows of a --table)")
    p.add_argument("--since", default=None, help="runs created on or after this date, YYYY-MM-DD (UTC)")
    p.add_argument("--table", choices=TABLES, default=None, help="print this table's rows instead of the run list")


def cmd_runs(args: argparse.Namespace) -> int:
    """List runs across folders and hosts from their stores (rebuilt from results.json where missing)."""
    from bench import paths, store

    since = store.since_time(args.since)  # a bad date fails before any run is read
    found = store.select(store.read_store(args.paths or [paths.results_dir()]), args.host, args.backend, since)
    shown = found[args.table] if args.table else store.listing(found["runs"])
    print(store.printable(shown).to_string(index=False, na_rep="-") if not shown.empty else
          f"no {args.table or 'runs'} match")
    return 0


def commands() -> tuple:
    """(name, help, add-arguments, handler) of every subcommand."""
    from bench.service.cli import add_arguments as serve_args
    from bench.tune.cli import cmd_tune, tune_args
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
    from bench.quiet import quiet_libraries

    quiet_libraries()
    return run_entry(lambda: args.func(args))

