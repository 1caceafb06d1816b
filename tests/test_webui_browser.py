"""The WebUI in real headless Chromium against a real service: its request reaches the API and the answer
is rendered as a chat bubble with the label and an emoji."""

import subprocess
import urllib.parse

import pytest

from loadtests.service_proc import ServiceProcess, ServiceVariant, metrics
from tests.browser import chromium_path, skip_without_chromium

pytestmark = [pytest.mark.e2e, skip_without_chromium]


def dump_dom(page: str, tmp_path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium that can reach 127.0.0.1 and nothing else
    (every other host name fails to resolve), so a page that needs a CDN shows it."""
    return subprocess.run([chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                           "--virtual-time-budget=15000", "--dump-dom", page],
                          capture_output=True, text=True, timeout=120).stdout


def test_webui_analyses_a_text_through_the_api(tiny_onnx, tmp_path):
    service = ServiceProcess("twin:tiny", ServiceVariant.of("webui", cache_size=0))
    try:
        url = service.wait_ready(300)
        before = metrics(url).get('requests_total{endpoint="/api/sentiment",status="200"}', 0.0)
        text = "这家店的服务很好，下次还来！"
        page = f"{url}/?text={urllib.parse.quote(text)}"
        dom = dump_dom(page, tmp_path)
        after = metrics(url).get('requests_total{endpoint="/api/sentiment",status="200"}', 0.0)
    finally:
        service.stop()
    assert after == before + 1  # the browser's fetch reached the API once
    assert 'class="msg user"' in dom and text in dom
    assert 'class="msg bot result"' in dom and ("😊" in dom or "😠" in dom) and "置信度" in dom


def test_api_docs_render_without_a_cdn(tiny_onnx, tmp_path):
    service = ServiceProcess("twin:tiny", ServiceVariant("docs"))
    try:
        url = service.wait_ready(300)
        dom = dump_dom(f"{url}/docs", tmp_path)
    finally:
        service.stop()
    assert "swagger-ui" in dom and "http://cdn" not in dom and "https://cdn" not in dom
    for path in ("/api/sentiment", "/api/sentiment/batch", "/healthz"):
        assert f'data-path="{path}"' in dom  # Swagger UI rendered the operations from /openapi.json
