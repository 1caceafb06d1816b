"""The one exception type the CLI turns into a single clear error line (no traceback soup)."""


class BenchError(Exception):
    """A user-facing failure: bad input, unreachable hub, unwritable folder, failed gate."""
