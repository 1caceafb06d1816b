"""`python -m bench tune` and the short tune of `bench all`: flags, the config they make, the printed result."""

from __future__ import annotations

import argparse

from bench.tune.search import TuneConfig


def add_tune_args(p: argparse.ArgumentParser, short: bool = False) -> None:
    """Flags of the tune; `short` = the defaults `bench all` (make bench) uses (a shorter search)."""
    from bench.argtypes import ints

    d = TuneConfig()
    p.add_argument("--tune-backend", default=d.backend,
                   help="backends to search: one, a comma list, or auto (default: ORT INT8 and the OpenVINO engines "
                        "this CPU's instruction sets can win with)")
    # make bench's short tune tries the service's max batch only: the sweep's no-batching service covers batch 1
    p.add_argument("--tune-batches", type=ints, default=(8,) if short else d.batches,
                   help="max batch sizes to try, e.g. 1,4,8,16")
    p.add_argument("--tune-seconds", type=float, default=3.0 if short else d.seconds,
                   help="offline seconds per configuration (at least 6 of its slowest calls)")
    p.add_argument("--tune-top", type=int, default=d.top, help="best offline configurations verified as a service")
    p.add_argument("--tune-ties", type=int, default=d.ties,
                   help="also verify up to this many more whose offline interval overlaps the best's")
    p.add_argument("--tune-users", type=int, default=d.users, help="closed-loop users of the service runs")
    p.add_argument("--tune-duration", type=float, default=3.0 if short else d.duration_s,
                   help="seconds per service window (each verified service gets one in each of --tune-repeats "
                        "fresh processes)")
    p.add_argument("--tune-repeats", type=int, default=d.repeats,
                   help=f"fresh service processes per verified service, interleaved (default {d.repeats}: the "
                        "tie between services is judged across them)")
    p.add_argument("--tune-oversubscribed", action=argparse.BooleanOptionalAction,
                   default=False if short else d.oversubscribed,
                   help="also time an oversubscribed point offline (shown, never recommended; off in make bench)")
    p.add_argument("--tune-time-cap", type=float, default=120.0 if short else d.time_cap_s,
                   help="seconds the offline search may take; configurations not reached are left out, recorded")


def tune_config(args: argparse.Namespace) -> TuneConfig:
    return TuneConfig(model=args.model, backend=args.tune_backend, batches=args.tune_batches, seconds=args.tune_seconds,
                      top=args.tune_top, ties=args.tune_ties, users=args.tune_users, duration_s=args.tune_duration,
                      repeats=args.tune_repeats, time_cap_s=args.tune_time_cap, seed=args.seed,
                      oversubscribed=args.tune_oversubscribed)


def tune_args(p: argparse.ArgumentParser) -> None:
    from bench.cli import add_run_target
    from exporters.cli import add_model_args

    add_model_args(p)
    add_tune_args(p)
    add_run_target(p)


def cmd_tune(args: argparse.Namespace) -> int:
    from bench import pipeline

    cfg = tune_config(args)  # validated before any work starts
    ctx = pipeline.tune(cfg, pipeline.sweep_context(args.model, args.seed, args.run, args.run_id))
    print_tune(ctx.result.tune)
    print(f"results: {ctx.run_dir / 'results.json'}")
    return 0


def ci(values: tuple, digits: int = 1) -> str:
    return f"[{values[0]:.{digits}f}–{values[1]:.{digits}f}]" if len(values) == 2 else "[no CI]"


def print_tune(record) -> None:
    width = max([24] + [len(c.label) for c in record.candidates])
    print(f"{'backend replicas×threads batch':<{width}} {'offline items/s [95% CI]':>26} {'P95 ms':>8} {'RSS MB':>8} "
          f"{'service QPS [95% CI]':>24}")
    for c in record.candidates:
        if c.status != "ok":
            print(f"{c.label:<{width}} FAILED: {c.reason}")
            continue
        service = f"{c.service_qps:.1f} {ci(c.service_qps_ci)}" if c.service_qps is not None else "not verified"
        note = "  (oversubscribed: R×T > cores)" if c.oversubscribed else ""
        print(f"{c.label:<{width}} {c.items_per_s:>10.1f} {ci(c.items_ci):>15} {c.p95_ms or 0:8.1f} "
              f"{c.rss_mb or 0:8.0f} {service:>24}{note}")
    for name, why in record.left_out:
        print(f"{name}: not searched, {why}")
    if record.default_qps is not None:
        print(f"{record.default_label}: {record.default_qps:.1f} req/s {ci(record.default_qps_ci)}")
    tie = f" (tie with {', '.join(record.tied_with)}: overlapping QPS intervals)" if record.tied_with else ""
    print(f"recommended: {record.recommended or 'none'}{tie}")
    if record.command:
        print(f"start it:    {record.command}")
