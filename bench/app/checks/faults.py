"""python -m bench check faults: the load-bearing faults injected while Locust drives the service, with what each
cost. The service runs 2 replicas behind 2 fronts (the shape in which every fault is possible); one Locust window
runs through all of them:
- SIGKILL of a replica: its texts in flight are requeued and another replica answers them; the batcher starts a
  fresh one. Goal: no accepted request lost, back (both replicas up) within 5 s.
- SIGKILL of a front: the other front serves, the scheduler starts it again. Goal: back within 10 s. The requests
  on its connections die with it (a client retry covers them): counted, not a miss.
- SIGKILL of the scheduler (the model side: what the OOM killer picks): its fronts and replicas exit (no orphan, the
  port is freed) and a supervisor — this check, as systemd's Restart=always or Kubernetes would — starts the
  service again on the same port. Goal: ready again within 10 s, no process of the old one left.
Then SIGKILL of a `bench sweep` process after its first window: goal no finished window missing from its
results.json and neither its service nor its Locust left running. Exit 1 on a miss."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bench.app.checks.common import prepare_model, save, verdict
from bench.core import paths
from bench.core.errors import BenchError
from bench.core.processes import tree_pids

REPLICA_GOAL_S, FRONT_GOAL_S, SCHEDULER_GOAL_S = 5.0, 10.0, 10.0
USERS, WINDOW_S, FAULT_AT_S = 4, 16.0, 6.0
NOT_ACCEPTED = ("HTTP 503", "ConnectionRefused", "Connection refused")  # shed or never connected: not lost


def health(url: str) -> dict | None:
    """The service's /healthz body when it answers 200 (None otherwise)."""
    from loadtests.service_proc import get

    status, body = get(url + "/healthz", timeout=2)
    try:
        return json.loads(body) if status == 200 else None
    except ValueError:
        return None


def wait_until(test, timeout_s: float, step_s: float = 0.05) -> float | None:
    """Seconds until `test()` holds (None: not within `timeout_s`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if test():
            return time.monotonic() - t0
        time.sleep(step_s)
    return None


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            continue
    return out


def lost(causes: dict[str, int]) -> int:
    return sum(n for cause, n in causes.items() if not any(k in cause for k in NOT_ACCEPTED))


class Supervised:
    """The service under a supervisor: started on a fixed port, started again there when it dies."""

    def __init__(self, model: str, variant) -> None:
        from loadtests.targets import free_port

        self.model, self.variant, self.port = model, variant, free_port()
        self.generations: list = []
        self.start()

    def start(self) -> str:
        from loadtests.service_proc import ServiceProcess

        service = ServiceProcess(self.model, self.variant, ["--port", str(self.port)])
        self.generations.append(service)
        return service.wait_ready(300)

    @property
    def current(self):
        return self.generations[-1]

    def stop(self) -> None:
        for service in self.generations:
            service.stop()


def kill_replica(url: str, sup: "Supervised", figures: dict) -> None:
    pids = (health(url) or {}).get("replica_pids") or []
    os.kill(pids[0], signal.SIGKILL)
    figures["replica_recovery_s"] = wait_until(
        lambda: (h := health(url)) is not None and h.get("replicas_up") == 2 and pids[0] not in h["replica_pids"], 30)


def kill_front(url: str, sup: "Supervised", figures: dict) -> None:
    fronts: dict = {}
    wait_until(lambda: (h := health(url)) is not None and fronts.setdefault(h["front"], h["front_pid"]) and
               len(fronts) == 2, 10, 0.01)
    old = fronts[0]
    os.kill(old, signal.SIGKILL)
    figures["front_recovery_s"] = wait_until(
        lambda: (h := health(url)) is not None and h["front"] == 0 and h["front_pid"] != old, 30, 0.01)


def kill_scheduler(url: str, sup: "Supervised", figures: dict) -> None:
    old = sup.current
    children = [p for p in tree_pids(old.proc.pid) if p != old.proc.pid]
    t0 = time.monotonic()
    os.kill(old.proc.pid, signal.SIGKILL)
    old.proc.wait()
    figures["scheduler_children_gone_s"] = wait_until(lambda: not alive(children), 15)
    figures.setdefault("service_orphans", []).extend(alive(children))
    sup.start()  # the supervisor's restart, on the same port
    figures["scheduler_recovery_s"] = time.monotonic() - t0


FAULTS = {"replica": kill_replica, "front": kill_front, "scheduler": kill_scheduler}


def service_faults(model: str, out_dir: Path) -> dict:
    """One Locust window per fault, the fault injected FAULT_AT_S into it; failures counted per window."""
    from loadtests.service_proc import ServiceVariant
    from loadtests.windows import SweepConfig, ours, run_locust

    variant = ServiceVariant.of("faults", backend="ort-int8-cpu", replicas=2, threads=1, fronts=2)
    sup = Supervised(model, variant)
    url = f"http://127.0.0.1:{sup.port}"
    cfg = SweepConfig(model=model, users=(USERS,), duration_s=WINDOW_S, ramp_s=0.0, processes=1,
                      request_timeout_s=15.0)
    figures: dict = {"service_orphans": []}
    try:
        for name, inject in FAULTS.items():
            window: dict = {}
            load = threading.Thread(target=lambda w=window, tag=f"faults_{name}": w.update(
                run_locust(url, USERS, cfg, out_dir, tag, spoken=ours(model))), daemon=True)
            load.start()
            time.sleep(FAULT_AT_S)
            inject(url, sup, figures)
            print(f"[faults] {name} killed: back in {figures.get(f'{name}_recovery_s')} s", file=sys.stderr,
                  flush=True)
            load.join(WINDOW_S + 180)
            causes = window.get("client", {}).get("failure_causes", {})
            figures[name] = {"requests": int(float(window.get("row", {}).get("Request Count", 0) or 0)),
                             "failure_causes": causes, "accepted_lost": lost(causes)}
    finally:
        groups = [p for s in sup.generations for p in tree_pids(s.proc.pid)]
        sup.stop()
    if wait_until(lambda: not alive(groups), 10) is None:
        figures["service_orphans"] += alive(groups)
    return figures


def sweep_fault(model: str) -> dict:
    """`bench sweep` SIGKILLed after its first window: what its results.json kept, what it left running."""
    run_id = f"check-faults-sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = paths.results_dir() / run_id
    cmd = [sys.executable, "-m", "bench", "sweep", "--model", model, "--variants", "nobatch", "--users", "1,2,4",
           "--lt-duration", "6", "--ramp", "0", "--service-processes", "1", "--no-slo-search", "--run-id", run_id]
    sweep = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def saved_levels() -> int:
            try:
                return len(json.loads((run_dir / "results.json").read_text())["loadtests"])
            except (OSError, ValueError, KeyError):
                return 0

        wait_until(lambda: saved_levels() >= 1, 300, 0.2)
        time.sleep(2.0)  # into the second window
        procs = tree_pids(sweep.pid)
        sweep.kill()
        sweep.wait()
        # a window's client file is written when its Locust ends (its stats CSV is written all along)
        finished = len(list((run_dir / "loadtests").glob("*_client.json")))
        wait_until(lambda: not alive(procs), 10)
        return {"windows_finished": finished, "levels_saved": saved_levels(),
                "records_lost": max(0, finished - saved_levels()), "sweep_orphans": alive(procs)}
    finally:
        sweep.kill()


def check_faults(model: str) -> int:
    _, _, model_block = prepare_model(model)
    out_dir = paths.ensure_writable(paths.results_dir() / f"check-faults-{time.strftime('%Y%m%d-%H%M%S')}")
    figures = service_faults(model, out_dir)
    figures.update(sweep_fault(model))
    misses = []
    for what, goal in (("replica", REPLICA_GOAL_S), ("front", FRONT_GOAL_S), ("scheduler", SCHEDULER_GOAL_S)):
        took = figures[f"{what}_recovery_s"]
        shown = "not back" if took is None else f"{took:.1f} s"
        print(f"SIGKILL {what:<9}: recovered in {shown} (goal ≤ {goal:g} s)")
        if took is None or took > goal:
            misses.append(f"{what} recovery {shown} > {goal:g} s")
    for what in FAULTS:
        w = figures[what]
        causes = ", ".join(f"{k}: {v}" for k, v in w["failure_causes"].items()) or "none"
        print(f"  its window: {w['requests']} requests, failures by cause: {causes}; accepted and lost: "
              f"{w['accepted_lost']}")
    if figures["replica"]["accepted_lost"]:
        misses.append(f"{figures['replica']['accepted_lost']} accepted requests lost to a replica kill (goal 0)")
    cut = figures["front"]["accepted_lost"] + figures["scheduler"]["accepted_lost"]
    print(f"accepted requests lost: {figures['replica']['accepted_lost']} to the replica kill (goal 0); {cut} on the "
          f"connections of the killed front and scheduler (in flight there: a client's retry covers them)")
    orphans = figures["service_orphans"] + figures["sweep_orphans"]
    print(f"orphans: {len(orphans)} (goal 0)")
    print(f"bench sweep SIGKILLed: {figures['windows_finished']} windows finished, {figures['levels_saved']} levels "
          f"saved, records lost: {figures['records_lost']} (goal 0)")
    if orphans:
        misses.append(f"{len(orphans)} processes left running: {orphans}")
    if figures["records_lost"]:
        misses.append(f"{figures['records_lost']} finished windows missing from results.json")
    print(f"[check] saved {save('faults', model_block, figures)}", file=sys.stderr)
    return verdict(misses)


SOAK_KILL_EVERY = 5  # windows (minutes) between replica kills
SOAK_WINDOW_S = 60.0
RSS_GROWTH_GOAL, P95_GOAL = 0.10, 1.20


def check_soak(model: str, minutes: int = 30) -> int:
    """N one-minute open-loop windows at 80 % of the saturated rate, a replica SIGKILLed every 5 minutes (10 s into
    that window): the service's RSS growth, errors outside the kill windows, and P95 drift. Not in `make test`."""
    from loadtests.service_proc import ServiceProcess, ServiceVariant
    from loadtests.windows import SweepConfig, ours, run_locust

    if minutes < 2:
        raise BenchError(f"check soak needs at least 2 minutes (got {minutes})")
    _, _, model_block = prepare_model(model)
    out_dir = paths.ensure_writable(paths.results_dir() / f"check-soak-{time.strftime('%Y%m%d-%H%M%S')}")
    service = ServiceProcess(model, ServiceVariant.of("soak", backend="ort-int8-cpu", replicas=2, threads=1))
    windows: list[dict] = []
    try:
        url = service.wait_ready(300)
        closed = SweepConfig(model=model, users=(8,), duration_s=15.0, ramp_s=1.0, processes=1)
        saturated = float(run_locust(url, 8, closed, out_dir, "saturated", spoken=ours(model))["row"]["Requests/s"])
        rate = 0.8 * saturated
        print(f"[soak] saturated {saturated:.1f} req/s: {minutes} windows of {SOAK_WINDOW_S:g} s at {rate:.1f} req/s, "
              f"a replica killed every {SOAK_KILL_EVERY} minutes", file=sys.stderr, flush=True)
        cfg = SweepConfig(model=model, users=(64,), duration_s=SOAK_WINDOW_S, ramp_s=0.0, processes=1,
                          request_timeout_s=15.0)
        for i in range(minutes):
            kill = i > 0 and i % SOAK_KILL_EVERY == 0
            if kill:
                pid = (health(url) or {}).get("replica_pids", [None])[0]
                threading.Timer(10.0, os.kill, (pid, signal.SIGKILL)).start()
            result = run_locust(url, 64, cfg, out_dir, f"soak_{i:03d}", rate, ours(model))
            row, causes = result["row"], result["client"].get("failure_causes", {})
            windows.append({"window": i, "kill": kill, "qps": float(row["Requests/s"]),
                            "p95_ms": float(row["95%"]), "failures": int(float(row["Failure Count"])),
                            "failure_causes": causes, "rss_mb": service.rss_mb()})
            w = windows[-1]
            print(f"[soak] {i + 1}/{minutes}{' (replica killed)' if kill else ''}: {w['qps']:.1f} req/s, P95 "
                  f"{w['p95_ms']:.0f} ms, {w['failures']} failures, RSS {w['rss_mb']:.0f} MiB", file=sys.stderr,
                  flush=True)
    finally:
        service.stop()
    return soak_verdict(windows, model_block, saturated, rate)


def soak_verdict(windows: list[dict], model_block: dict, saturated: float, rate: float) -> int:
    first, last = windows[0], windows[-1]
    growth = last["rss_mb"] / first["rss_mb"] - 1
    quiet = [w for w in windows if not w["kill"]]
    errors = sum(w["failures"] for w in quiet)
    drift = max(w["p95_ms"] for w in quiet) / first["p95_ms"]
    killed = [w for w in windows if w["kill"]]
    print(f"soak: {len(windows)} windows at {rate:.1f} req/s (80 % of {saturated:.1f}), {len(killed)} replica kills")
    print(f"RSS {first['rss_mb']:.0f} → {last['rss_mb']:.0f} MiB: growth {100 * growth:+.1f} % "
          f"(goal ≤ {100 * RSS_GROWTH_GOAL:.0f} %)")
    print(f"failures outside the kill windows: {errors} (goal 0); in the kill windows: "
          f"{sum(w['failures'] for w in killed)}")
    print(f"worst P95 outside the kill windows / the first window's: {drift:.2f} (goal ≤ {P95_GOAL:g})")
    misses = []
    if growth > RSS_GROWTH_GOAL:
        misses.append(f"RSS grew {100 * growth:.1f} %")
    if errors:
        misses.append(f"{errors} failures outside the kill windows")
    if drift > P95_GOAL:
        misses.append(f"P95 drifted to {drift:.2f} × the first window's")
    figures = {"saturated_qps": saturated, "rate": rate, "rss_growth": growth, "errors_outside_kills": errors,
               "p95_drift": drift, "windows": windows}
    print(f"[check] saved {save('soak', model_block, figures)}", file=sys.stderr)
    return verdict(misses)
