"""Reading and checking request bodies: every malformed input becomes an ApiError naming the problem (4xx).

Status codes:
- 415: Content-Type missing, not JSON, or a charset other than UTF-8;
- 413: body over `max_body_bytes` (checked against Content-Length before reading, then against bytes received);
- 408: body not fully received within `request_timeout_s` (a client sending less than its Content-Length);
- 400: body empty, not UTF-8, or not JSON (truncated JSON, NaN/Infinity, absurd nesting, 5000-digit numbers);
- 422: JSON of the wrong shape: not an object; `text` missing, not a string, empty, whitespace or invisible
  characters only, containing unpaired surrogates, or longer than `max_text_chars`; for the batch endpoint
  `texts` missing, not an array, empty, over `max_batch_items`, or with bad items (each named by index).

A text over `max_text_chars` is 422, not 413: the body is within the transport limit; one field breaks a
documented rule, like any other field error.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from bench.service.cache import normalise
from bench.service.http import ApiError, with_timeout

JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
              float: "a number", type(None): "null"}


def json_type(value: Any) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def check_content_type(request: Request) -> None:
    raw = request.headers.get("content-type")
    if raw is None:
        raise ApiError(415, "missing Content-Type: send application/json", {"expected": "application/json"})
    media, _, params = raw.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise ApiError(415, f"unsupported Content-Type '{media}': send application/json",
                       {"expected": "application/json", "got": raw})
    charset = _charset(params)
    if charset not in (None, "utf-8", "utf8"):
        raise ApiError(415, f"unsupported charset '{charset}': the body must be UTF-8", {"got": raw})


def _charset(params: str) -> str | None:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refusing (413) as soon as the declared or the received size passes `limit`, and (408) a body
    that has not fully arrived within `timeout_s` (a client that sends less than its Content-Length)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body of {int(declared)} bytes is over the {limit}-byte limit",
                       {"limit_bytes": limit, "content_length": int(declared)})
    chunks: list[bytes] = []
    try:
        await with_timeout(_receive(request, chunks, limit), timeout_s)
    except asyncio.TimeoutError:
        received = sum(map(len, chunks))
        raise ApiError(408, f"the request body did not arrive within {timeout_s:g} s "
                            f"(got {received} of {declared or 'unknown'} bytes)", {"received_bytes": received},
                       headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise ApiError(400, "the request body ended early (client disconnected)") from None
    return b"".join(chunks)


async def _receive(request: Request, chunks: list[bytes], limit: int) -> None:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body is over the {limit}-byte limit", {"limit_bytes": limit})
        chunks.append(chunk)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(400, 'the request body is empty: send a JSON object such as {"text": "..."}')
    try:
        text = body.decode("utf-8-sig")  # a UTF-8 BOM is tolerated; anything not UTF-8 is refused
    except UnicodeDecodeError as exc:
        raise ApiError(400, "the request body is not valid UTF-8", {"byte_offset": exc.start}) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "the request body is not valid JSON: it nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers too long to convert
        raise ApiError(400, "the request body is not valid JSON", {"message": str(exc)[:200]}) from None


async def read_json_object(request: Request, limit: int, timeout_s: float) -> dict:
    check_content_type(request)
    payload = parse_json(await read_body(request, limit, timeout_s))
    if not isinstance(payload, dict):
        raise ApiError(422, f"the body must be a JSON object, got {json_type(payload)}", {"got": json_type(payload)})
    return payload


def text_problem(value: Any, max_chars: int, name: str = "text") -> str | None:
    """Why `value` is not an acceptable text, or None when it is."""
    if not isinstance(value, str):
        return f"'{name}' must be a string, got {json_type(value)}"
    if len(value) > max_chars:
        return f"'{name}' has {len(value)} characters, over the limit of {max_chars}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"'{name}' contains an unpaired surrogate (\\ud800-\\udfff), which is not text"
    if not any(ch.isprintable() for ch in normalise(value)):
        return f"'{name}' is empty or has no visible characters"
    return None


def require_text(payload: dict, max_chars: int) -> str:
    if "text" not in payload:
        raise ApiError(422, "missing field 'text'", {"field": "text", "got_fields": sorted(payload)[:20]})
    problem = text_problem(payload["text"], max_chars)
    if problem:
        raise ApiError(422, problem, {"field": "text"})
    return payload["text"]


def require_texts(payload: dict, max_chars: int, max_items: int) -> list[str]:
    texts = payload.get("texts")
    if "texts" not in payload:
        raise ApiError(422, "missing field 'texts'", {"field": "texts", "got_fields": sorted(payload)[:20]})
    if not isinstance(texts, list):
        raise ApiError(422, f"'texts' must be an array of strings, got {json_type(texts)}", {"field": "texts"})
    if not texts:
        raise ApiError(422, "'texts' is empty: send at least one text", {"field": "texts"})
    if len(texts) > max_items:
        raise ApiError(422, f"'texts' has {len(texts)} items, over the limit of {max_items}",
                       {"field": "texts", "max_items": max_items})
    problems = [{"index": i, "error": p} for i, t in enumerate(texts)
                if (p := text_problem(t, max_chars, f"texts[{i}]"))]
    if problems:
        raise ApiError(422, problems[0]["error"], {"field": "texts", "errors": problems})
    return texts
