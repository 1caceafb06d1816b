"""HTTP plumbing shared by every route: the one error shape, the exception handlers that produce it, and the
middleware that stamps `Server-Timing` on every response (errors included) and counts requests.

Every error is JSON `{"error": "<what is wrong>", "detail": ...}`; no stack trace ever reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("bench.service")
TIMING_KEY = "bench.timing"
ENDPOINTS = ("/", "/api/sentiment", "/api/sentiment/batch", "/api/embed", "/healthz", "/metrics", "/docs",
             "/openapi.json")
KIND_BY_STATUS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "body_timeout",
                  413: "too_large", 415: "unsupported_media_type", 422: "invalid_input", 500: "internal",
                  503: "unavailable", 504: "timeout"}


async def with_timeout(awaitable, seconds: float):
    """`await awaitable`, raising asyncio.TimeoutError past `seconds`. asyncio.timeout (3.11+) where it exists:
    wait_for wraps the awaitable in a task of its own, and a request awaits two (its body, its answer). With the
    answer's response built directly (app.py), the front's CPU per request fell (docs/measurements.md)."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


class ApiError(Exception):
    """An error answer: HTTP status, a sentence naming the problem, optional detail, metric kind, headers."""

    def __init__(self, status: int, error: str, detail: Any = None, kind: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail
        self.kind = kind or KIND_BY_STATUS.get(status, "other")
        self.headers = dict(headers or {})


def unavailable(error: str, kind: str, detail: Any = None) -> ApiError:
    """503 that tells the client when to come back."""
    return ApiError(503, error, detail, kind, {"Retry-After": "1"})


@dataclass
class RequestTiming:
    """Per-request phases in milliseconds; routes fill them, the middleware reports them."""

    queue_ms: float = 0.0
    tokenize_ms: float = 0.0
    inference_ms: float = 0.0
    model_ms: float = 0.0  # the model call's own time in the process that runs it (≤ inference_ms)
    batch_size: int | None = None
    replica: int | None = None  # which model replica computed it (the slowest batch's, for several texts)

    def header(self, total_ms: float) -> str:
        replica = "" if self.replica is None else f', replica;desc="{self.replica}"'
        return (f"queue;dur={self.queue_ms:.3f}, tokenize;dur={self.tokenize_ms:.3f}, "
                f"inference;dur={self.inference_ms:.3f}, model;dur={self.model_ms:.3f}, total;dur={total_ms:.3f}"
                f"{replica}")


def request_timing(request: Request) -> RequestTiming:
    timing = request.scope.get(TIMING_KEY)
    return timing if isinstance(timing, RequestTiming) else RequestTiming()


def error_body(error: str, detail: Any = None) -> dict:
    return {"error": error, "detail": detail}


def install_error_handlers(app: FastAPI, count: Callable[[str], None]) -> None:
    """Route every error FastAPI or Starlette raises through the one JSON shape; `count` gets each kind."""

    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        count(exc.kind)
        return JSONResponse(error_body(exc.error, exc.detail), exc.status, headers=exc.headers)

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error, detail = describe_http_error(request, exc)
        count(KIND_BY_STATUS.get(exc.status_code, "other"))
        return JSONResponse(error_body(error, detail), exc.status_code, headers=dict(exc.headers or {}))

    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        count("invalid_input")
        problems = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return JSONResponse(error_body("invalid request", problems), 422)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)


def describe_http_error(request: Request, exc: StarletteHTTPException) -> tuple[str, Any]:
    method, path = request.method, request.url.path
    if exc.status_code == 404:
        return f"no such route: {method} {path}", {"method": method, "path": path}
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return f"method {method} is not allowed on {path}", {"allowed": [m.strip() for m in allowed.split(",") if m]}
    return str(exc.detail), None


class TimingMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would run routes in another task). Adds Server-Timing and
    X-Batch-Size, records requests_total and latency, and turns an unexpected exception into a JSON 500."""

    def __init__(self, app, observe: Callable[[str, int, float], None], count: Callable[[str], None]) -> None:
        self.app, self.observe, self.count = app, observe, count

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timing, start, state = RequestTiming(), time.perf_counter(), {"status": 500, "started": False}
        scope[TIMING_KEY] = timing

        async def send_with_timing(message) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                add_timing_headers(message, timing, 1000 * (time.perf_counter() - start))
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        except Exception as exc:  # a bug must still end as JSON, never as a stack trace to the client
            log.error("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            if state["started"]:
                raise
            self.count("internal")
            await send_internal_error(send_with_timing)
        finally:
            path = scope.get("path", "")
            self.observe(path if path in ENDPOINTS else "other", state["status"], time.perf_counter() - start)


def add_timing_headers(message: dict, timing: RequestTiming, total_ms: float) -> None:
    headers = MutableHeaders(scope=message)
    headers.append("Server-Timing", timing.header(total_ms))
    if timing.batch_size is not None:
        headers.append("X-Batch-Size", str(timing.batch_size))


async def send_internal_error(send) -> None:
    await send_json(send, 500, error_body("internal error"))


async def send_json(send, status: int, payload: dict, headers: tuple = ()) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class ShedMiddleware:
    """Refuse inference requests at once while the queue has no room: the same 503 and Retry-After the route would
    give, without routing, reading or parsing the body. Under overload most requests are refused, and on a small
    host the CPU those refusals cost is taken from the model (`check overload`)."""

    PATHS = ("/api/sentiment", "/api/sentiment/batch", "/api/embed")

    def __init__(self, app, full: Callable[[], str | None], count: Callable[[str], None]) -> None:
        self.app, self.full, self.count = app, full, count

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") in self.PATHS:
            why = self.full()
            if why:
                self.count("queue_full")
                await send_json(send, 503, error_body(f"the server is busy: {why}"), ((b"retry-after", b"1"),))
                return
        await self.app(scope, receive, send)
