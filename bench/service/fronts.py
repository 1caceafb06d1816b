"""Several HTTP front processes feeding one model scheduler, for when one front's CPU is the limit.

A front's CPU per request (HTTP parsing, JSON, input checks, the route) caps one process at 1 / that figure
requests per second per core, whatever the model behind it can do (`/metrics`: structbench_front_cpu_seconds /
structbench_front_requests_total; docs/service.md says how to read it). With `--fronts N`:
- this process binds the socket, holds the model side — the one admission queue, batcher, cache, replicas
  (bench.service.runtime.Service) — and serves it to the fronts on a Unix socket in a private temporary folder;
- N front processes (spawned, each with its own GIL) accept connections on the one listening socket and run the
  FastAPI app with a `RemoteService`: each request's texts go to the scheduler and its answers come back, so texts
  from every front meet in one queue and batch together — batching is not split N ways;
- request metrics and each front's CPU seconds are sent to the scheduler, so /metrics on any front shows the whole
  service; /healthz is the scheduler's, plus the answering front's index.
Messages are length-prefixed pickles between processes of this service only (the socket's folder is private).
SIGTERM or SIGINT: the fronts finish their in-flight requests and exit, then the model side drains and stops; a
front that dies is started again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import shutil
import signal
import tempfile
import time
from dataclasses import asdict

from bench.service.config import ServiceConfig
from bench.service.http import ApiError, RequestTiming, unavailable

log = logging.getLogger("bench.service")
HEADER = 4  # bytes of a frame's length
CONNECT_S = 30.0  # a front waits this long for the scheduler's socket at start


async def read_frame(reader: asyncio.StreamReader):
    size = int.from_bytes(await reader.readexactly(HEADER), "big")
    return pickle.loads(await reader.readexactly(size))


def write_frame(writer: asyncio.StreamWriter, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(len(data).to_bytes(HEADER, "big") + data)


# --- the scheduler side (the service's main process) -----------------------------------------------------------

async def serve_front(service, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One front's connection: requests answered as they complete (each analyse is its own task, so a slow batch
    does not hold the others), metrics observations recorded."""
    tasks: set = set()
    try:
        while True:
            kind, *args = await read_frame(reader)
            if kind == "analyse":
                task = asyncio.create_task(_answer(service, writer, *args))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif kind == "health":
                write_frame(writer, (args[0], await service.health()))
            elif kind == "metrics":
                write_frame(writer, (args[0], await service.metrics_text()))
            elif kind == "observe":
                front, endpoint, status, seconds, cpu_s = args
                service.metrics.observe_request(endpoint, status, seconds, front, cpu_s)
            elif kind == "count":
                service.metrics.count_error(args[0])
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the front exited
    finally:
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()


async def _answer(service, writer: asyncio.StreamWriter, rid: int, texts: list[str],
                  task: str = "classification") -> None:
    timing = RequestTiming()
    try:
        reply = ("ok", await service.analyse(texts, timing, task), asdict(timing))
    except ApiError as exc:
        reply = ("api_error", exc.status, exc.error, exc.detail, exc.kind, exc.headers)
    except Exception as exc:  # noqa: BLE001  a bug answers 500 on the front, never kills the scheduler
        log.error("scheduler: unexpected error", exc_info=exc)
        reply = ("api_error", 500, "internal error", None, "internal", {})
    if not writer.is_closing():
        write_frame(writer, (rid, reply))


def serve_fronts(config: ServiceConfig, log_level: str) -> int:
    """The scheduler process: bind, load the model side, start the fronts, run until SIGTERM/SIGINT."""
    from bench.service.runtime import Service
    from bench.service.server import bind_socket, url_of

    service = Service(config)
    sock = bind_socket(config.host, config.port)
    folder = tempfile.mkdtemp(prefix="structbench-fronts-")  # mode 0700: only this user reaches the socket
    path = os.path.join(folder, "scheduler.sock")
    try:
        asyncio.run(_schedule(config, service, sock, path, log_level, url_of(sock)))
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if service.status == "failed" else 0


async def _schedule(config: ServiceConfig, service, sock, path: str, log_level: str, url: str) -> None:
    import multiprocessing

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service.on_failure = lambda: loop.call_soon_threadsafe(stop.set)
    server = await asyncio.start_unix_server(lambda r, w: serve_front(service, r, w), path)
    await service.open()
    ctx = multiprocessing.get_context("spawn")  # fork would copy this process's threads and the model's state

    def start(index: int):
        proc = ctx.Process(target=front_main, args=(config, path, index, sock, log_level), name=f"bench-front-{index}")
        proc.start()
        return proc

    fronts = [start(i) for i in range(config.fronts)]
    log.info("%d front processes serve %s", config.fronts, url)
    print(f"listening on {url}", flush=True)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            for i, proc in enumerate(fronts):
                if not proc.is_alive() and not stop.is_set():
                    log.warning("front %d exited with code %s; starting it again", i, proc.exitcode)
                    fronts[i] = start(i)
    for proc in fronts:  # SIGTERM: each front stops accepting, finishes its in-flight requests, exits
        if proc.is_alive():
            proc.terminate()
    grace = config.request_timeout_s * 3 + 10
    await asyncio.to_thread(lambda: [proc.join(grace) for proc in fronts])
    for proc in fronts:
        if proc.is_alive():
            proc.kill()
    server.close()
    await server.wait_closed()
    await service.close()


# --- the front side -------------------------------------------------------------------------------------------

def front_main(config: ServiceConfig, path: str, index: int, sock, log_level: str) -> None:
    """A front process: the FastAPI app on the shared listening socket, its model side the scheduler."""
    from bench.core.quiet import quiet_libraries
    from bench.service.app import create_app
    from bench.service.server import run_uvicorn

    quiet_libraries()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the scheduler stops the fronts
    service = RemoteService(config, path, index)
    run_uvicorn(create_app(config, service=service), sock, log_level, config.request_timeout_s * 3, service)


class FrontMetrics:
    """What the app's middleware and error handlers record, sent to the scheduler's metrics."""

    def __init__(self, link: "RemoteService") -> None:
        self.link = link

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.link.send(("observe", self.link.index, endpoint, status, seconds, time.process_time()))

    def count_error(self, kind: str) -> None:
        self.link.send(("count", kind))


class RemoteService:
    """The model side as a front sees it: the same calls as bench.service.runtime.Service, answered by the
    scheduler over its Unix socket."""

    def __init__(self, config: ServiceConfig, path: str, index: int) -> None:
        self.config, self.path, self.index = config, path, index
        self.metrics = FrontMetrics(self)
        self.on_failure = None  # run_uvicorn sets it; a front has no load of its own to fail
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._closing = False

    async def open(self) -> None:
        end = time.monotonic() + CONNECT_S
        while True:
            try:
                reader, self._writer = await asyncio.open_unix_connection(self.path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > end:
                    raise RuntimeError(f"front {self.index}: no model scheduler at {self.path}") from None
                await asyncio.sleep(0.05)
        self._reader_task = asyncio.create_task(self._read(reader))

    async def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                rid, reply = await read_frame(reader)
                future = self._pending.pop(rid, None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        gone = unavailable("the model scheduler went away", "not_ready")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(gone)
        self._pending.clear()
        if not self._closing:  # the scheduler died (killed, OOM): a front without it only holds the port
            log.error("front %d: the model scheduler went away; this front exits", self.index)
            os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown releases the listening socket

    def send(self, message) -> None:
        if self._writer is not None and not self._writer.is_closing():
            write_frame(self._writer, message)

    async def _call(self, kind: str, *args):
        if self._writer is None or self._writer.is_closing():
            raise unavailable("the model scheduler is not reachable", "not_ready")
        rid = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        write_frame(self._writer, (kind, rid, *args))
        try:  # the scheduler answers every call within its own timeouts; past this it is stuck
            return await asyncio.wait_for(future, self.config.request_timeout_s * 3)
        except asyncio.TimeoutError:
            self._pending.pop(rid, None)
            raise unavailable(f"the model scheduler gave no answer within {self.config.request_timeout_s * 3:g} s",
                              "not_ready") from None

    async def analyse(self, texts, timing: RequestTiming, task: str = "classification") -> list[dict]:
        reply = await self._call("analyse", list(texts), task)
        if reply[0] == "api_error":
            raise ApiError(*reply[1:])
        _, answers, fields = reply
        for name, value in fields.items():
            setattr(timing, name, value)
        return answers

    async def health(self) -> tuple[dict, int, dict]:
        body, status, headers = await self._call("health")
        return {**body, "front": self.index, "front_pid": os.getpid()}, status, headers

    async def metrics_text(self) -> str:
        return await self._call("metrics")

    def queue_full(self) -> str | None:
        """A front does not see the scheduler's queue: a full queue answers 503 from the scheduler instead."""
        return None
