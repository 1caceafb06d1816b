"""report.html in a real headless Chromium: it renders (non-blank screenshot), every table is in the DOM, every
plot decodes to an image of non-zero size, there are no console or page errors, and no request leaves the page.

Chromium is driven from the command line only: `--screenshot` for the picture, `--dump-dom` for the checks. For
the checks a copy of the page gets a small probe script (the report itself has none); after the load event it
writes what it saw as JSON into a <pre id="probe"> element, which --dump-dom then prints.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports.render import write_report
from tests.browser import chromium_path, skip_without_chromium

DATA = Path(__file__).parent / "data"
pytestmark = skip_without_chromium

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         # Belt and braces: even if the page asked for a remote host, the name would not resolve.
         "--host-resolver-rules=MAP * ~NOTFOUND"]

# Installed first in <head> so it sees everything: errors, console.error/warn, blocked (CSP) loads.
PROBE = """<script>
window.__probe = {errors: [], blocked: []};
window.addEventListener('error', e => __probe.errors.push(String(e.message || (e.target && (e.target.src || e.target.href)))), true);
document.addEventListener('securitypolicyviolation', e => __probe.blocked.push(e.blockedURI));
for (const level of ['error', 'warn']) {
  const original = console[level];
  console[level] = (...args) => { __probe.errors.push(level + ': ' + args.join(' ')); original.apply(console, args); };
}
window.addEventListener('load', () => {
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify({
    tables: document.querySelectorAll('table').length,
    images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
    requests: performance.getEntriesByType('resource').map(r => r.name),
    errors: __probe.errors, blocked: __probe.blocked});
  document.body.appendChild(pre);
});
</script>"""


def chromium(args: list, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([chromium_path(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=90)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    shutil.copy(DATA / "report_run_loadtests.json", folder / "results.json")
    return write_report(folder)[0]


def test_screenshot_is_produced_and_not_blank(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    done = chromium([f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri()], tmp_path / "profile")
    assert shot.is_file(), f"no screenshot; chromium said: {done.stderr[-2000:]}"
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 4000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50, "screenshot is (nearly) one colour: the page did not render"
    white = max(colours)[0] / (image.size[0] * image.size[1])
    assert white < 0.97, f"{white:.0%} of the screenshot is one colour"


def test_dom_has_tables_decoded_images_no_errors_and_no_requests(report, tmp_path):
    page = report.read_text(encoding="utf-8")
    probed = page.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';", 1)
    probed = probed.replace("<head>", "<head>\n" + PROBE, 1)
    copy = tmp_path / "probed.html"
    copy.write_text(probed, encoding="utf-8")
    done = chromium(["--dump-dom", "--virtual-time-budget=10000", copy.as_uri()], tmp_path / "profile")
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"probe did not report; chromium said: {done.stderr[-2000:]}"
    seen = json.loads(html_lib.unescape(match.group(1)))
    assert seen["tables"] == page.count("<table") >= 8
    assert len(seen["images"]) == page.count("<img") >= 5
    assert all(complete and w > 0 and h > 0 for complete, w, h in seen["images"]), seen["images"]
    assert seen["errors"] == [] and seen["blocked"] == []
    assert [r for r in seen["requests"] if not r.startswith(("data:", "file:"))] == []
