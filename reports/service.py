"""Sections built from `run.loadtests` (the HTTP service under Locust): QPS by concurrency, open loop, where the
server's time goes, and scaling (QPS at the highest concurrency / QPS at one user).

A load-test record is one level (users or offered rate) of one service configuration; a configuration whose
service failed to start is a single record with status "failed" and a reason, and has no numbers.
"""

from __future__ import annotations

from bench.results import RunResult
from reports import fmt
from reports.common import column, label, na, num, table, text

NO_LOADTESTS = "this results file has no load tests (the service sweep was not run)"
SATURATED = "†"


def label_of(lt: dict) -> str:
    """The configuration's name; the workload and worker count join it when they differ from the default,
    since a cache measured on repeated (Zipf) texts is not the same configuration as on distinct reviews."""
    cfg = lt.get("config") or {}
    name = cfg.get("label") or cfg.get("backend") or "unnamed"
    if lt.get("workload") not in (None, "corpus"):
        name += f" ({lt['workload']} texts)"
    return name + (f" ×{lt['workers']} clients" if (lt.get("workers") or 1) > 1 else "")


def measured(lt: dict) -> bool:
    return lt.get("status", "ok") == "ok" and lt.get("qps") is not None


def service_configs(run: RunResult) -> dict:
    """name -> config dict, in the order the sweep ran them (failed configurations included)."""
    out: dict = {}
    for lt in run.loadtests:
        out.setdefault(label_of(lt), lt.get("config") or {})
    return out


def failed_configs(run: RunResult) -> dict:
    """name -> reason, for configurations with no measured level at all."""
    ok = {label_of(lt) for lt in run.loadtests if measured(lt)}
    return {label_of(lt): lt.get("reason") or "no reason recorded" for lt in run.loadtests
            if not measured(lt) and label_of(lt) not in ok}


def closed(run: RunResult, name: str) -> list[dict]:
    """Measured closed-loop levels of one configuration, by number of users."""
    pts = [lt for lt in run.loadtests if lt.get("mode") == "closed" and label_of(lt) == name and measured(lt)]
    return sorted(pts, key=lambda lt: lt.get("users") or 0)


def opened(run: RunResult, name: str | None = None) -> list[dict]:
    return [lt for lt in run.loadtests if lt.get("mode") == "open" and measured(lt)
            and (name is None or label_of(lt) == name)]


def qps_text(lt: dict, errors: bool = True) -> str:
    """QPS with a dagger when the load generator itself was the bottleneck (the QPS is then a lower bound)."""
    mark = SATURATED if lt.get("client_saturated") else ""
    failed = f" ({lt['failures']} failed)" if errors and lt.get("failures") else ""
    return f"{fmt.qps(lt.get('qps'))}{mark}{failed}"


def qps_table(run: RunResult) -> dict:
    names = [n for n in service_configs(run) if closed(run, n)]
    users = sorted({lt.get("users") for n in names for lt in closed(run, n)} - {None})
    cols = [column("Concurrent users", True)]
    for name in names:
        cols += [column(f"{name}: QPS"), column(f"{name}: P95 ms")]
    rows = []
    for n in users:
        row = [num(str(n))]
        for name in names:
            point = next((lt for lt in closed(run, name) if lt.get("users") == n), None)
            row += [num(qps_text(point)), num(fmt.num(point.get("p95_ms")))] if point else \
                [na("not run at this concurrency", span=2)]
        rows.append(row)
    notes = [f"Closed loop: each user sends its next request when the previous answer arrives. {SATURATED} the "
             "load generator's CPU was saturated, so that QPS is a lower bound.", *config_notes(run)]
    empty = NO_LOADTESTS if not run.loadtests else "no closed-loop level was measured"
    return table("qps", "QPS by concurrency per service configuration (HTTP, end to end)", cols, rows, notes,
                 empty=empty)


def config_notes(run: RunResult) -> list[str]:
    out = []
    for name, cfg in service_configs(run).items():
        wait = cfg.get("max_wait_ms")
        window = "greedy, no waiting" if not wait else f"waiting up to {wait:g} ms"
        batching = f"batches of up to {cfg.get('max_batch')} ({window})" if cfg.get("batching") else "no batching"
        cache = f"LRU cache of {cfg['cache_size']}" if cfg.get("cache_size") else "no cache"
        failed = failed_configs(run).get(name)
        out.append(f"{name}: backend {cfg.get('backend')}, {batching}, {cache}."
                   + (f" Not measured: {failed}" if failed else ""))
    return out


def open_loop_table(run: RunResult) -> dict:
    cols = [column("Configuration", False), column("Offered req/s"), column("Achieved QPS"), column("P50 ms"),
            column("P95 ms"), column("P99 ms"), column("Requests"), column("Failed")]
    rows = [[label(label_of(lt)), num(fmt.num(lt.get("offered_rps"))), num(qps_text(lt, errors=False)),
             *[num(fmt.num(lt.get(k))) for k in ("p50_ms", "p95_ms", "p99_ms")],
             num(str(lt.get("requests"))), num(str(lt.get("failures", 0)))] for lt in opened(run)]
    notes = ["Open loop: requests are sent on a schedule whatever the server's state, and latency counts from the "
             "intended send time, so queueing shows in the tail."]
    return table("open", "Open-loop load", cols, rows, notes,
                 empty=NO_LOADTESTS if not run.loadtests else "no open-loop load tests in this run")


def timing_table(run: RunResult) -> dict:
    """Server-side breakdown at each configuration's highest concurrency: where a request's time goes."""
    cols = [column("Configuration", False), column("Users"), column("Queue ms"), column("Tokenize ms"),
            column("Inference ms"), column("Server total ms"), column("Client P50 ms"), column("Mean batch"),
            column("Client CPU %"), column("Cache hit rate")]
    rows = []
    for name in service_configs(run):
        points = closed(run, name)
        if points:
            rows.append(timing_row(name, points[-1]))
    notes = ["Server parts are means from the Server-Timing header. Client P50 minus server total is network, HTTP "
             "parsing and the client's own overhead."]
    return table("timing", "Where the time goes (highest concurrency per configuration)", cols, rows, notes,
                 empty=NO_LOADTESTS if not run.loadtests else "no closed-loop level was measured")


def timing_row(name: str, lt: dict) -> list:
    timing = lt.get("server_timing_ms") or {}
    cache = lt.get("cache") or {}
    hit_rate = cache.get("hit_rate")
    if not (lt.get("config") or {}).get("cache_size"):
        cache_cell = text("n/a (no cache)")
    else:
        cache_cell = num(f"{hit_rate:.2f}" if hit_rate is not None else None, "no lookups recorded")
    return [label(name), num(str(lt.get("users"))),
            *[num(fmt.num(timing.get(k)), "no Server-Timing header") for k in ("queue", "tokenize", "inference",
                                                                                "total")],
            num(fmt.num(lt.get("p50_ms"))), num(fmt.num(lt.get("mean_batch_size")), "no batch metrics"),
            num(fmt.percent(lt.get("client_cpu_percent"))), cache_cell]


def scaling(run: RunResult) -> dict:
    """name -> {"backend", "ratio", "users"} for configs with a 1-user level and a higher one."""
    out = {}
    for name, cfg in service_configs(run).items():
        points = [p for p in closed(run, name) if p["qps"]]
        if len(points) >= 2 and points[0].get("users") == 1:
            out[name] = {"backend": cfg.get("backend"), "ratio": points[-1]["qps"] / points[0]["qps"],
                         "users": points[-1].get("users")}
    return out
