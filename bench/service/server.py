"""Running an ASGI app under uvicorn on a socket we bind ourselves, so port 0 yields a known, free port."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

BACKLOG = 2048


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; connections made before uvicorn starts wait in the backlog instead of failing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only when it does, and without
    # NODELAY a keep-alive response written in two parts waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_config(app, log_level: str = "warning", graceful_s: float | None = None) -> uvicorn.Config:
    return uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=graceful_s,
                          backlog=BACKLOG)


class ThreadedServer:
    """uvicorn on a background thread (for tests and notebooks): `with ThreadedServer(app) as url: ...`.

    Leaving the block asks the server to exit the way SIGTERM would: in-flight requests finish first."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.sock = bind_socket(host, port)
        self.url = url_of(self.sock)
        self.server = uvicorn.Server(uvicorn_config(app, log_level))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="bench-uvicorn")

    def start(self, timeout: float = 30.0) -> str:
        self.thread.start()
        end = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self.url

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_uvicorn(app, sock, log_level: str, graceful_s: float, service) -> None:
    """uvicorn on `sock` in the foreground until SIGTERM/SIGINT (or the model side fails to load)."""
    import signal

    server = uvicorn.Server(uvicorn_config(app, log_level, graceful_s=graceful_s))
    service.on_failure = lambda: setattr(server, "should_exit", True)
    # uvicorn re-raises a handled SIGTERM once it has drained; under the default handler that kills the process
    # (exit -15) after a clean shutdown. This handler asks for the same graceful exit, so serve() returns 0.
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    server.run(sockets=[sock])
