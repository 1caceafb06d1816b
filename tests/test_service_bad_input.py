"""Malformed requests against a real server on the tiny twin: each gets a 4xx JSON error that names the problem
(never a 500, never a stack trace), carries Server-Timing, and the server still answers a good request after."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from bench.service.app import create_app
from bench.service.config import ServiceConfig
from bench.service.server import ThreadedServer

JSON = {"content-type": "application/json"}
API, BATCH = "/api/sentiment", "/api/sentiment/batch"
BODY_TIMEOUT_S = 1.0


def j(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


# (id, method, path, headers, body, status, words the error must contain)
CASES = [
    ("no-content-type", "POST", API, {}, j({"text": "好"}), 415, "content-type"),
    ("text-plain", "POST", API, {"content-type": "text/plain"}, j({"text": "好"}), 415, "text/plain"),
    ("form", "POST", API, {"content-type": "application/x-www-form-urlencoded"}, b"text=%E5%A5%BD", 415,
     "x-www-form-urlencoded"),
    ("latin1-charset", "POST", API, {"content-type": "application/json; charset=latin-1"}, j({"text": "a"}), 415,
     "charset"),
    ("empty-body", "POST", API, JSON, b"", 400, "empty"),
    ("invalid-json", "POST", API, JSON, b"{text: 'a'}", 400, "not valid json"),
    ("truncated-json", "POST", API, JSON, b'{"text": "\xe5\xa5\xbd', 400, "not valid"),
    ("invalid-utf8", "POST", API, JSON, b'{"text": "\xff\xfe"}', 400, "utf-8"),
    ("nan", "POST", API, JSON, b'{"text": NaN}', 400, "not valid json"),
    ("deep-nesting", "POST", API, JSON, b"[" * 30000 + b"]" * 30000, 400, "nests too deeply"),
    ("5000-digit-number", "POST", API, JSON, b'{"text": 1' + b"0" * 5000 + b"}", 400, "not valid json"),
    ("body-too-large", "POST", API, JSON, j({"text": "a" * 70000}), 413, "limit"),
    ("chunked-too-large", "POST", API, JSON, [b'{"text": "', b"a" * 70000, b'"}'], 413, "limit"),
    ("top-level-array", "POST", API, JSON, j(["好"]), 422, "json object"),
    ("top-level-string", "POST", API, JSON, j("好"), 422, "json object"),
    ("top-level-null", "POST", API, JSON, b"null", 422, "json object"),
    ("missing-text", "POST", API, JSON, j({}), 422, "missing field 'text'"),
    ("misspelt-key", "POST", API, JSON, j({"txt": "好"}), 422, "missing field 'text'"),
    ("empty-text", "POST", API, JSON, j({"text": ""}), 422, "empty"),
    ("whitespace-text", "POST", API, JSON, j({"text": "  \n\t "}), 422, "empty"),
    ("ideographic-space", "POST", API, JSON, j({"text": "\u3000\u3000"}), 422, "empty"),
    ("zero-width-only", "POST", API, JSON, j({"text": "\u200b\u200b"}), 422, "visible"),
    ("text-int", "POST", API, JSON, j({"text": 123}), 422, "must be a string"),
    ("text-float", "POST", API, JSON, j({"text": 1.5}), 422, "must be a string"),
    ("text-bool", "POST", API, JSON, j({"text": True}), 422, "must be a string"),
    ("text-null", "POST", API, JSON, j({"text": None}), 422, "must be a string, got null"),
    ("text-list", "POST", API, JSON, j({"text": ["好"]}), 422, "must be a string, got an array"),
    ("text-object", "POST", API, JSON, j({"text": {"a": 1}}), 422, "must be a string, got an object"),
    ("text-too-long", "POST", API, JSON, j({"text": "好" * 2001}), 422, "over the limit of 2000"),
    ("lone-surrogate", "POST", API, JSON, b'{"text": "\\ud800abc"}', 422, "surrogate"),
    ("get", "GET", API, {}, None, 405, "not allowed"),
    ("put", "PUT", API, JSON, j({"text": "好"}), 405, "not allowed"),
    ("delete", "DELETE", API, {}, None, 405, "not allowed"),
    ("unknown-post", "POST", "/api/sentimentz", JSON, j({"text": "好"}), 404, "no such route"),
    ("unknown-get", "GET", "/nope/../etc", {}, None, 404, "no such route"),
    ("batch-no-content-type", "POST", BATCH, {}, j({"texts": ["好"]}), 415, "content-type"),
    ("batch-missing", "POST", BATCH, JSON, j({"text": "好"}), 422, "missing field 'texts'"),
    ("batch-not-list", "POST", BATCH, JSON, j({"texts": "好"}), 422, "must be an array"),
    ("batch-empty", "POST", BATCH, JSON, j({"texts": []}), 422, "empty"),
    ("batch-too-many", "POST", BATCH, JSON, j({"texts": ["好"] * 65}), 422, "over the limit of 64"),
    ("batch-mixed", "POST", BATCH, JSON, j({"texts": ["好", 3, "不错", ""]}), 422, "texts[1]"),
    ("batch-null-item", "POST", BATCH, JSON, j({"texts": [None]}), 422, "texts[0]"),
    ("batch-invalid-json", "POST", BATCH, JSON, b'{"texts": ["a",]}', 400, "not valid json"),
    ("batch-get", "GET", BATCH, {}, None, 405, "not allowed"),
    ("metrics-post", "POST", "/metrics", JSON, j({}), 405, "not allowed"),
    ("healthz-post", "POST", "/healthz", JSON, j({}), 405, "not allowed"),
]


@pytest.fixture(scope="module")
def server(tiny_model, tiny_onnx):
    config = ServiceConfig(model="twin:tiny", backend="ort-int8-cpu", onnx_dir=str(tiny_onnx[0]), threads=1,
                           request_timeout_s=BODY_TIMEOUT_S, warmup_runs=1)
    with ThreadedServer(create_app(config)) as url, httpx.Client(base_url=url, timeout=30) as client:
        end = time.monotonic() + 30
        while client.get("/healthz").status_code != 200 and time.monotonic() < end:
            time.sleep(0.02)
        yield client


def assert_json_error(resp: httpx.Response, status: int, words: str = "") -> dict:
    assert resp.status_code == status, resp.text[:300]
    assert resp.headers["content-type"] == "application/json"
    assert "total;dur=" in resp.headers["server-timing"]
    body = resp.json()
    assert isinstance(body["error"], str) and body["error"] and "detail" in body
    assert words.lower() in body["error"].lower()
    assert "Traceback" not in resp.text
    return body


def assert_still_serving(client: httpx.Client) -> None:
    resp = client.post(API, json={"text": "服务仍然正常"})
    assert resp.status_code == 200 and resp.json()["label"] in {"负面", "正面"}


def test_table_has_enough_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_json_4xx(server, case):
    _, method, path, headers, body, status, words = case
    content = iter(body) if isinstance(body, list) else body
    resp = server.request(method, path, headers=headers, content=content)
    assert_json_error(resp, status, words)
    assert_still_serving(server)


def test_batch_error_names_every_bad_index(server):
    resp = server.post(BATCH, json={"texts": ["好", 3, "不错", "", None]})
    detail = assert_json_error(resp, 422, "texts[1]")["detail"]
    assert [e["index"] for e in detail["errors"]] == [1, 3, 4]


def test_405_keeps_allow_header(server):
    assert server.get(API).headers["allow"] == "POST"


def raw_exchange(url: str, request: bytes, wait_s: float = 10.0) -> bytes:
    """Send bytes as-is over TCP (for what httpx will not send) and read until the server closes or replies."""
    host, port = url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 1 << 30


def test_declared_content_length_over_limit_refused_before_reading(server):
    head = (b"POST /api/sentiment HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n")
    reply = raw_exchange(str(server.base_url), head)
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 413 " in status_line and b"server-timing" in rest.lower()
    assert "limit" in json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]
    assert_still_serving(server)


def test_body_shorter_than_content_length_times_out_with_408(server):
    head = b"POST /api/sentiment HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    start = time.monotonic()
    reply = raw_exchange(str(server.base_url), head + b'{"text": "ab')
    assert b" 408 " in reply.partition(b"\r\n")[0] and time.monotonic() - start < BODY_TIMEOUT_S + 5
    assert "did not arrive" in json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]
    assert_still_serving(server)


def test_client_vanishing_mid_body_leaves_server_healthy(server):
    head = b"POST /api/sentiment HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    host, port = str(server.base_url).split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head + b'{"text": "ab')
    assert_still_serving(server)
