"""What the commands print: the load-test levels, the SLO searches and the tune, as tables on stdout."""

from __future__ import annotations

from pathlib import Path

from bench.core.fmt import interval


def print_searches(searches: tuple) -> None:
    for s in searches:
        found = f"{s.qps:.2f} req/s {interval(s.qps_ci, '.2f')} at {s.rate_rps:.3g} offered, {s.requests} requests" \
            if s.qps is not None else f"none: {s.reason}"
        print(f"QPS at P{s.percentile:g} <= {s.slo_ms:g} ms, {s.config.label}: {found} ({len(s.probes)} probes, "
              f"{s.stopped})")


def shown(value: float | None, spec: str) -> str:
    """A figure, or '-' right-aligned where it was not measured (a server without our /metrics)."""
    width = int(spec.split(".")[0])
    return f"{value:{spec}}" if value is not None else f"{'-':>{width}}"


def print_loadtests(levels: tuple, path: Path) -> None:
    print(f"{'service config':<30} {'mode':<6} {'users':>5} {'rate':>6} {'QPS [95% CI]':>20} {'P95 ms [95% CI]':>22} "
          f"{'fail':>5} {'batch':>6} {'client CPU%':>11}")
    for lv in levels:
        if lv.status == "failed":
            print(f"{lv.config.label:<30} FAILED: {lv.reason}")
            continue
        print(f"{lv.config.label:<30} {lv.mode:<6} {lv.users or '':>5} {lv.offered_rps or '':>6} "
              f"{lv.qps or 0:7.2f} {interval(lv.qps_ci, '.2f'):>12} {lv.p95_ms or 0:8.1f} {interval(lv.p95_ci_ms):>13} "
              f"{lv.failures:>5} {shown(lv.mean_batch_size, '6.2f')} {shown(lv.client_cpu_percent, '10.0f')}"
              f"{'!' if lv.client_saturated else ''}")
        if lv.failure_causes:
            print("    failures by cause: " + ", ".join(f"{k} × {v}" for k, v in list(lv.failure_causes.items())[:4]))
    print(f"results: {path}")


def print_tune(record) -> None:
    width = max([24] + [len(c.label) for c in record.candidates])
    print(f"{'backend replicas×threads batch':<{width}} {'offline items/s [95% CI]':>26} {'P95 ms':>8} {'RSS MB':>8} "
          f"{'service QPS [95% CI]':>24}")
    for c in record.candidates:
        if c.status != "ok":
            print(f"{c.label:<{width}} FAILED: {c.reason}")
            continue
        service = f"{c.service_qps:.1f} {interval(c.service_qps_ci)}" if c.service_qps is not None else "not verified"
        note = "  (oversubscribed: R×T > cores)" if c.oversubscribed else ""
        print(f"{c.label:<{width}} {c.items_per_s:>10.1f} {interval(c.items_ci):>15} {c.p95_ms or 0:8.1f} "
              f"{c.rss_mb or 0:8.0f} {service:>24}{note}")
    for name, why in record.left_out:
        print(f"{name}: not searched, {why}")
    if record.default_qps is not None:
        print(f"{record.default_label}: {record.default_qps:.1f} req/s {interval(record.default_qps_ci)}")
    what = "offline items/s" if record.basis == "offline" else "QPS"
    tie = f" (tie with {', '.join(record.tied_with)}: overlapping {what} intervals)" if record.tied_with else ""
    ranked = " — best offline; served in the load tests below" if record.basis == "offline" else ""
    print(f"recommended: {record.recommended or 'none'}{tie}{ranked}")
    if record.command:
        print(f"start it:    {record.command}")
