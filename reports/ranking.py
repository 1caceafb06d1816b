"""Ranking with confidence intervals: configurations whose 95 % intervals overlap are a tie, never a ranking.

The rule is pairwise. A ranks above B only when A's whole interval is better than B's whole interval (for QPS:
lo_A > hi_B; for cost or latency: hi_A < lo_B). A's rank is 1 + the number of configurations ranked above it;
its ties are the configurations whose intervals overlap its own (closed intervals: lo_A ≤ hi_B and lo_B ≤ hi_A).
Two 95 % intervals of similar width that do not overlap correspond to p < 0.01, so a ranking claimed here is a
firm one; one that is not claimed may still be real, only not shown by this run.

A figure without an interval (a schema-1 load-test level: one window, no CI) or with one from a single worker
process (which misses the spread between fresh processes) is shown, but neither ranked nor tied.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.stats import overlap

NO_CI = "single window, not ranked with confidence"
ONE_PROCESS = "one worker process, not ranked with confidence (its CI misses the spread between processes)"
CLOSED_LOOP = ("closed-loop figure, not ranked against the open-loop QPS searched at the SLO for others "
               "(`bench sweep --slo-search` measures it)")
ONE_SERVICE = ("one service process, not ranked with confidence (its CI, across that process's windows, misses the "
               "spread between service processes)")


@dataclass(frozen=True)
class Entry:
    """One configuration's ranked figure: point value, 95 % interval (empty when unknown), and why it cannot be
    ranked when it cannot."""

    name: str
    value: float
    ci: tuple = ()
    unranked: str | None = None

    @property
    def ranked(self) -> bool:
        return bool(self.ci) and self.unranked is None

    @property
    def why_not(self) -> str:
        return self.unranked or NO_CI


MAX_NAMED_TIES = 2


@dataclass(frozen=True)
class Standing:
    """Where one entry stands among the others: a rank and its ties, or why it is not ranked."""

    name: str
    rank: int | None
    ties: tuple[str, ...] = ()
    unranked: str | None = None

    @property
    def text(self) -> str:
        if self.rank is None:
            return str(self.unranked)
        if len(self.ties) > MAX_NAMED_TIES:  # a merged report's names are long: a row of them would fill the page
            return f"{self.rank}, tie with {len(self.ties)} others"
        return str(self.rank) + (f", tie with {', '.join(self.ties)}" if self.ties else "")


def beats(a: Entry, b: Entry, higher: bool) -> bool:
    """a's whole interval is better than b's (both ranked)."""
    return a.ci[0] > b.ci[1] if higher else a.ci[1] < b.ci[0]


def standings(entries: list[Entry], higher: bool) -> dict[str, Standing]:
    """name -> Standing, by the pairwise rule above; `higher` says whether a higher value is better."""
    ranked = [e for e in entries if e.ranked]
    out = {}
    for e in entries:
        if not e.ranked:
            out[e.name] = Standing(e.name, None, unranked=e.why_not)
            continue
        others = [o for o in ranked if o is not e]
        out[e.name] = Standing(e.name, 1 + sum(beats(o, e, higher) for o in others),
                               tuple(o.name for o in others if overlap(o.ci, e.ci)))
    return out


def tied_with(entry: Entry, entries: list[Entry]) -> list[Entry]:
    """The other ranked entries whose intervals overlap `entry`'s (none when `entry` itself has no usable CI)."""
    if not entry.ranked:
        return []
    return [o for o in entries if o.ranked and o.name != entry.name and overlap(o.ci, entry.ci)]


def order_text(entries: list[Entry], higher: bool) -> str:
    """'A ≈ B > C', best first: '>' better with the intervals apart, '≈' a tie (intervals overlap); entries that
    cannot be ranked are listed after it with the reason."""
    ranked = sorted((e for e in entries if e.ranked), key=lambda e: e.value, reverse=higher)
    parts = [ranked[0].name] if ranked else []
    for prev, e in zip(ranked, ranked[1:]):
        parts += [" ≈ " if overlap(prev.ci, e.ci) else " > ", e.name]
    reasons: dict = {}
    for e in entries:
        if not e.ranked:
            reasons.setdefault(e.why_not, []).append(e.name)
    if not parts and len(reasons) == 1:
        return next(iter(reasons))  # nothing to order: say why once
    rest = [f"{names_and(names)}: {why}" for why, names in reasons.items()]
    return "; ".join(["".join(parts)] * bool(parts) + rest)


def names_and(names: list[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
