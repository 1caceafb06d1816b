"""SIGTERM and SIGHUP become bench.core.errors.Terminated, which unwinds (every `finally` runs) and exits 128 + the
signal through run_entry; a second signal while unwinding is ignored."""

from __future__ import annotations

import os
import signal

import pytest

from bench.core.errors import Terminated, raise_on_terminate, run_entry

pytestmark = pytest.mark.faults


@pytest.fixture
def handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("signum", (signal.SIGTERM, signal.SIGHUP))
def test_a_signal_unwinds_through_finally_and_exits_128_plus_it(handlers, signum, capsys):
    raise_on_terminate()
    cleaned = []

    def command() -> int:
        try:
            os.kill(os.getpid(), signum)
            return 0
        finally:
            cleaned.append(signum)
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal during the clean-up: ignored, not raised

    assert run_entry(command) == 128 + signum and cleaned == [signum]
    assert "terminated" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert issubclass(Terminated, BaseException) and not issubclass(Terminated, Exception)  # no `except Exception`
