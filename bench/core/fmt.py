"""How a figure's 95 % interval is written, in one place: the terminal, the checks and the reports all use it."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def interval(ci: Sequence[float] | None, show: Callable[[float], str] | str = ".1f", missing: str = "no CI") -> str:
    """'[lo–hi]'; '[≥ lo, no upper bound]' for a lower bound alone (a search that saw no failing rate); '[no CI]'
    (or `missing`) when there is none. `show`: a format spec such as '.2f', or a function of one value."""
    def text(value: float) -> str:
        return show(value) if callable(show) else format(value, show)

    if not ci:
        return f"[{missing}]"
    if len(ci) == 1 or ci[1] == float("inf"):
        return f"[≥ {text(ci[0])}, no upper bound]"
    return f"[{text(ci[0])}–{text(ci[1])}]"
