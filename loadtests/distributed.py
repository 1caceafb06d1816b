"""One load window with Locust's own distribution: a `--master` and N `--worker` processes running our locustfile,
and the merge of the workers' raw samples files into one Samples set that level_stats accepts.

On one machine, `python -m bench sweep --workers N --open-rates …` runs its open-loop windows this way (the master
on 127.0.0.1 at a free port, the rate split over the workers; closed-loop windows use Locust's --processes, the
same master/worker protocol). On several machines the two commands run by hand (README, "Load from several
machines") and `python -m loadtests.distributed merge DIR_OR_FILE …` prints the figures of the collected files.

What the merge relies on. Each worker writes its own file, `<tag>_samples_<pid>.csv` beside its
--sb-client-out (loadtests/samples.py). A request's latency is measured inside one worker on one clock
(Locust's send-to-response time; in open loop from the intended send time, also that worker's own clock), so the
percentiles and their CIs need no agreement between machines. QPS does: completions are counted in fixed windows
of epoch time from the latest worker's timed start, so the workers' clocks must agree to well under a window
(2 s by default); NTP-synchronised hosts (a few ms apart) do. All workers start their timed window on the same
message from the master, so the spread of those starts ("timed_from_spread_s") bounds clock offset plus message
delay; the merge CLI warns when it reaches a quarter of a window. Requests are not re-ordered: the files in path
order, each in the order its worker logged them, with Samples.process naming the file.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.core.errors import BenchError, ConfigError, run_entry
from bench.core.fmt import interval
from bench.core.processes import stop_group, tethered
from loadtests.protocols import Spoken
from loadtests.samples import Samples, level_stats, read_samples, sample_paths
from loadtests.service_proc import host_pinning
from loadtests.windows import LOCUSTFILE, SweepConfig, locust_command, locust_env, ours, window_result

GAVE_UP = "Gave up waiting for workers to connect"  # what Locust's master logs when --expect-workers-max-wait ends
SAMPLES_GLOB = "*_samples_*.csv"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the master binds it a moment later; a clash fails with Locust's error)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def master_command(url: str, users: int, cfg: SweepConfig, prefix: Path, rate: float | None, workers: int,
                   port: int, connect_timeout_s: float, spoken: Spoken, client_out: Path) -> list[str]:
    """A normal window's Locust command (same users, ramp, duration, CSV, stats reset) as a master on 127.0.0.1
    that starts once `workers` workers are ready and gives up after `connect_timeout_s`. In open loop the
    locustfile runs one scheduler per worker, each at rate / workers."""
    cmd = locust_command(url, users, replace(cfg, workers=1), prefix, rate, spoken, client_out)
    return cmd + ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                  "--expect-workers", str(workers), "--expect-workers-max-wait", str(math.ceil(connect_timeout_s))]


def worker_command(port: int, reset_stats: bool, master_host: str = "127.0.0.1") -> list[str]:
    """One worker. --reset-stats is a worker's own option (Locust does not pass it on): with it, the worker
    restarts its samples when the master says the ramp-up is over, as the master restarts its totals."""
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", master_host,
           "--master-port", str(port), "--loglevel", "WARNING"]
    return cmd + (["--reset-stats"] if reset_stats else [])


class LocalCluster:
    """A headless Locust master on 127.0.0.1 for one window, and the workers start_worker() adds; wait() returns
    what windows.run_locust returns. Workers get the window's settings from the master (Locust passes its
    options on); each worker's log goes to `<tag>_worker<i>.log`."""

    def __init__(self, url: str, users: int, cfg: SweepConfig, out_dir: Path, tag: str, rate: float | None = None,
                 workers: int = 2, connect_timeout_s: float = 30.0, spoken: Spoken | None = None) -> None:
        if workers < 1 or not connect_timeout_s > 0:
            raise ConfigError(f"a distributed window needs workers >= 1 and a connect timeout > 0 "
                              f"(got {workers}, {connect_timeout_s})")
        self.cfg, self.out_dir, self.tag, self.workers = cfg, out_dir, tag, workers
        self.connect_timeout_s = connect_timeout_s
        self.client_out = out_dir / f"{tag}_client.json"
        for stale in sample_paths(self.client_out):  # a re-run with the same tag must not merge older samples
            stale.unlink()
        spoken = spoken or ours(cfg.model)
        self.env = locust_env(spoken)
        self.port = free_port()
        cmd = master_command(url, users, cfg, out_dir / tag, rate, workers, self.port, connect_timeout_s, spoken,
                             self.client_out)
        self.reset_stats = "--reset-stats" in cmd
        self.master = tethered(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        host_pinning().pin(self.master.pid, client=True)
        self.procs: list[subprocess.Popen] = []

    def start_worker(self) -> None:
        log = self.out_dir / f"{self.tag}_worker{len(self.procs)}.log"
        with open(log, "w", encoding="utf-8") as fh:  # the child keeps its own handle
            proc = tethered(worker_command(self.port, self.reset_stats), env=self.env, stdout=fh,
                            stderr=subprocess.STDOUT)
        host_pinning().pin(proc.pid, client=True)
        self.procs.append(proc)

    def wait(self) -> dict:
        """Run the window to its end; a master that gave up on its workers, or wrote no stats, is a BenchError."""
        limit = self.connect_timeout_s + self.cfg.ramp_s + self.cfg.duration_s + 120
        try:
            output, _ = self.master.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            self.close()
            raise BenchError(f"the Locust master of {self.tag} ran past {limit:.0f} s and was stopped") from None
        gave_up = GAVE_UP in output
        self._stop_workers(grace_s=0.0 if gave_up else 15.0)
        if gave_up:
            raise BenchError(self._connect_error())
        # the master merged its workers' figures and CPU
        return window_result(self.out_dir / self.tag, self.client_out, f"the Locust master of {self.tag}",
                             self.master.returncode, output)

    def _connect_error(self) -> str:
        dead = [f"worker {i} exited with {p.returncode} before: {_tail(self.out_dir / f'{self.tag}_worker{i}.log')}"
                for i, p in enumerate(self.procs) if p.returncode not in (None, 0, -9)]
        return (f"Locust workers did not connect: the master at 127.0.0.1:{self.port} waited "
                f"{math.ceil(self.connect_timeout_s)} s (--expect-workers-max-wait) for {self.workers} workers, "
                f"{len(self.procs)} started, and gave up" + ("; " + "; ".join(dead) if dead else ""))

    def _stop_workers(self, grace_s: float) -> None:
        """Workers leave on the master's quit message; one that never connected never hears it and is killed."""
        for proc in self.procs:
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                stop_group(proc)

    def close(self) -> None:
        """Kill whatever of this window is still running (only this cluster's own process groups)."""
        for proc in [self.master, *self.procs]:
            stop_group(proc)


def _tail(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").strip() if path.exists() else ""
    return text[-300:] or "(no output)"


def run_distributed(url: str, users: int, cfg: SweepConfig, out_dir: Path, tag: str, rate: float | None = None,
                    workers: int = 2, connect_timeout_s: float = 30.0, spoken: Spoken | None = None) -> dict:
    """One window as a master and `workers` local workers; the same result as windows.run_locust (its samples:
    sample_paths(out_dir / f"{tag}_client.json"), one file per worker)."""
    cluster = LocalCluster(url, users, cfg, out_dir, tag, rate, workers, connect_timeout_s, spoken)
    try:
        for _ in range(workers):
            cluster.start_worker()
        return cluster.wait()
    finally:
        cluster.close()


def samples_files(paths: Iterable[str | Path]) -> list[Path]:
    """The samples files named, or lying directly in the folders named (`*_samples_<pid>.csv`), each once, sorted."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            found.update(f.resolve() for f in p.glob(SAMPLES_GLOB) if f.is_file())
        elif p.is_file():
            found.add(p.resolve())
        else:
            raise BenchError(f"{p}: no such file or folder")
    return sorted(found)


def merge_samples(paths: Iterable[str | Path]) -> Samples:
    """Every worker's samples, from several machines or one, as one Samples set (see the module's docstring)."""
    paths = list(paths)
    files = samples_files(paths)
    if not files:
        raise BenchError(f"no samples files ({SAMPLES_GLOB}) in {', '.join(map(str, paths))}: did the workers run "
                         f"with --sb-client-out set?")
    return read_samples(files)


def merged_figures(samples: Samples, window_s: float = 2.0, duration_s: float | None = None) -> dict:
    """level_stats of the merged set, plus requests per file and the spread of the workers' timed starts."""
    stats = level_stats(samples, window_s, duration_s)
    per_file = [int((samples.process == i).sum()) for i in range(len(samples.paths))]
    return {**stats, "requests_per_file": per_file, "files": list(samples.paths),
            "timed_from_spread_s": float(np.ptp(samples.process_timed_from_s))}


def figures_text(f: dict) -> list[str]:
    def ci(key: str, spec: str) -> str:
        return interval(f.get(key), spec)

    lines = [f"files: {len(f['files'])} (requests {' / '.join(map(str, f['requests_per_file']))})",
             f"requests: {f['n']}, failures: {f['failures']}, latency from the {f['latency_from']} time"]
    if f["p50_ms"] is not None:
        lines.append("  ".join(f"P{q} {f[f'p{q}_ms']:.1f} ms {ci(f'p{q}_ms_ci95', '.1f')}" for q in (50, 95, 99)))
    qps = f"{f['qps']:.2f} req/s {ci('qps_ci95', '.2f')}" if f["qps"] is not None else "none (no whole window)"
    lines.append(f"QPS: {qps} over {f['windows']} windows of {f['window_s']:g} s")
    spread = f["timed_from_spread_s"]
    lines.append(f"timed starts spread over {spread:.3f} s (clock offset + message delay)")
    if not spread < f["window_s"] / 4:
        lines.append("warning: that is a large part of a QPS window; check the load machines' clocks (NTP)")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests.distributed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge the workers' samples files and print the level's figures")
    merge.add_argument("paths", nargs="+", help="samples files, or folders holding them (*_samples_<pid>.csv)")
    merge.add_argument("--window-s", type=float, default=2.0, help="QPS window length (default 2)")
    merge.add_argument("--duration", type=float, default=None,
                       help="the measured seconds (-t minus the ramp-up); default: as many whole windows as the data")
    merge.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def cmd_merge(args: argparse.Namespace) -> int:
    if not args.window_s > 0 or (args.duration is not None and not args.duration > 0):
        raise ConfigError(f"--window-s and --duration must be > 0 (got {args.window_s}, {args.duration})")
    figures = merged_figures(merge_samples(args.paths), args.window_s, args.duration)
    print(json.dumps(figures, indent=1) if args.json else "\n".join(figures_text(figures)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_entry(lambda: cmd_merge(args))


if __name__ == "__main__":
    raise SystemExit(main())
