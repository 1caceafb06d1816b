"""Sections built from `run.loadtests` (the HTTP service under Locust): QPS by concurrency, open loop, where the
server's time goes, and scaling (QPS at the highest concurrency / QPS at one user)."""

from __future__ import annotations

from bench.results import RunResult
from reports import fmt
from reports.common import column, label, na, num, table, text
from reports.sections import load_point

NO_LOADTESTS = "this results file has no load tests (the service sweep was not run)"
SATURATED = "†"


def service_configs(run: RunResult) -> dict:
    """label -> config dict, in the order the sweep ran them."""
    out: dict = {}
    for lt in run.loadtests:
        cfg = lt.get("config") or {}
        out.setdefault(cfg.get("label") or cfg.get("backend") or "unnamed", cfg)
    return out


def closed(run: RunResult, name: str) -> list[dict]:
    """Closed-loop points of one config, by number of users."""
    pts = [lt for lt in run.loadtests if lt.get("mode") == "closed" and label_of(lt) == name]
    return sorted(pts, key=lambda lt: lt.get("users") or 0)


def label_of(lt: dict) -> str:
    cfg = lt.get("config") or {}
    return cfg.get("label") or cfg.get("backend") or "unnamed"


def qps_text(lt: dict, errors: bool = True) -> str:
    """QPS with a dagger when the load generator itself was the bottleneck (the QPS is then a lower bound)."""
    mark = SATURATED if lt.get("client_saturated") else ""
    failed = f" ({lt['failures']} failed)" if errors and lt.get("failures") else ""
    return f"{fmt.qps(lt.get('qps'))}{mark}{failed}"


def qps_table(run: RunResult) -> dict:
    names = list(service_configs(run))
    users = sorted({lt.get("users") for lt in run.loadtests if lt.get("mode") == "closed"} - {None})
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
    return table("qps", "QPS by concurrency per service configuration (HTTP, end to end)", cols, rows, notes,
                 empty=NO_LOADTESTS)


def config_notes(run: RunResult) -> list[str]:
    out = []
    for name, cfg in service_configs(run).items():
        batching = f"batching up to {cfg.get('max_batch')} within {cfg.get('max_wait_ms')} ms" \
            if cfg.get("batching") else "no batching"
        cache = f"LRU cache of {cfg['cache_size']}" if cfg.get("cache_size") else "no cache"
        out.append(f"{name}: backend {cfg.get('backend')}, {batching}, {cache}.")
    return out


def open_loop_table(run: RunResult) -> dict:
    cols = [column("Configuration", False), column("Offered req/s"), column("Achieved QPS"), column("P50 ms"),
            column("P95 ms"), column("P99 ms"), column("Requests"), column("Failed")]
    rows = [[label(label_of(lt)), num(fmt.num(lt.get("offered_rps"))), num(qps_text(lt, errors=False)),
             *[num(fmt.num(lt.get(k))) for k in ("p50_ms", "p95_ms", "p99_ms")],
             num(str(lt.get("requests"))), num(str(lt.get("failures", 0)))]
            for lt in run.loadtests if lt.get("mode") == "open"]
    notes = ["Open loop: requests arrive on a schedule whatever the server's state, so queueing shows in the tail."]
    return table("open", "Open-loop load", cols, rows, notes,
                 empty=NO_LOADTESTS if not run.loadtests else "no open-loop load tests in this run")


def timing_table(run: RunResult) -> dict:
    """Server-side breakdown at each configuration's highest concurrency: where a request's time goes."""
    cols = [column("Configuration", False), column("Users"), column("Queue ms"), column("Tokenize ms"),
            column("Inference ms"), column("Server total ms"), column("Client P50 ms"), column("Client CPU %"),
            column("Cache hit rate")]
    rows = []
    for name in service_configs(run):
        points = closed(run, name)
        if not points:
            continue
        lt = points[-1]
        timing = lt.get("server_timing_ms") or {}
        cache = lt.get("cache")
        rows.append([label(name), num(str(lt.get("users"))),
                     *[num(fmt.num(timing.get(k)), "no Server-Timing header") for k in
                       ("queue", "tokenize", "inference", "total")],
                     num(fmt.num(lt.get("p50_ms"))), num(fmt.percent(lt.get("client_cpu_percent"))),
                     num(f"{cache['hit_rate']:.2f}" if cache and cache.get("hit_rate") is not None else None,
                         "cache disabled")])
    notes = ["Client P50 minus server total is network, HTTP parsing and the client's own overhead."]
    return table("timing", "Where the time goes (highest concurrency per configuration)", cols, rows, notes,
                 empty=NO_LOADTESTS)


def scaling(run: RunResult) -> dict:
    """label -> {"ratio", "users"} for configs with a 1-user point and a higher one; others are absent."""
    out = {}
    for name, cfg in service_configs(run).items():
        points = [p for p in closed(run, name) if p.get("qps")]
        if len(points) >= 2 and points[0].get("users") == 1:
            out[name] = {"backend": cfg.get("backend"), "ratio": points[-1]["qps"] / points[0]["qps"],
                          "users": points[-1].get("users")}
    return out
