"""Raw per-request samples from every Locust process, and a load level's statistics derived from them.

Locust's CSV keeps only response times rounded to about two significant digits; the locustfile also writes every
request of the timed window to one file per Locust process that sends requests, and the figures of a level
(percentiles and their CIs, QPS per window and its CI) are computed here from those files.

File `<tag>_samples_<pid>.csv` for STRUCTBENCH_CLIENT_OUT=`<tag>_client.json` (as loadtests/sweep.py names it), so
it lies beside Locust's `<tag>_stats.csv`; for any other name, `<its stem>_samples_<pid>.csv`:

    # structbench-samples 1 started=<epoch s> timed_from=<epoch s>
    start_s,latency_ms,ok,intended_s
    1732537200.123456,12.345678,1,

start_s: Locust's start_time of the request (epoch s). latency_ms: Locust's response_time, from the actual send
to the response read, the very value Locust's own statistics get. ok: 0 where Locust logged a failure.
intended_s: open loop only, the scheduled send time (epoch s); empty in closed loop. Floats are written with
repr(), so they read back bit for bit, which replaying Locust's rounding exactly needs. started: when this
process's test started; timed_from: when its timed window began (the start, or Locust's stats reset after the
ramp-up); nan where unknown.
Format versions: 1, the first.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.core.errors import BenchError
from bench.core.stats import bootstrap_ci, percentile, window_rate_ci

SAMPLES_VERSION = 1
COLUMNS = ["start_s", "latency_ms", "ok", "intended_s"]
_HEADER = re.compile(r"# structbench-samples (\d+) started=(\S+) timed_from=(\S+)")
_PID_FILE = re.compile(r"_samples_(\d+)\.csv$")
LOCUST_PERCENTILES = {"50%": 0.50, "95%": 0.95, "99%": 0.99}  # the CSV column and Locust's fraction


def samples_path(client_out: str | Path, pid: int) -> Path:
    """The samples file of Locust process `pid` for a run whose client figures go to `client_out`."""
    out = Path(client_out)
    return out.with_name(f"{_tag(out)}_samples_{pid}.csv")


def sample_paths(client_out: str | Path) -> list[Path]:
    """Every process's samples file of the run whose STRUCTBENCH_CLIENT_OUT was `client_out`, sorted."""
    out = Path(client_out)
    return sorted(p for p in out.parent.glob(f"{_tag(out)}_samples_*.csv") if _PID_FILE.search(p.name))


def _tag(client_out: Path) -> str:
    return client_out.stem.removesuffix("_client")


class SampleWriter:
    """One Locust process's requests, kept in memory and appended to its samples file on each flush."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[tuple] = []
        self.started_s = math.nan
        self.timed_from_s = math.nan
        self._written = False

    def start_test(self, now_s: float) -> None:
        """A test starts at `now_s`: so does its timed window, unless a stats reset moves it (start_window)."""
        self.started_s = now_s
        self.start_window(now_s)

    def start_window(self, now_s: float) -> None:
        """Drop everything recorded so far: the timed window starts at `now_s`, as when Locust resets its stats."""
        self.rows.clear()
        self.timed_from_s = now_s
        self._written = False  # the next flush rewrites the file from its header

    def add(self, start_s: float, latency_ms: float, ok: bool, intended_s: float | None = None) -> None:
        self.rows.append((start_s, latency_ms, ok, intended_s))

    def flush(self) -> None:
        """Write what came since the last flush; safe to call at every stop/quit event of the process."""
        if self._written and not self.rows:
            return
        with open(self.path, "a" if self._written else "w", encoding="utf-8", newline="") as fh:
            if not self._written:
                fh.write(f"# structbench-samples {SAMPLES_VERSION} started={float(self.started_s)!r} "
                         f"timed_from={float(self.timed_from_s)!r}\n")
                fh.write(",".join(COLUMNS) + "\n")
            fh.writelines(_line(*row) for row in self.rows)
        self.rows.clear()
        self._written = True


def _line(start_s: float, latency_ms: float, ok: bool, intended_s: float | None) -> str:
    # float() first: a numpy float's repr is "np.float64(...)"; a Python float's repr reads back exactly.
    intended = "" if intended_s is None else repr(float(intended_s))
    return f"{float(start_s)!r},{float(latency_ms)!r},{int(ok)},{intended}\n"


@dataclass(frozen=True)
class Samples:
    """The requests of one load level, merged over its Locust processes; one array element per request."""

    start_s: np.ndarray
    latency_ms: np.ndarray  # from the actual send, as Locust measures
    ok: np.ndarray
    intended_s: np.ndarray  # NaN in closed loop
    process: np.ndarray  # index into `paths` of the file each request came from
    process_started_s: tuple[float, ...]  # per process: when its test started
    process_timed_from_s: tuple[float, ...]  # per process: when its timed window began (after a stats reset)
    paths: tuple[str, ...]

    @property
    def n(self) -> int:
        return int(self.latency_ms.size)

    @property
    def timed_from_s(self) -> float:
        """The latest process's window start, so that every window lies inside all processes' timed windows."""
        return max(self.process_timed_from_s)

    @property
    def open_loop(self) -> bool:
        return bool(np.isfinite(self.intended_s).any())

    @property
    def latency_from_intended_ms(self) -> np.ndarray:
        """Open loop: latency counted from the scheduled send time, so a queue at the server cannot hide."""
        return (self.start_s - self.intended_s) * 1000.0 + self.latency_ms

    @property
    def completed_s(self) -> np.ndarray:
        return self.start_s + self.latency_ms / 1000.0


def read_samples(paths: Iterable[str | Path]) -> Samples:
    """Merge the samples files of all processes of one run (see sample_paths)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise BenchError("no samples files: did the locustfile run with STRUCTBENCH_CLIENT_OUT set?")
    parts = [_read_one(p) for p in paths]
    cols = [np.concatenate([part[c] for part in parts]) for c in range(4)]
    process = np.concatenate([np.full(part[0].size, i) for i, part in enumerate(parts)])
    started, timed_from = (tuple(part[k] for part in parts) for k in (4, 5))
    return Samples(cols[0], cols[1], cols[2].astype(bool), cols[3], process, started, timed_from,
                   tuple(map(str, paths)))


def _read_one(path: Path) -> tuple:
    with open(path, encoding="utf-8", newline="") as fh:
        match = _HEADER.fullmatch(fh.readline().strip())
        if not match or int(match.group(1)) != SAMPLES_VERSION:
            raise BenchError(f"{path}: not a structbench samples file of version {SAMPLES_VERSION}")
        rows = list(csv.reader(fh))
    if not rows or rows[0] != COLUMNS:
        raise BenchError(f"{path}: expected the columns {','.join(COLUMNS)}")
    body = rows[1:]
    start, latency, ok = ([float(r[c]) for r in body] for c in range(3))
    intended = [float(r[3]) if r[3] else math.nan for r in body]
    as_float = [np.array(col, dtype=np.float64) for col in (start, latency, ok, intended)]
    return (*as_float, float(match.group(2)), float(match.group(3)))


def level_stats(samples: Samples, window_s: float = 2.0, duration_s: float | None = None, ok_only: bool = False,
                n_boot: int = 2000, seed: int = 0) -> dict:
    """The figures of one load level, computed from its raw samples.

    Latency: from the intended send time in open loop, from the actual send in closed loop ("latency_from"),
    over all requests as Locust counts them, or over successful ones only with `ok_only`. Percentiles are
    linear (bench.core.stats.PERCENTILE_METHOD) with percentile-bootstrap 95 % CIs. QPS: completed requests
    (failures included, as Locust's Requests/s) in fixed windows of `window_s` from the timed window's start,
    over `duration_s` if given, else over as many whole windows as the samples span; a t CI across windows.
    "locust_rule_ms" holds Locust's own P50/P95/P99 rule replayed on these samples, for crosscheck.
    """
    if samples.n == 0:
        raise BenchError("no requests were recorded in the timed window")
    latency = samples.latency_from_intended_ms if samples.open_loop else samples.latency_ms
    latency = latency[samples.ok] if ok_only else latency
    out = {"n": samples.n, "failures": int((~samples.ok).sum()), "processes": len(samples.paths),
           "latency_from": "intended" if samples.open_loop else "send", "ok_only": ok_only,
           "mean_ms": float(latency.mean()) if latency.size else None}
    for q in (50, 95, 99):
        out[f"p{q}_ms"] = percentile(latency, q) if latency.size else None
        out[f"p{q}_ms_ci95"] = list(bootstrap_ci(latency, f"p{q}", n_boot, seed=seed)) if latency.size else None
    out["locust_rule_ms"] = {col: locust_percentile(samples.latency_ms, f) for col, f in LOCUST_PERCENTILES.items()}
    return {**out, **_window_rates(samples, window_s, duration_s)}


def _window_rates(samples: Samples, window_s: float, duration_s: float | None) -> dict:
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    done = samples.completed_s
    span = duration_s if duration_s is not None else float(done.max()) - samples.timed_from_s
    # Whole windows only: a partial last window would read as a dip in throughput. The epsilon keeps 3.0 s of
    # 1.0 s windows at 3 despite float division.
    k = max(0, math.floor(span / window_s + 1e-9))
    counts = np.histogram(done, bins=samples.timed_from_s + window_s * np.arange(k + 1))[0] if k else np.zeros(0)
    out = {"window_s": window_s, "windows": k, "window_counts": [int(c) for c in counts],
           "timed_from_s": samples.timed_from_s, "qps": float(counts.mean() / window_s) if k else None,
           "qps_ci95": None}
    if k >= 2:
        _, lo, hi = window_rate_ci(counts, window_s)
        out["qps_ci95"] = [lo, hi]
    return out


def locust_bucket(response_time_ms: float) -> int:
    """Locust's bucket_response_time (locust/stats.py): the key a response time is counted under.

    About two significant digits with Python's round (halves to even): 147 -> 150, 3432 -> 3400, 58760 -> 59000,
    2.5 -> 2 and 3.5 -> 4; below 100 ms, whole milliseconds.
    """
    if response_time_ms < 100:
        return round(response_time_ms)
    if response_time_ms < 1000:
        return int(round(response_time_ms, -1))
    if response_time_ms < 10000:
        return int(round(response_time_ms, -2))
    return int(round(response_time_ms, -3))


def locust_percentile(latencies_ms: Sequence[float], fraction: float) -> int:
    """Locust's calculate_response_time_percentile over its buckets, as its CSV "50%" etc. columns show it.

    Walks the bucketed response times from the largest down and returns the first bucket at which no more than
    int(n * fraction) requests remain below; 0 for no requests, as Locust does.
    """
    buckets = Counter(locust_bucket(float(x)) for x in latencies_ms)
    n = len(latencies_ms)
    below_allowed = int(n * fraction)
    seen = 0
    for key in sorted(buckets, reverse=True):
        seen += buckets[key]
        if n - seen <= below_allowed:
            return key
    return 0


def locust_step_ms(value_ms: float) -> int:
    """The width of Locust's bucket at `value_ms`: 1, 10, 100 or 1000 ms."""
    return 1 if value_ms < 100 else 10 if value_ms < 1000 else 100 if value_ms < 10000 else 1000


def crosscheck(stats: dict, locust_row: dict, samples: Samples | None = None) -> dict:
    """Our figures (level_stats) beside Locust's CSV Aggregated row, and whether they are the same numbers.

    Locust rewrites `_stats.csv` once a second and not at exit, so its row lacks the requests that completed
    after its last write (up to a second's worth; "csv_lag" counts them). With `samples`, the comparison takes
    the first "Request Count" requests in the order Locust logged them: file order within one process, exact;
    completion order across --processes workers, whose reports reach the master in batches, approximate.
    Without `samples`, all requests, which match only when nothing lagged.

    With `samples`, "min_ms", "max_ms" and "mean_ms" also compare the CSV's Min/Max/Average Response Time, which
    Locust keeps unrounded: equal (mean to 1e-9) only if the compared requests are exactly Locust's.

    For each of "50%", "95%", "99%": ours_ms (level_stats', all requests, see its "latency_from"), locust_ms
    (the CSV), replayed_ms (Locust's rounding and rank rule on the compared requests' send latencies) and
    step_ms (Locust's rounding step there). A percentile agrees when replayed_ms equals the CSV: our raw
    samples, rounded and ranked the way Locust does, are Locust's number. diff_ms = ours - Locust's can exceed
    step_ms even so: Locust takes a nearest rank of rounded values where we interpolate between two ranks.
    """
    n_locust = int(float(locust_row["Request Count"]))
    latency, ok = _compared(samples, n_locust)
    lag = stats["n"] - n_locust
    out = {"latency_from": stats["latency_from"], "compared": "all requests" if latency is None else "first requests",
           "requests": {"ours": stats["n"], "locust": n_locust, "csv_lag": lag,
                        "agree": lag == 0 or (latency is not None and lag > 0)},
           "failures": _pair(stats["failures"] if ok is None else int((~ok).sum()), locust_row["Failure Count"])}
    for col, fraction in LOCUST_PERCENTILES.items():
        replayed = stats["locust_rule_ms"][col] if latency is None else locust_percentile(latency, fraction)
        out[col] = _percentile_pair(stats[f"p{col[:-1]}_ms"], locust_row.get(col), replayed)
    if latency is not None and latency.size:
        out.update(_unrounded_pairs(latency, locust_row))
    out["agree"] = all(v["agree"] for v in out.values() if isinstance(v, dict))
    return out


def _unrounded_pairs(latency: np.ndarray, locust_row: dict) -> dict:
    out = {}
    for key, col, ours in (("min_ms", "Min Response Time", latency.min()), ("max_ms", "Max Response Time",
                           latency.max()), ("mean_ms", "Average Response Time", latency.mean())):
        theirs = float(locust_row[col])
        out[key] = {"ours": float(ours), "locust": theirs, "agree": math.isclose(ours, theirs, rel_tol=1e-9)}
    return out


def _compared(samples: Samples | None, n_locust: int) -> tuple:
    """Send latencies and ok flags of the first `n_locust` requests in Locust's order; (None, None): use all."""
    if samples is None or not 0 <= n_locust <= samples.n:
        return None, None
    one_process = len(samples.paths) == 1
    order = np.arange(samples.n) if one_process else np.argsort(samples.completed_s, kind="stable")
    first = order[:n_locust]
    return samples.latency_ms[first], samples.ok[first]


def _pair(ours: int, theirs: str) -> dict:
    locust = int(float(theirs))
    return {"ours": ours, "locust": locust, "agree": ours == locust}


def _percentile_pair(ours: float | None, theirs: str | None, replayed: int) -> dict:
    locust = float(theirs) if theirs not in (None, "", "N/A") else None
    return {"ours_ms": ours, "locust_ms": locust, "replayed_ms": replayed,
            "step_ms": locust_step_ms(locust) if locust is not None else None,
            "diff_ms": ours - locust if ours is not None and locust is not None else None,
            "agree": locust is not None and replayed == locust}
