"""How numbers look in reports: one place, so tests can format a value exactly as the report does.

Every formatter takes None and returns None, so callers can turn a missing value into "not measured".
"""

from __future__ import annotations

import math

from bench.core.fmt import interval

# Three significant figures: enough to see a 1 % change, few enough to read a column at a glance.
SIGNIFICANT = 3


def num(value: float | None, significant: int = SIGNIFICANT) -> str | None:
    """`value` with `significant` figures, trailing zeros kept (so columns line up), no exponent."""
    if value is None:
        return None
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    decimals = max(0, significant - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{min(decimals, 6)}f}"


def ms(seconds: float | None) -> str | None:
    """A duration stored in seconds, shown in milliseconds."""
    return None if seconds is None else num(seconds * 1000.0)


def ci_suffix(ci: list | tuple | None, show=None, missing: str = "no CI") -> str:
    """' [lo–hi]' for a 95 % interval, ' [≥ lo, no upper bound]' for a lower bound, ' (no CI)' when there is none
    (schema-1 levels: one window)."""
    if not ci:
        return f" ({missing})" if missing else ""
    return " " + interval(ci, show or num)


def num_ci(value: float | None, ci: list | tuple | None, missing: str = "no CI") -> str | None:
    """'P [lo–hi]' with the 95 % interval, or 'P (no CI)' when the record has none."""
    return None if value is None else f"{num(value)}{ci_suffix(ci, num, missing)}"


def ms_ci(value_s: float | None, ci_s: list | tuple | None) -> str | None:
    """'P [lo–hi]' in milliseconds; the bracket is the 95 % bootstrap interval."""
    return None if value_s is None else f"{ms(value_s)}{ci_suffix(ci_s, ms, missing='')}"


def seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def mib(n_bytes: float | None) -> str | None:
    """Bytes as MiB, whole numbers: memory figures vary by more than 1 MiB between identical runs."""
    return None if n_bytes is None else f"{n_bytes / 2**20:,.0f}"


def percent(value: float | None) -> str | None:
    return None if value is None else f"{value:.0f}"


def qps(value: float | None) -> str | None:
    return None if value is None else num(value)


def ratio(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}×"


def usd(value: float | None) -> str | None:
    return None if value is None else f"${num(value)}"
