"""`python -m bench <command>`: export, run, serve, sweep, report, compare."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import BenchError


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="twin",
                   help="twin | twin:tiny | modelscope[:ID] | hf:ID | local directory (default: twin, offline)")
    p.add_argument("--seed", type=int, default=0, help="seed of the twin's weights and of workloads")


def cmd_export(args: argparse.Namespace) -> int:
    from exporters.pipeline import ExportConfig, export_all

    cfg = ExportConfig(model=args.model, seed=args.seed, out_dir=args.out, parity_n=args.parity_n,
                       parity_max_length=args.parity_max_length, threads=args.threads, force=args.force)
    out_dir, manifest = export_all(cfg)
    print_export_summary(out_dir, manifest)
    return 0


def print_export_summary(out_dir: Path, manifest: dict) -> None:
    synthetic = " (synthetic weights: labels meaningless)" if manifest["synthetic"] else ""
    print(f"model: {manifest['source']['source']}{synthetic}")
    for name, v in manifest["variants"].items():
        par = v.get("parity", {})
        size = f"{v['size_bytes'] / 1e6:7.1f} MB" if v.get("file") else "  (runtime)"
        verdict = {True: "parity ok", False: "PARITY FAILED", None: "parity not measured"}[par.get("passed")]
        figures = (f"agree {par['label_agreement']:.3f}  max|Δ| {par['max_abs_diff']:.2e}"
                   if "label_agreement" in par else par.get("not_measured", ""))
        print(f"  {name:<11} {size}  {verdict:<20} {figures}")
    print(f"fused ops: {manifest['variants']['fp32-fused'].get('fused_ops')}")
    print(f"models:   {out_dir}")
    print(f"manifest: {out_dir / 'manifest.json'}")


def ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def cmd_run(args: argparse.Namespace) -> int:
    measure_run(args)
    return 0


def measure_run(args: argparse.Namespace) -> Path:
    from bench.harness import RunConfig, run
    from bench.runner import WorkerLimits
    from bench.summary import print_summary

    threads = tuple(args.threads) if args.threads else (None,)
    cfg = RunConfig(model=args.model, seed=args.seed, profile="quick" if args.quick else args.profile,
                    backends=args.backends, batches=args.batches, lengths=args.lengths, threads=threads,
                    max_time_s=args.duration, min_time_s=args.min_time, run_id=args.run_id, resume=args.resume,
                    tdp_w=args.tdp_w, limits=WorkerLimits(args.cell_timeout, args.memory_limit_mb))
    run_dir, result = run(cfg)
    print_summary(result)
    print(f"results: {run_dir / 'results.json'}")
    return run_dir


def add_run_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--quick", action="store_true", help="short profile (about 2 minutes once models exist)")
    p.add_argument("--profile", default="default", help="default | quick")
    p.add_argument("--backends", type=names, default=None, help="comma list, e.g. ort-int8-cpu,torch-fp32-cpu")
    p.add_argument("--batches", type=ints, default=None, help="comma list of batch sizes, e.g. 1,4,8")
    p.add_argument("--lengths", type=ints, default=None, help="comma list of token lengths, e.g. 16,64,256")
    p.add_argument("--threads", type=ints, default=None, help="comma list of intra-op thread counts")
    p.add_argument("--duration", type=float, default=None, help="max timed seconds per cell")
    p.add_argument("--min-time", type=float, default=None, help="min timed seconds per cell")
    p.add_argument("--run-id", default=None, help="name of the results/<run-id> folder (default: timestamp)")
    p.add_argument("--resume", default=None, help="continue an interrupted run (its id or folder)")
    p.add_argument("--tdp-w", type=float, default=None, help="CPU TDP for the power estimate (no RAPL)")
    p.add_argument("--cell-timeout", type=float, default=180.0, help="seconds before a worker counts as hung")
    p.add_argument("--memory-limit-mb", type=int, default=None, help="address-space limit per worker")


def cmd_check(args: argparse.Namespace) -> int:
    from bench import checks

    {"int8": checks.check_int8, "trust": checks.check_trust, "service": checks.check_service,
     "overload": checks.check_overload}[args.which](args.model)
    return 0


def sweep_config(args: argparse.Namespace, model: str):
    from loadtests.sweep import PRESETS, SweepConfig

    unknown = [v for v in args.variants if v not in PRESETS]
    if unknown:
        raise BenchError(f"unknown service variant(s) {unknown} (choose from {', '.join(PRESETS)})")
    variants = tuple(PRESETS[v] for v in args.variants)
    return SweepConfig(model=model, variants=variants, users=args.users, open_rates=args.open_rates,
                       duration_s=args.lt_duration, ramp_s=args.ramp, workers=args.workers, workload=args.workload,
                       seed=args.seed)


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench.harness import RunConfig, start_run
    from loadtests.sweep import sweep_into_run

    cfg = sweep_config(args, args.model)  # validated before any work starts
    if args.run:
        run_dir = resolve_run(args.run)
    else:
        run_dir = start_run(RunConfig(model=args.model, seed=args.seed, run_id=args.run_id))[0]
    path = sweep_into_run(cfg, run_dir)
    print_loadtests(path)
    return 0


def resolve_run(spec: str) -> Path:
    """The run folder that SPEC names (a folder, a results.json, a run id or 'latest')."""
    from reports.cli import resolve_run as resolve_results

    return resolve_results(spec).parent


def print_loadtests(path: Path) -> None:
    from bench.results import load_run

    run = load_run(path)
    print(f"{'service config':<30} {'mode':<6} {'users':>5} {'rate':>6} {'QPS':>7} {'P50 ms':>8} {'P95 ms':>8} "
          f"{'P99 ms':>8} {'fail':>5} {'batch':>6} {'client CPU%':>11}")
    for r in run.loadtests:
        if r.get("status") == "failed":
            print(f"{r['config']['label']:<30} FAILED: {r['reason']}")
            continue
        print(f"{r['config']['label']:<30} {r['mode']:<6} {r['users'] or '':>5} {r['offered_rps'] or '':>6} "
              f"{r['qps'] or 0:7.2f} {r['p50_ms'] or 0:8.1f} {r['p95_ms'] or 0:8.1f} {r['p99_ms'] or 0:8.1f} "
              f"{r['failures']:>5} {r.get('mean_batch_size') or 0:6.2f} {r['client_cpu_percent']:10.0f}"
              f"{'!' if r.get('client_saturated') else ''}")
    print(f"results: {path}")


def add_sweep_args(p: argparse.ArgumentParser, prefix_defaults: dict | None = None) -> None:
    d = {"users": (1, 2, 4, 8, 16), "duration": 10.0, "open_rates": (), **(prefix_defaults or {})}
    p.add_argument("--variants", type=names, default=("batch", "nobatch"),
                   help="service configs: batch, nobatch, cache, fp32, torch (default batch,nobatch)")
    p.add_argument("--users", type=ints, default=d["users"], help="closed-loop concurrency levels")
    p.add_argument("--open-rates", type=floats, default=d["open_rates"], help="open-loop offered rates (req/s), e.g. 5,10")
    p.add_argument("--lt-duration", type=float, default=d["duration"], help="seconds measured per level")
    p.add_argument("--ramp", type=float, default=2.0, help="ramp-up seconds before stats reset")
    p.add_argument("--workers", type=int, default=1, help="Locust processes (distributed load, --processes)")
    p.add_argument("--workload", default="corpus", help="corpus (≈80 chars) or zipf (repeats, cache study)")


def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from bench.service.app import serve
    from bench.service.cli import config_from_args

    return serve(config_from_args(args), log_level=args.log_level)


def cmd_all(args: argparse.Namespace) -> int:
    """What `make bench` runs: measure every backend, a short load-test sweep into the same run, the report."""
    from loadtests.sweep import sweep_into_run

    if args.quick:  # a short sweep to match the short profile
        args.users, args.lt_duration, args.ramp = (1, 4, 8), min(args.lt_duration, 4.0), min(args.ramp, 1.0)
        args.open_rates = ()
    sweep = sweep_config(args, args.model)  # validated before any work starts
    run_dir = measure_run(args)
    if not args.no_loadtest:
        print_loadtests(sweep_into_run(sweep, run_dir))
    return report_run(run_dir, args)


def report_run(run_dir: Path, args: argparse.Namespace) -> int:
    try:
        from reports.cli import cmd_report
    except ImportError:
        print("report: reports package not available", file=sys.stderr)
        return 1
    args.run = str(run_dir)
    return cmd_report(args)


def export_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: artifacts/onnx/<model>)")
    p.add_argument("--parity-n", type=int, default=256, help="corpus texts for the parity gate (default 256)")
    p.add_argument("--parity-max-length", type=int, default=48, help="tokens per parity text (default 48)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--force", action="store_true", help="rebuild even if the artifacts are up to date")


def all_args(p: argparse.ArgumentParser) -> None:
    add_run_args(p)
    add_sweep_args(p, {"users": (1, 2, 4, 8, 16), "duration": 8.0, "open_rates": (10.0,)})
    p.add_argument("--no-loadtest", action="store_true", help="skip the load-test sweep")


def sweep_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_sweep_args(p)
    p.add_argument("--run", default=None, help="add to this run (id, folder or 'latest'); default: a new run")
    p.add_argument("--run-id", default=None, help="name of a new run folder")


def check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("which", choices=("int8", "trust", "service", "overload"))
    add_model_args(p)


def commands() -> tuple:
    """(name, help, add-arguments, handler) of every subcommand."""
    from bench.service.cli import add_arguments as serve_args
    from reports.cli import add_compare_args, add_report_args, cmd_compare, cmd_report

    return (
        ("export", "export FP32 / fused FP32 / INT8 / FP16 ONNX with a parity gate", export_args, cmd_export),
        ("run", "measure every backend (each cell in a fresh worker) and write results.json", add_run_args, cmd_run),
        ("serve", "run the inference service (FastAPI + uvicorn, 127.0.0.1 by default)", serve_args, cmd_serve),
        ("all", "what make bench runs: run + short load-test sweep + report", all_args, cmd_all),
        ("sweep", "load-test the service with Locust across concurrency levels", sweep_args, cmd_sweep),
        ("report", "render report.html and summary.md for a run (default: latest)", add_report_args, cmd_report),
        ("compare", "compare two runs cell by cell; --fail-on p95:+5%% for CI gates", add_compare_args, cmd_compare),
        ("check", "benchmark commands that print measured ratios against targets", check_args, cmd_check),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_args, handler in commands():
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bench.quiet import quiet_libraries

    quiet_libraries()
    try:
        return args.func(args)
    except (BenchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
