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
                       parity_max_length=args.parity_max_length, threads=args.threads)
    out_dir, manifest = export_all(cfg)
    print_export_summary(out_dir, manifest)
    return 0


def print_export_summary(out_dir: Path, manifest: dict) -> None:
    synthetic = " (synthetic weights: labels meaningless)" if manifest["synthetic"] else ""
    print(f"model: {manifest['source']['source']}{synthetic}")
    for name, v in manifest["variants"].items():
        par = v.get("parity", {})
        size = f"{v['size_bytes'] / 1e6:7.1f} MB" if v.get("file") else "  (runtime)"
        verdict = {True: "parity ok", False: "PARITY FAILED", None: f"parity not measured"}[par.get("passed")]
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
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="export FP32 / fused FP32 / INT8 / FP16 ONNX with a parity gate")
    add_model_args(p)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: artifacts/onnx/<model>)")
    p.add_argument("--parity-n", type=int, default=256, help="corpus texts for the parity gate (default 256)")
    p.add_argument("--parity-max-length", type=int, default=48, help="tokens per parity text (default 48)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("run", help="measure every backend (each cell in a fresh worker) and write results.json")
    add_run_args(p)
    p.set_defaults(func=cmd_run)
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
