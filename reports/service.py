"""Sections built from `run.loadtests` (the HTTP service under Locust): QPS by concurrency, open loop, where the
server's time goes, and scaling (QPS at the highest concurrency / QPS at one user).

A load-test record is a `LoadLevel`: one level (users or offered rate) of one service configuration, pooled over
its interleaved repeats, with 95 % CIs (empty for schema-1 files: one window, shown as "no CI"). A configuration
whose service failed to start is a single record with status "failed" and a reason, and has no numbers.
"""

from __future__ import annotations

from typing import NamedTuple

from bench.core.records import LoadLevel, ServiceSetup
from bench.core.results import RunResult
from reports import fmt
from reports.common import column, label, na, num, table, text
from reports.ranking import NO_CI, Entry, order_text

NO_LOADTESTS = "this results file has no load tests (the service sweep was not run)"
SATURATED = "†"


def label_of(lt: LoadLevel) -> str:
    """The configuration's name; the workload and worker count join it when they differ from the default,
    since a cache measured on repeated (Zipf) texts is not the same configuration as on distinct reviews."""
    name = lt.config.label or lt.config.backend or "unnamed"
    if lt.workload not in (None, "corpus"):
        name += f" ({lt.workload} texts)"
    return name + (f" ×{lt.workers} clients" if (lt.workers or 1) > 1 else "")


def load_point(lt: LoadLevel) -> str:
    if lt.mode == "open":
        return f"open loop, {fmt.num(lt.offered_rps)} req/s offered"
    return f"{lt.users} users"


def measured(lt: LoadLevel) -> bool:
    return lt.status == "ok" and lt.qps is not None


def service_configs(run: RunResult) -> dict[str, ServiceSetup]:
    """name -> configuration, in the order the sweep ran them (failed configurations included)."""
    out: dict = {}
    for lt in run.loadtests:
        out.setdefault(label_of(lt), lt.config)
    return out


def failed_configs(run: RunResult) -> dict:
    """name -> reason, for configurations with no measured level at all."""
    ok = {label_of(lt) for lt in run.loadtests if measured(lt)}
    return {label_of(lt): lt.reason or "no reason recorded" for lt in run.loadtests
            if not measured(lt) and label_of(lt) not in ok}


def closed(run: RunResult, name: str) -> list[LoadLevel]:
    """Measured closed-loop levels of one configuration, by number of users."""
    pts = [lt for lt in run.loadtests if lt.mode == "closed" and label_of(lt) == name and measured(lt)]
    return sorted(pts, key=lambda lt: lt.users or 0)


def opened(run: RunResult, name: str | None = None) -> list[LoadLevel]:
    return [lt for lt in run.loadtests if lt.mode == "open" and measured(lt)
            and (name is None or label_of(lt) == name)]


def qps_text(lt: LoadLevel, errors: bool = True) -> str:
    """QPS with its CI, and a dagger when the load generator itself was the bottleneck (the QPS is then a lower
    bound)."""
    mark = SATURATED if lt.client_saturated else ""
    failed = f" ({lt.failures} failed)" if errors and lt.failures else ""
    return f"{fmt.qps(lt.qps)}{mark}{fmt.ci_suffix(lt.qps_ci)}{failed}"


def qps_entry(lt: LoadLevel, name: str) -> Entry:
    return Entry(name, lt.qps, tuple(lt.qps_ci))


def p95_entry(lt: LoadLevel, name: str) -> Entry:
    return Entry(name, lt.p95_ms, tuple(lt.p95_ci_ms)) if lt.p95_ms is not None else Entry(name, 0.0)


def ranking_text(points: dict[str, LoadLevel]) -> str:
    """QPS and P95 order of the configurations measured at one load, ties where the 95 % intervals overlap."""
    if len(points) < 2:
        return ""
    qps = order_text([qps_entry(lt, n) for n, lt in points.items()], higher=True)
    p95 = order_text([p95_entry(lt, n) for n, lt in points.items()], higher=False)
    return NO_CI if qps == p95 == NO_CI else f"QPS: {qps} · P95: {p95}"


def qps_table(run: RunResult, names: list[str] | None = None) -> dict:
    """`names`: the configurations to give columns (a report of several hosts passes all hosts' names)."""
    names = names if names is not None else [n for n in service_configs(run) if closed(run, n)]
    users = sorted({lt.users for n in names for lt in closed(run, n)} - {None})
    cols = [column("Concurrent users", True)]
    for name in names:
        cols += [column(f"{name}: QPS [95% CI]"), column(f"{name}: P95 ms [95% CI]")]
    cols += [column("Ranking at this load (≈ tie: CIs overlap)", False)] if len(names) > 1 else []
    rows = []
    for n in users:
        points = {name: next((lt for lt in closed(run, name) if lt.users == n), None) for name in names}
        row = [num(str(n))]
        for point in points.values():
            row += [num(qps_text(point)), num(fmt.num_ci(point.p95_ms, point.p95_ci_ms))] if point else \
                [na("not run at this concurrency", span=2)]
        rows.append(row + ([text(ranking_text({k: v for k, v in points.items() if v}))] if len(names) > 1 else []))
    notes = [f"Closed loop: each user sends its next request when the previous answer arrives. {SATURATED} the "
             "load generator's CPU was saturated, so that QPS is a lower bound.", ranking_note(run),
             *pinning_notes(run), *config_notes(run)]
    empty = NO_LOADTESTS if not run.loadtests else "no closed-loop level was measured"
    return table("qps", "QPS by concurrency per service configuration (HTTP, end to end)", cols, rows, notes,
                 empty=empty)


def ranking_note(run: RunResult) -> str:
    return (f"Brackets: 95 % CIs ({ci_source([lv.processes for lv in run.loadtests if lv.status == 'ok'])}). "
            "Ranking: '>' better with the intervals apart, '≈' a tie "
            "(intervals overlap: indistinguishable on this host); a level with no CI (schema-1 file: one window) is "
            "shown but not ranked with confidence.")


def pinning_notes(run: RunResult) -> list[str]:
    """Where the services and Locust ran (one line per distinct placement; none for files that did not record it)."""
    return [f"Cores: {p}." for p in dict.fromkeys(lv.pinning for lv in run.loadtests if lv.pinning)]


def ci_source(processes: list[int]) -> str:
    """Where the load levels' CIs come from: across fresh service processes, or (one process) its windows."""
    counts = sorted(set(processes))
    if counts and counts[0] >= 2:
        n = "–".join(str(c) for c in (counts[0], counts[-1])) if len(counts) > 1 else str(counts[0])
        return (f"QPS a t interval across {n} fresh service processes per configuration, percentiles the wider of a "
                "bootstrap over those processes and a t interval over their own values")
    return ("QPS across the fixed 2 s windows of one service process — two processes differ by more than that "
            "interval says; `bench sweep --service-processes 3` measures across processes; percentiles from every "
            "request's latency")


def config_notes(run: RunResult) -> list[str]:
    out = []
    for name, cfg in service_configs(run).items():
        window = "greedy, no waiting" if not cfg.max_wait_ms else f"waiting up to {cfg.max_wait_ms:g} ms"
        batching = f"batches of up to {cfg.max_batch} ({window})" if cfg.batching else "no batching"
        cache = f"LRU cache of {cfg.cache_size}" if cfg.cache_size else "no cache"
        failed = failed_configs(run).get(name)
        out.append(f"{name}: backend {cfg.backend}, {batching}, {cache}."
                   + (f" Not measured: {failed}" if failed else ""))
    return out


def open_loop_table(run: RunResult) -> dict:
    cols = [column("Configuration", False), column("Offered req/s"), column("Achieved QPS [95% CI]"),
            column("P50 ms [95% CI]"), column("P95 ms [95% CI]"), column("P99 ms [95% CI]"), column("Requests"),
            column("Failed")]
    rows = [[label(label_of(lt)), num(fmt.num(lt.offered_rps)), num(qps_text(lt, errors=False)),
             *[num(fmt.num_ci(value, ci)) for value, ci in ((lt.p50_ms, lt.p50_ci_ms), (lt.p95_ms, lt.p95_ci_ms),
                                                             (lt.p99_ms, lt.p99_ci_ms))],
             num(str(lt.requests)), num(str(lt.failures))] for lt in opened(run)]
    notes = ["Open loop: requests are sent on a schedule whatever the server's state, and latency counts from the "
             "intended send time, so queueing shows in the tail."]
    return table("open", "Open-loop load", cols, rows, notes,
                 empty=NO_LOADTESTS if not run.loadtests else "no open-loop load tests in this run")


def timing_table(run: RunResult) -> dict:
    """Server-side breakdown at each configuration's highest concurrency: where a request's time goes."""
    cols = [column("Configuration", False), column("Users"), column("Queue ms"), column("Tokenize ms"),
            column("Inference ms"), column("Server total ms"), column("Client P50 ms"), column("Mean batch"),
            column("Client CPU % (timed window)"), column("Cache hit rate")]
    rows = []
    for name in service_configs(run):
        points = closed(run, name)
        if points:
            rows.append(timing_row(name, points[-1]))
    notes = ["Server parts are means from the Server-Timing header. Client P50 minus server total is network, HTTP "
             "parsing and the client's own overhead."]
    return table("timing", "Where the time goes (highest concurrency per configuration)", cols, rows, notes,
                 empty=NO_LOADTESTS if not run.loadtests else "no closed-loop level was measured")


def timing_row(name: str, lt: LoadLevel) -> list:
    timing = lt.server_timing_ms or {}  # free-form: the parts the server's Server-Timing header named
    hit_rate = lt.cache.hit_rate if lt.cache else None
    if not lt.config.cache_size:
        cache_cell = text("n/a (no cache)")
    else:
        cache_cell = num(f"{hit_rate:.2f}" if hit_rate is not None else None, "no lookups recorded")
    return [label(name), num(str(lt.users)),
            *[num(fmt.num(timing.get(k)), "no Server-Timing header") for k in ("queue", "tokenize", "inference",
                                                                                "total")],
            num(fmt.num(lt.p50_ms)), num(fmt.num(lt.mean_batch_size), "no batch metrics"),
            num(fmt.percent(lt.client_cpu_percent)), cache_cell]


def feeding_table(run: RunResult) -> dict | None:
    """How the service feeds its engine at each configuration's highest concurrency (from /metrics): model time in
    the service against the engine's at the same shapes, shapes first met while serving, pad tokens, the front's
    CPU per request, and the busiest shape buckets. None for a run whose service reported none of it."""
    cols = [column("Configuration", False), column("Users"), column("In-service / engine model time"),
            column("New shapes after warm-up"), column("Pad tokens %"), column("Front CPU ms / request"),
            column("Busiest buckets: calls, in-service / engine", False)]
    rows = []
    for name in service_configs(run):
        points = [lt for lt in closed(run, name) if lt.shapes or lt.front_cpu_ms_per_request is not None]
        if points:
            rows.append(feeding_row(name, points[-1]))
    if not rows:
        return None
    notes = ["In-service / engine: the level's model calls timed in the service, over the same calls at the engine's "
             "time for their shape (each bucket timed alone at warm-up, on the thread that serves it); 1.00 = the "
             "service costs the engine nothing. New shapes after warm-up should be 0. Front CPU per request: the "
             "HTTP front processes' CPU time per request answered (1 / it = requests per second one front core can "
             "carry; docs/service.md, several fronts)."]
    return table("feeding", "How the service feeds its engine (highest concurrency per configuration)", cols, rows,
                 notes)


def feeding_row(name: str, lt: LoadLevel) -> list:
    shapes = lt.shapes
    busiest = "; ".join(f"{b.shape}: {b.calls:.0f}, {fmt.ratio(b.efficiency) or 'engine not timed'}"
                        for b in (shapes.by_bucket[:3] if shapes else ()))
    return [label(name), num(str(lt.users)),
            num(fmt.ratio(shapes.efficiency) if shapes else None,
                "no shape metrics" if not shapes else "the engine was not timed at warm-up (one run per shape: "
                "--warmup-runs 2 times it)"),
            num(f"{shapes.new_shapes:.0f}" if shapes else None, "no shape metrics"),
            num(fmt.percent(100 * shapes.padding_share) if shapes and shapes.padding_share is not None else None,
                "no token metrics"),
            num(fmt.num(lt.front_cpu_ms_per_request), "the model ran in the front's process, so its CPU is not "
                "the front's alone" if not (lt.config.model_process or lt.config.replicas > 1) else
                "the service reported no front CPU"),
            text(busiest) if busiest else na("no per-bucket metrics")]


class Scaling(NamedTuple):
    backend: str
    ratio: float
    users: int | None


def scaling(run: RunResult) -> dict[str, Scaling]:
    """name -> Scaling (QPS at the highest concurrency / at one user) for configs with a 1-user level and more."""
    out = {}
    for name, cfg in service_configs(run).items():
        points = [p for p in closed(run, name) if p.qps]
        if len(points) >= 2 and points[0].users == 1:
            out[name] = Scaling(cfg.backend, points[-1].qps / points[0].qps, points[-1].users)
    return out
