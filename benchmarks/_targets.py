"""What each variant of `relay.py` must reach: the issues' targets as checks on one table cell.

A *goal* maps a metric to the `Target` it has for one variant (or `None`); goals are attached
to variants in `_variants.py`. Relay goals compare with the reference proxy (`naive`); feature
goals compare with the bare `llmgw` row of the same run, so what they judge is the cost of the
feature alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = (
    "Cell",
    "Goal",
    "Target",
    "added_ttfb",
    "added_ttfb_per_redis_rtt",
    "relay",
    "within_bare",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cell:
    """One variant's median for one metric, with what it is compared to."""

    #: As shown: added metrics are variant - baseline (direct) in the same repeat.
    value: float
    #: The variant's own measurement (added metrics: before subtracting the baseline).
    absolute: float
    #: The reference proxy's shown value (`naive`, or `naive-bedrock` for Bedrock rows).
    reference: float | None = None
    #: The bare `llmgw` row's absolute value.
    bare_absolute: float | None = None
    #: Against the bare `llmgw` row, per repeat then median: the difference for added
    #: metrics (ms), the ratio for everything else.
    vs_bare: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """`check(cell)`: True (met), False (missed) or None (a row it needs did not run)."""

    text: str
    check: Callable[[Cell], bool | None]


#: `goal(metric key, measurements of the run)` → the metric's target for one variant.
Goal = Callable[[str, Mapping[str, float]], Target | None]


def _vs_reference(text: str, ok: Callable[[float, float], bool]) -> Target:
    def check(cell: Cell) -> bool | None:
        return None if cell.reference is None else ok(cell.value, cell.reference)

    return Target(text=text, check=check)


def _vs_bare(text: str, ok: Callable[[Cell, float, float], bool]) -> Target:
    def check(cell: Cell) -> bool | None:
        if cell.vs_bare is None or cell.bare_absolute is None:
            return None
        return ok(cell, cell.vs_bare, cell.bare_absolute)

    return Target(text=text, check=check)


def relay() -> Goal:
    """The relay issue's targets, against the reference proxy of the same run."""

    def goal(key: str, measured: Mapping[str, float]) -> Target | None:
        if key.endswith((".rps", ".mbps")):
            return _vs_reference(">= 0.9x naive", lambda v, ref: v >= 0.9 * ref)
        if key.endswith(".ttfb_p50"):
            return _vs_reference("<= 1.2x naive", lambda v, ref: v <= 1.2 * ref)
        if key == "paced.late_p99":
            return _vs_reference("<= naive + 2 ms", lambda v, ref: v <= ref + 2.0)
        if key == "paced.rss_kb":
            return Target(text="<= 30 KB", check=lambda cell: cell.value <= 30)
        return None

    return goal


#: Added-latency targets are judged at concurrency 1, where TTFB is the cost of one request
#: and not the queue in front of a saturated process.
_TTFB_KEY = "short.c1.ttfb_p50"


def added_ttfb(limit_ms: float) -> Goal:
    """TTFB p50 at c=1 at most `limit_ms` above the bare `llmgw` row."""

    def goal(key: str, measured: Mapping[str, float]) -> Target | None:
        if key != _TTFB_KEY:
            return None
        return _vs_bare(f"<= llmgw + {limit_ms:g} ms", lambda cell, d, _: d <= limit_ms)

    return goal


def added_ttfb_per_redis_rtt() -> Goal:
    """TTFB p50 at c=1 at most one Redis round trip (PING, measured in the run) above bare."""

    def goal(key: str, measured: Mapping[str, float]) -> Target | None:
        rtt = measured.get("redis_rtt_ms")
        if key != _TTFB_KEY or rtt is None:
            return None
        return _vs_bare(f"<= llmgw + 1 Redis RTT ({rtt:.3f} ms)", lambda cell, d, _: d <= rtt)

    return goal


def within_bare(fraction: float) -> Goal:
    """req/s and TTFB p50 (as the client sees it, not the added part) within `fraction` of
    the bare `llmgw` row, at every concurrency."""
    pct = f"{fraction * 100:g} %"

    def goal(key: str, measured: Mapping[str, float]) -> Target | None:
        if key.startswith("short.") and key.endswith(".rps"):
            return _vs_bare(f">= llmgw - {pct}", lambda cell, r, _: r >= 1 - fraction)
        if key.startswith("short.") and key.endswith(".ttfb_p50"):
            return _vs_bare(f"<= llmgw + {pct}", lambda cell, d, bare: d <= fraction * bare)
        return None

    return goal
