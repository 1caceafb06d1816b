"""The exceptions the entry points turn into one clear `error:` line and exit code 2 (no traceback soup).

Anything else that escapes is a bug and keeps its traceback."""

from __future__ import annotations

from collections.abc import Callable


class BenchError(Exception):
    """A user-facing failure: bad input, unreachable hub, unwritable folder, failed gate."""


class ConfigError(BenchError, ValueError):
    """A setting out of range or unknown, raised by a config's validation before any work starts.

    Also a ValueError, so callers that validate values the Python way keep working."""


def run_entry(action: Callable[[], int]) -> int:
    """Call `action()` the way every entry point does: a BenchError is one `error:` line and exit code 2, Ctrl-C
    is exit code 130, anything else keeps its traceback (it is a bug)."""
    import sys

    try:
        return action()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
