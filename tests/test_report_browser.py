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
pytestmark = [pytest.mark.e2e, skip_without_chromium]  # the slow tier

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         # Belt and braces: even if the page asked for a remote host, the name would not resolve.
         "--host-resolver-rules=MAP * ~NOTFOUND"]

# Installed first in <head> so it sees everything: errors, console.error/warn, blocked (CSP) loads.
PROBE = """<script>
window.__probe = {errors: [], blocked: []};
window.addEventListener('error',
  e => __probe.errors.push(String(e.message || (e.target && (e.target.src || e.target.href)))), true);
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
    errors: __probe.errors, blocked: __probe.blocked,
    viewport: window.innerWidth, page: document.documentElement.scrollWidth,
    glance: [...document.querySelectorAll('table.t-glance')].map(t =>
      [Math.ceil(t.getBoundingClientRect().right), t.parentElement.scrollWidth, t.parentElement.clientWidth])});
  document.body.appendChild(pre);
  if (window.parent !== window) window.parent.postMessage(pre.textContent, '*');
});
</script>"""

# Headless Chromium's window is at least 500 px wide, so phone widths are an iframe of that width: the page's
# viewport (and its media queries) is the frame's, and the probe posts what it saw to this wrapper.
FRAME = """<!doctype html><html><body style="margin:0">
<iframe src="{src}" style="width:{width}px;height:900px;border:0"></iframe>
<script>
window.addEventListener('message', e => {{
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = e.data;
  document.body.appendChild(pre);
}});
</script></body></html>"""


def chromium(args: list, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([chromium_path(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=90)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    shutil.copy(DATA / "report_run_loadtests.json", folder / "results.json")
    return write_report(folder)[0]


@pytest.mark.e2e
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


def probed(report: Path, tmp_path: Path, width: int = 1280) -> tuple[dict, str]:
    """What the probe saw in a copy of the page at `width` CSS pixels, and the DOM as Chromium holds it."""
    page = report.read_text(encoding="utf-8")
    page = page.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';", 1)
    copy = tmp_path / f"probed-{width}.html"
    copy.write_text(page.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    if width < 500:
        frame = tmp_path / f"frame-{width}.html"
        frame.write_text(FRAME.format(src=copy.as_uri(), width=width), encoding="utf-8")
        copy = frame
    done = chromium(["--dump-dom", "--virtual-time-budget=10000", f"--window-size={max(width, 500)},900",
                     copy.as_uri()], tmp_path / f"profile-{width}")
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"probe did not report; chromium said: {done.stderr[-2000:]}"
    return json.loads(html_lib.unescape(match.group(1))), done.stdout


def assert_fits(seen: dict, width: int) -> None:
    """No horizontal overflow: the page is no wider than the window, and the decision's narrow table fits its
    box (its scroll container does not scroll) inside the window."""
    assert seen["viewport"] == width, seen["viewport"]
    assert seen["page"] <= width, f"the page is {seen['page']} px wide in a {width} px window"
    assert seen["glance"], "no decision table on the page"
    for right, content, box in seen["glance"]:
        assert content <= box and right <= width, (right, content, box, width)


@pytest.mark.parametrize("width", [1280, 390])  # a laptop, and a phone held upright
def test_the_decision_table_fits_a_laptop_and_a_phone_without_horizontal_overflow(report, tmp_path, width):
    seen, _ = probed(report, tmp_path, width)
    assert_fits(seen, width)


def test_dom_has_tables_decoded_images_no_errors_and_no_requests(report, tmp_path):
    page = report.read_text(encoding="utf-8")
    seen, _ = probed(report, tmp_path)
    assert seen["tables"] == page.count("<table") >= 8
    assert len(seen["images"]) == page.count("<img") >= 5
    assert all(complete and w > 0 and h > 0 for complete, w, h in seen["images"]), seen["images"]
    assert seen["errors"] == [] and seen["blocked"] == []
    assert [r for r in seen["requests"] if not r.startswith(("data:", "file:"))] == []
