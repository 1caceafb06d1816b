"""`python -m bench check tune`: the tuned service against the engine's offline best and the default service.

Targets (issue: serving-config search): the tuned service's saturated QPS ≥ 0.97 × the best offline engine
configuration's throughput (the service loses at most 3 % to HTTP, JSON, tokenising and queueing), and ≥ the
default service's QPS. All in one run, the services' windows interleaved.

The tune's own figures choose the configurations; the ratios are judged on fresh figures (the maximum of five
offline figures with wide intervals is biased up by their noise: the winner's curse, which read the ratio low
before this design). Those come in rounds, each with fresh processes, every process idle while another measures:
the offline contenders, then each service for one window (their order alternating), then the contenders again, so
each service window sits between two offline figures. One offline figure before and one after every service window
(A B A once) left a drift of the host's speed within minutes that a ratio of the services' mean to those two
could not cancel. Fresh processes each round because a process has a speed of its own (the same work differs
across processes, two service processes more): with every process started once, a re-run did not land in one
run's interval. The ratios are taken per round and their t interval is across the rounds' processes. (Measured:
docs/measurements.md.)

"The best offline configuration" is the best in those rounds, not the tune's point-best alone: every configuration
whose tune interval overlaps the best's (at most CONTENDERS of them) and the tuned service's own are measured in
each round, and the highest mean is the denominator. Measuring the tune's point-best alone once passed the service
against a configuration that had tied another in the tune and then read well below it in the rounds: not the best
in that run (docs/measurements.md). The highest of a few means is biased up by their noise, which makes the target
harder, not easier.

Then where the cores went: CPU per text of the engine offline and of the service's replicas, its front and Locust
(in its timed windows), their shares of the cores, and the ratio those predict. On a 2-core host the front's and
Locust's shares come out of the replicas' cores while the replicas spend what the engine does per text: a ceiling
that no change to the engine's configuration can lift (measured: docs/measurements.md).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench.app.checks.common import prepare_model, save, verdict
from bench.app.console import print_tune
from bench.app.tune.search import DEFAULT_LABEL, OfflineSetup, TuneConfig, offline_setup, run_tune, verify_sweep
from bench.core import paths
from bench.core.fmt import interval
from bench.core.stats import overlap, window_rate_ci
from bench.measure.host import cpu_seconds

SERVICE_VS_ENGINE = 0.97
CONTENDERS = 3  # tied offline configurations measured in the rounds, at most: each adds 10 s to every round


def measured_offline(record) -> list:
    """The candidates with an offline figure, best first."""
    ok = [c for c in record.candidates if c.status == "ok" and c.items_per_s is not None]
    return sorted(ok, key=lambda c: -c.items_per_s)


def best_offline(record):
    ok = measured_offline(record)
    return ok[0] if ok else None


def offline_contenders(record, tuned=None, limit: int = CONTENDERS) -> list:
    """The offline configurations the rounds measure: the tune's best and those whose interval overlaps its own
    (indistinguishable there), best first, at most `limit` of them; then the tuned service's own configuration."""
    ok = measured_offline(record)
    if not ok:
        return []
    best = ok[0]
    chosen = [c for c in ok if c is best or overlap(tuple(c.items_ci), tuple(best.items_ci))][:limit]
    own = next((c for c in ok if tuned is not None and c.label == tuned.label), None)
    return chosen + ([own] if own is not None and own not in chosen else [])


def rate_of(rates: list[float]) -> tuple[float, tuple]:
    """The mean of some figures (offline rates, ratios per round) and its t interval across them."""
    mean, low, high = window_rate_ci(rates, 1.0)
    return mean, (low, high)


@dataclass
class CpuUse:
    """CPU seconds spent over some stretch of work, and the texts computed in it: per text, where the cores went."""

    texts: float = 0.0
    engine_s: float = 0.0  # the model replicas (offline: the engine processes)
    front_s: float = 0.0  # the service's front process: HTTP, JSON, tokenising, the batcher threads
    client_s: float = 0.0  # the load generator (Locust) within its timed windows
    client_requests: float = 0.0  # the requests it completed in them

    def add(self, other: "CpuUse") -> "CpuUse":
        return CpuUse(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def ms_per_text(self) -> dict:
        """Milliseconds of CPU per text computed (the load generator's per request: one text each here)."""
        def per(seconds: float, n: float) -> float | None:
            return round(1000 * seconds / n, 3) if n else None

        return {"engine": per(self.engine_s, self.texts), "front": per(self.front_s, self.texts),
                "client": per(self.client_s, self.client_requests)}


def offline_run(members: list, calls: list, seconds: float) -> tuple[float, CpuUse]:
    """One offline figure and the engine processes' CPU for it. The CPU covers every call of the run, those still
    in flight at its end too (up to two a replica: at batch 8 a fair share of a run), so it is charged to all their
    texts, not to the rate × seconds the figure counts."""
    from bench.app.tune.offline import figures, timed

    pids = [m.pid for m in members]
    before = cpu_seconds(pids)
    records = timed(members, calls, seconds)
    engine_s = cpu_seconds(pids) - before
    return figures(records, seconds)["items_per_s"], CpuUse(texts=sum(r[2] for r in records), engine_s=engine_s)


def service_window(service, run) -> tuple:
    """`run()` (one Locust window) and the CPU the front and its replica processes spent over it, with the texts the
    service computed then (the window's /metrics deltas); Locust's own CPU within its timed window, as the
    locustfile measured it, with the requests of that window. A model in the front process counts as front."""
    import psutil

    front = service.proc.pid
    replicas = [p.pid for p in psutil.Process(front).children(recursive=True)]
    before = (cpu_seconds([front]), cpu_seconds(replicas))
    window = run()
    front_s, replicas_s = cpu_seconds([front]) - before[0], cpu_seconds(replicas) - before[1]
    requests = float(window.row.get("Request Count") or 0)  # failures included
    return window, CpuUse(window.server["texts"], replicas_s, front_s, float(window.client.get("window_cpu_s") or 0.0),
                          requests)


@dataclass
class Rounds:
    """What the rounds measured: each offline contender's figures per round, each service's window per round
    (by label), and the CPU each spent (CpuUse by service label, and by contender under "offline")."""

    offline: dict
    windows: dict
    cpu: dict

    @classmethod
    def empty(cls, contenders: list, sweep) -> "Rounds":
        labels = [c.label for c in contenders]
        return cls({label: [] for label in labels}, {v.label: [] for v in sweep.variants},
                   {"offline": {label: CpuUse() for label in labels}, **{v.label: CpuUse() for v in sweep.variants}})


@dataclass(frozen=True)
class FreshFigures:
    """What the fresh rounds measured: the best offline configuration (`engine`) and every contender's offline
    rates per round (two a round, around the service windows), the tuned and default services pooled across the
    rounds' processes, the ratios' inputs per round, and the CPU each side used."""

    engine: str
    offline_all: dict  # label -> [[rate before, rate after] per round]
    engine_rate: tuple  # (mean items/s, t interval) of the engine's per-round means
    own: str | None  # the tuned configuration's own label where it ran offline too
    service: object  # LoadLevel of the tuned service (or of the default when it won)
    default: object  # LoadLevel of the default service
    rounds: dict  # {"offline": {label: [mean per round]}, "tuned": [QPS per round], "default": [QPS per round]}
    users: int
    cores: int
    default_won: bool  # the tune recommended the default service: tuned and default are one service
    cpu: dict  # {"offline": CpuUse, "service": CpuUse}


def fresh_figures(cfg: TuneConfig, record, out_dir: Path) -> "FreshFigures":
    """`cfg.repeats` rounds on the configurations the tune chose, each with fresh processes (see the module's
    docstring); the ratios per round, so their intervals are across processes."""
    from loadtests.levels import pooled_level

    tuned = next((c for c in record.candidates if c.label == record.recommended), None)
    contenders = offline_contenders(record, tuned)
    sweep = verify_sweep(cfg, [tuned] if tuned else [])
    names = ",".join(dict.fromkeys(c.backend or record.backend for c in contenders))  # older records: the record's
    setup = offline_setup(replace(cfg, batches=tuple({c.max_batch for c in contenders}), backend=names), record.cores)
    out_dir.mkdir(parents=True, exist_ok=True)
    found = Rounds.empty(contenders, sweep)
    for r in range(cfg.repeats):
        one_round(r, cfg, sweep, replace(setup, grid=contenders), found, out_dir)
    variants = {v.label: v for v in sweep.variants}
    tuned_label = tuned.service_name if tuned else DEFAULT_LABEL
    per_round = {label: [pooled_level(variants[label], sweep, [w]).qps for w in ws]
                 for label, ws in found.windows.items()}
    means = {label: [sum(f) / len(f) for f in rounds] for label, rounds in found.offline.items()}
    engine = max(means, key=lambda label: sum(means[label]))
    return FreshFigures(engine=engine, offline_all=found.offline, engine_rate=rate_of(means[engine]),
                        own=tuned.label if tuned and tuned.label in means else None,
                        service=pooled_level(variants[tuned_label], sweep, found.windows[tuned_label]),
                        default=pooled_level(variants[DEFAULT_LABEL], sweep, found.windows[DEFAULT_LABEL]),
                        rounds={"offline": {label: [round(m, 3) for m in ms] for label, ms in means.items()},
                                "tuned": per_round[tuned_label], "default": per_round[DEFAULT_LABEL]},
                        users=sweep.users[0], cores=record.cores, default_won=tuned is None,
                        cpu={"offline": found.cpu["offline"][engine],
                             "service": found.cpu.get(tuned_label, CpuUse())})


def one_round(r: int, cfg: TuneConfig, sweep, offline: OfflineSetup, found: Rounds, out_dir: Path) -> None:
    """Round `r`: every service and the offline contenders (`offline.grid`) started afresh, measured
    (measure_round), stopped."""
    from bench.service.replicas import start_replicas
    from loadtests.sweep import start_services

    configs, contenders, by_batch = offline.configs, offline.grid, offline.calls
    running, failed = start_services(sweep.model, sweep.variants)
    engines: dict = {}
    try:
        if failed:
            raise RuntimeError(f"a service did not start: {next(iter(failed.values()))}")
        for c in contenders:
            config = configs[c.backend] if c.backend else next(iter(configs.values()))
            members, _ = start_replicas(config, c.replicas, c.threads, call_timeout_s=120.0)
            engines[c.label] = (members, by_batch[c.max_batch])
        measure_round(r, cfg, sweep, running, engines, found, out_dir)
    finally:
        for members, _ in engines.values():
            for member in members:
                member.close()
        for _, service, _ in running.values():
            service.stop()


def measure_round(r: int, cfg: TuneConfig, sweep, running: dict, engines: dict, found: Rounds, out_dir: Path) -> None:
    """Each process idle while another measures: the contenders (order alternating), a window of each service
    (order alternating), the contenders again (the other way round); the figures added to `found`."""
    from bench.app.tune.offline import warmed
    from loadtests.sweep import alternating, run_window
    from loadtests.windows import slug

    seconds = {label: warmed(members, calls, cfg.seconds) for label, (members, calls) in engines.items()}
    figures: dict = {label: [] for label in engines}

    def offline_figures(k: int) -> None:
        for label in alternating(tuple(engines), k):
            rate, use = offline_run(*engines[label], seconds[label])
            figures[label].append(rate)
            found.cpu["offline"][label] = found.cpu["offline"][label].add(use)

    offline_figures(r)
    for variant in alternating(tuple(v for v, _, _ in running.values()), r):
        _, service, url = running[variant.label]
        tag = f"fresh_{slug(variant.label)}_rep{r}"
        window, use = service_window(service, lambda: run_window(url, sweep.users[0], None, sweep, out_dir, tag))
        found.windows[variant.label].append(window)
        found.cpu[variant.label] = found.cpu[variant.label].add(use)
    offline_figures(r + 1)
    for label, rates in figures.items():
        found.offline[label].append(rates)


def check_tune(model: str) -> int:
    _, _, block = prepare_model(model)
    cfg = TuneConfig(model=model, seconds=10.0, top=2, ties=2, duration_s=10.0, repeats=3)
    record, _ = run_tune(cfg, paths.results_dir() / "checks" / "tune")
    print_tune(record)
    if record.recommended is None or best_offline(record) is None or record.default_qps is None:
        print("error: the tune verified no service (see the table above)", file=sys.stderr)
        return 2
    fresh = fresh_figures(cfg, record, paths.results_dir() / "checks" / "tune" / "fresh")
    if not all(lv is not None and lv.status == "ok" for lv in (fresh.service, fresh.default)):
        print("error: the fresh service windows failed (see the table above)", file=sys.stderr)
        return 2
    return tune_verdict(fresh, record, block)


def tune_verdict(fresh: "FreshFigures", record, block: dict) -> int:
    rounds, rate = fresh.rounds, fresh.engine_rate[0]
    service, default = fresh.service, fresh.default
    to_engine = rate_of([q / o for q, o in zip(rounds["tuned"], rounds["offline"][fresh.engine])])
    to_default = rate_of([q / d for q, d in zip(rounds["tuned"], rounds["default"])])
    print(f"fresh figures in {len(rounds['tuned'])} rounds, each with fresh processes (closed loop, "
          f"{fresh.users} users); offline items/s, a round's two figures around its service windows:")
    for label, per_round in fresh.offline_all.items():
        mark = "  <- best" if label == fresh.engine else ""
        print(f"    {label:<8} {' | '.join(' '.join(f'{x:.2f}' for x in rs) for rs in per_round)}  "
              f"mean {sum(rounds['offline'][label]) / len(per_round):.2f}{mark}")
    for label in ("tuned", "default"):
        print(f"    {label} service QPS {' | '.join(f'{q:.2f}' for q in rounds[label])}")
    print(f"tuned service {record.recommended} QPS {service.qps:.2f} / offline {fresh.engine} {rate:.2f} items/s: "
          f"per round {to_engine[0]:.3f} {interval(to_engine[1], '.3f')}  (target >= {SERVICE_VS_ENGINE}; "
          f"95 % CI across the rounds' processes)")
    if fresh.own and fresh.own != fresh.engine:
        own = sum(rounds["offline"][fresh.own]) / len(rounds["tuned"])
        print(f"tuned service / its own configuration offline ({fresh.own} {own:.2f} items/s) = "
              f"{service.qps / own:.3f}  (for information)")
    if fresh.default_won:  # tuned and default are one service: their ratio would be 1.000 by construction
        print("tuned / default service QPS: not applicable (the tune recommends the default service itself)")
    else:
        print(f"tuned / default service QPS: per round {to_default[0]:.3f} {interval(to_default[1], '.3f')}  (default "
              f"{default.qps:.2f} {interval(default.qps_ci)}; target >= 1.0)")
    budget = cpu_budget(fresh.cpu, fresh.cores, service.qps, rate)
    for line in budget.pop("lines"):
        print(line)
    applicable = not fresh.default_won
    save("tune", block, {"tuned_vs_offline": to_engine[0], "tuned_vs_offline_ci": to_engine[1],
                         "tuned_vs_default": to_default[0] if applicable else "not applicable: the default won",
                         "tuned_vs_default_ci": to_default[1] if applicable else None,
                         "offline_engine": fresh.engine, "offline_rounds": fresh.offline_all,
                         "rounds": rounds, "users": fresh.users, "tuned_qps": service.qps,
                         "default_qps": default.qps, "cpu": budget}, tune=asdict(record))
    misses = [f"tuned service / best offline {to_engine[0]:.3f} < {SERVICE_VS_ENGINE}"] * (
        to_engine[0] < SERVICE_VS_ENGINE)
    misses += [f"tuned / default service {to_default[0]:.3f} < 1.0"] * \
        (to_default[0] < 1.0 and not fresh.default_won)
    return verdict(misses)


def cpu_budget(cpu: dict, cores: int, qps: float, engine_rate: float) -> dict:
    """Where the cores went: CPU per text offline and in the tuned service, and at the measured rates the share of
    the cores each part took. At saturation on a small host the front and the load generator share the replicas'
    cores, so every ms they spend per request is engine time lost: that, not the engine running slower, is what
    keeps the service under the offline figure (both seen here: replicas' ms per text vs the engine's)."""
    offline, service = cpu["offline"].ms_per_text(), cpu["service"].ms_per_text()
    # ms per text × texts per s / 1000 × 100 → % of one core
    share = {k: round(v * qps / 10, 1) for k, v in service.items() if v is not None}
    share["offline engine"] = round((offline["engine"] or 0) * engine_rate / 10, 1)
    lines, extra = [], {}
    if service["engine"] and offline["engine"]:
        lines.append(f"CPU per text: offline engine {offline['engine']:.1f} core-ms; tuned service replicas "
                     f"{service['engine']:.1f} ({service['engine'] / offline['engine']:.2f}x), front "
                     f"{service['front']:.2f} ms, load generator {service['client']:.2f} ms a request (Locust, in its "
                     f"timed windows)")
        lines.append(f"share of the {100 * cores} % the {cores} cores give: offline the engine "
                     f"{share['offline engine']:.0f} %; in the service replicas {share['engine']:.0f} %, front "
                     f"{share['front']:.1f} %, load generator {share['client']:.1f} %")
        if share.get("client") is not None and share["offline engine"]:
            # The cores less what the front and the load generator took, over what the engine had offline; divided
            # by the replicas' CPU per text relative to the engine's, it predicts the measured ratio.
            ceiling = (100 * cores - share["front"] - share["client"]) / share["offline engine"]
            predicted = ceiling * offline["engine"] / service["engine"]
            lines.append(f"so on this host the service can keep at most {ceiling:.3f} of the engine (the cores less "
                         f"the front's and the load generator's share); at its replicas' CPU per text that "
                         f"predicts {predicted:.3f}, measured {qps / engine_rate:.3f}")
            extra = {"ceiling": round(ceiling, 4), "predicted_ratio": round(predicted, 4)}
    else:  # the tuned service is the default one: its model runs in the front process
        lines.append("CPU per text: not split (the tuned service runs its model in the front process)")
    return {"offline_ms_per_text": offline, "service_ms_per_text": service, "percent_of_a_core": share, **extra,
            "lines": lines}
