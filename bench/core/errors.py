"""The exceptions the entry points turn into one clear `error:` line and exit code 2 (no traceback soup).

Anything else that escapes is a bug and keeps its traceback."""

from __future__ import annotations

from collections.abc import Callable


class BenchError(Exception):
    """A user-facing failure: bad input, unreachable hub, unwritable folder, failed gate."""


class ConfigError(BenchError, ValueError):
    """A setting out of range or unknown, raised by a config's validation before any work starts.

    Also a ValueError, so callers that validate values the Python way keep working."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: it unwinds the stack as Ctrl-C does, so every `finally` runs and the services and
    Locust processes a command started are stopped (by default Python dies at once and leaves them running)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def raise_on_terminate() -> None:
    """Turn SIGTERM and SIGHUP into Terminated (main thread). A second signal while unwinding is ignored, so the
    clean-up it started is not itself cut short."""
    import signal

    def handler(signum: int, _frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def run_entry(action: Callable[[], int]) -> int:
    """Call `action()` the way every entry point does: a BenchError is one `error:` line and exit code 2, Ctrl-C
    is exit code 130, SIGTERM/SIGHUP (with raise_on_terminate) 128 + the signal, anything else keeps its traceback
    (it is a bug)."""
    import sys

    try:
        return action()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"terminated (signal {exc.signum}): services and load generators stopped", file=sys.stderr)
        return 128 + exc.signum
