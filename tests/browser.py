"""Headless Chromium for the browser tests, and what its absence means: off CI a skip that says why; in CI
(CI=true) a failure, since a browser test that skips there passes while testing nothing."""

from __future__ import annotations

import os
import shutil

import pytest

MISSING = "chromium is not installed (Debian: apt-get install chromium, or make test-deps)"


def find_chromium() -> str | None:
    """Debian's `chromium`, Ubuntu's `chromium-browser`, or /usr/bin/chromium when PATH lacks /usr/bin."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


CHROMIUM = find_chromium()
# Off CI the whole module is skipped up front; in CI its tests run and fail at their first call to chromium_path().
skip_without_chromium = pytest.mark.skipif(CHROMIUM is None and not in_ci(), reason=MISSING)


def chromium_path() -> str:
    """The Chromium binary; where there is none (reached only under CI=true), the calling test fails saying why."""
    if CHROMIUM is None:
        pytest.fail(f"{MISSING}; CI=true, so the browser tests must run, not skip", pytrace=False)
    return CHROMIUM
