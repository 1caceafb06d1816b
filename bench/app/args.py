"""The command line's flags and the configs they make, shared by every command (bench.app.cli) and the stages
they set up; defaults come from the config dataclasses, so they are stated once. Setting up a command's flags
may import its stack, so each helper imports what it needs when called."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bench.core.argtypes import floats, ints, names
from bench.core.errors import BenchError, ConfigError

if TYPE_CHECKING:
    from bench.app.tune.search import TuneConfig


def add_run_args(p: argparse.ArgumentParser) -> None:
    from bench.engine.harness import PROFILES, RunConfig
    from bench.engine.runner import WorkerLimits
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
    p.add_argument("--cell-timeout", type=float, default=limits.timeout_s,
                   help="seconds before a worker counts as hung")
    p.add_argument("--memory-limit-mb", type=int, default=limits.memory_limit_mb,
                   help="address-space limit per CPU worker (GPU workers get none: CUDA reserves huge ranges)")
    p.add_argument("--gpu", type=int, default=d.gpu,
                   help="CUDA device of the GPU cells, numbered as CUDA does within CUDA_VISIBLE_DEVICES (default 0)")
    p.add_argument("--eval-data", default=None, metavar="FILE",
                   help="your labelled data (CSV or JSONL: text,label; for an embedding model text1,text2,score): "
                        "accuracy per precision is judged on it, and the decision's accuracy floor with it")
    p.add_argument("--max-accuracy-drop", type=float, default=100 * DEFAULT_MAX_ACCURACY_DROP,
                   help="accuracy floor in points below FP32 on held-out reviews (default 1, as MLPerf keeps 99 %% of "
                        "FP32): variants below it are left out of the decision and the tune, and say so")


def run_config(args: argparse.Namespace):
    from bench.engine.harness import RunConfig
    from bench.engine.runner import WorkerLimits

    return RunConfig(model=args.model, seed=args.seed, profile="quick" if args.quick else args.profile,
                     backends=args.backends, batches=args.batches, lengths=args.lengths,
                     service_shaped=args.service_shaped, threads=tuple(args.threads) if args.threads else (None,),
                     max_time_s=args.duration, min_time_s=args.min_time, processes=args.processes, run_id=args.run_id,
                     resume=args.resume, force=args.force, tdp_w=args.tdp_w,
                     limits=WorkerLimits(args.cell_timeout, args.memory_limit_mb),
                     gpu=args.gpu, backend_options=backend_options(args.backend_option or ()),
                     eval_data=args.eval_data)


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


def add_sweep_args(p: argparse.ArgumentParser, users: tuple | None = None, duration: float | None = None,
                   open_rates: tuple | None = None, search: tuple = (False, None), ramp: float | None = None) -> None:
    from loadtests.windows import DEFAULT_VARIANTS, PRESETS, SweepConfig

    d = SweepConfig(variants=DEFAULT_VARIANTS)  # the host's GPU is probed only when a sweep runs
    p.add_argument("--variants", type=names, default=None,
                   help=f"service configs: {', '.join(PRESETS)} (default batch,nobatch, and gpu on a host with a "
                        f"usable NVIDIA GPU)")
    p.add_argument("--users", type=ints, default=users or d.users, help="closed-loop concurrency levels")
    p.add_argument("--open-rates", type=floats, default=d.open_rates if open_rates is None else open_rates,
                   help="open-loop offered rates (req/s), e.g. 5,10")
    p.add_argument("--lt-duration", type=float, default=duration or d.duration_s, help="seconds measured per window")
    p.add_argument("--ramp", type=float, default=d.ramp_s if ramp is None else ramp,
                   help="ramp-up seconds before stats reset")
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
    from loadtests.windows import SearchConfig

    d = SearchConfig()
    p.add_argument("--slo-search", action=argparse.BooleanOptionalAction, default=on,
                   help=f"also search each service configuration's QPS at the SLO (open loop; {'on' if on else 'off'} "
                        f"by default)")
    p.add_argument("--slo-p95-ms", type=float, default=d.slo_ms,
                   help=f"P95 latency target of the search and the report (default {d.slo_ms:g})")
    cap = time_cap_s or d.time_cap_s
    p.add_argument("--search-time-cap", type=float, default=cap,
                   help=f"seconds the search may take per configuration (default {cap:g})")


def add_target_args(p: argparse.ArgumentParser) -> None:
    """Load another server instead of ours (loadtests/targets.py, docs/targets.md)."""
    from loadtests.protocols import PROTOCOLS
    from loadtests.targets import PEERS

    p.add_argument("--target", default=None,
                   help=f"load this server instead of structbench's service: a URL (somebody else's server, here or "
                        f"elsewhere), or a peer started here: {', '.join(PEERS)} (`make peers`)")
    p.add_argument("--protocol", default=None, choices=PROTOCOLS,
                   help="how to speak to --target (default: structbench for a URL, the peer's own for a peer)")
    p.add_argument("--model-name", default=None, help="the server's name for the model (kserve-v2, OpenAI)")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="a request header for --target (repeatable); never written to results")
    p.add_argument("--protocol-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a protocol option (http-json: path, body, answer, method, ready; kserve-v2: text_input)")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="seconds a request may take before it counts as failed (default 30)")


def target_variant(args: argparse.Namespace):
    """The ServiceVariant of --target (None without one): a URL spoken to with --protocol, or a peer."""
    from loadtests.protocols import ProtocolSpec, parse_headers, parse_options
    from loadtests.service_proc import ServiceVariant
    from loadtests.targets import PEERS, TargetSpec, peer_spec
    from loadtests.windows import model_task

    if not getattr(args, "target", None):
        for flag in ("protocol", "model_name", "header", "protocol_option"):
            if getattr(args, flag, None):
                raise ConfigError(f"--{flag.replace('_', '-')} needs --target")
        return None
    task = model_task(args.model)
    headers = tuple(parse_headers(args.header).items())
    if args.target in PEERS:
        if args.protocol not in (None, PEERS[args.target]):
            raise ConfigError(f"the {args.target} peer speaks {PEERS[args.target]}, not {args.protocol}")
        from bench.model.sources import materialize

        spec = peer_spec(args.target, task, str(materialize(args.model)))
        return ServiceVariant.of_target(f"{args.target} (peer, {spec.protocol.name})", spec)
    protocol = ProtocolSpec(args.protocol or "structbench", task, args.model_name, model_dir_for(args),
                            parse_options(args.protocol_option))
    spec = TargetSpec("url", args.target, protocol, headers)
    return ServiceVariant.of_target(f"{spec.public_url} ({protocol.name})", spec)


def model_dir_for(args: argparse.Namespace) -> str | None:
    """The model folder where the protocol tokenises client-side (kserve-v2 tensors), else None."""
    from loadtests.protocols import parse_options

    if args.protocol != "kserve-v2" or "text_input" in dict(parse_options(args.protocol_option)):
        return None
    from bench.model.sources import materialize

    return str(materialize(args.model))


def sweep_config(args: argparse.Namespace):
    from loadtests.sweep import default_variant_names
    from loadtests.windows import PRESETS, SweepConfig

    target = target_variant(args)
    if target is not None and args.variants:
        raise ConfigError("--variants configures structbench's service; with --target there is only that server")
    chosen = args.variants or default_variant_names()
    unknown = [v for v in chosen if v not in PRESETS]
    if unknown:
        raise BenchError(f"unknown service variant(s) {unknown} (choose from {', '.join(PRESETS)})")
    variants = (target,) if target is not None else tuple(PRESETS[v] for v in chosen)
    return SweepConfig(model=args.model, variants=variants, users=args.users,
                       open_rates=args.open_rates, duration_s=args.lt_duration, ramp_s=args.ramp,
                       workers=args.workers, workload=args.workload, seed=args.seed, repeats=args.repeats,
                       processes=args.service_processes, request_timeout_s=getattr(args, "request_timeout", 30.0),
                       slo_search=search_config(args))


def search_config(args: argparse.Namespace):
    """The SLO search's settings with --slo-search, else None (no search)."""
    from loadtests.windows import SearchConfig

    if not getattr(args, "slo_search", False):
        return None
    return SearchConfig(slo_ms=args.slo_p95_ms, time_cap_s=args.search_time_cap)


def sweep_args(p: argparse.ArgumentParser) -> None:
    from exporters.cli import add_model_args

    add_model_args(p)
    add_sweep_args(p)
    add_target_args(p)
    add_run_target(p)


def add_run_target(p: argparse.ArgumentParser) -> None:
    """Where a stand-alone stage (sweep, tune) writes: an existing run, or a new one."""
    p.add_argument("--run", default=None, help="add to this run (id, folder or 'latest'); default: a new run")
    p.add_argument("--run-id", default=None, help="name of a new run folder")


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
    add_tune_args(p, short=True)


def check_args(p: argparse.ArgumentParser) -> None:
    from bench.app import checks
    from exporters.cli import add_model_args

    p.add_argument("which", choices=tuple(checks.CHECKS))
    add_model_args(p)
    p.add_argument("--gpu", type=int, default=0, help="check gpu: the CUDA device to check (default 0)")
    p.add_argument("--minutes", type=int, default=30, help="check soak: how long, one load window a minute "
                                                            "(default 30)")
    add_target_args(p)  # check overload: another server


def runs_args(p: argparse.ArgumentParser) -> None:
    from bench.core.store import TABLES

    p.add_argument("paths", nargs="*", type=Path,
                   help="run folders, results.json files, folders of runs or globs (default: the results folder)")
    p.add_argument("--host", default=None, help="runs whose host label, CPU or GPU model has every word of TEXT")
    p.add_argument("--backend", default=None, help="runs that measured this backend (and only its rows of a --table)")
    p.add_argument("--since", default=None, help="runs created on or after this date, YYYY-MM-DD (UTC)")
    p.add_argument("--table", choices=TABLES, default=None, help="print this table's rows instead of the run list")


def add_tune_args(p: argparse.ArgumentParser, short: bool = False) -> None:
    """Flags of the tune; `short` = the defaults `bench all` (make bench) uses (a shorter search)."""
    from bench.app.tune.search import TuneConfig

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
    # make bench's short tune ranks offline only: its recommendation is load-tested in the run's sweep (1 and 8
    # users, fresh processes, beside the default configurations), which costs no service start of its own
    p.add_argument("--tune-verify", action=argparse.BooleanOptionalAction, default=not short,
                   help="verify the best configurations as services at saturation beside the default service "
                        f"(default {'off in bench all: the sweep serves the recommendation' if short else 'on'})")
    p.add_argument("--tune-time-cap", type=float, default=120.0 if short else d.time_cap_s,
                   help="seconds the offline search may take; configurations not reached are left out, recorded")


def tune_config(args: argparse.Namespace) -> TuneConfig:
    from bench.app.tune.search import TuneConfig

    return TuneConfig(model=args.model, backend=args.tune_backend, batches=args.tune_batches, seconds=args.tune_seconds,
                      top=args.tune_top, ties=args.tune_ties, users=args.tune_users, duration_s=args.tune_duration,
                      repeats=args.tune_repeats, time_cap_s=args.tune_time_cap, seed=args.seed,
                      oversubscribed=args.tune_oversubscribed, verify=args.tune_verify)


def tune_args(p: argparse.ArgumentParser) -> None:
    from exporters.cli import add_model_args

    add_model_args(p)
    add_tune_args(p)
    add_run_target(p)
