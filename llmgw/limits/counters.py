"""The counter store contract: reserve several counters at once, all or nothing, then settle.

A request's counters (requests, tokens, open streams, one per budget, for every scope it
belongs to) are checked and charged in one atomic step, so two gateways or two coroutines
can never both take the last unit of capacity. Backends only add and compare integers;
what the integers mean (micro-dollars, tokens, requests) is the limiter's business.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ("Counter", "CounterBackend", "CounterKind", "Reserved", "StoreUnavailableError")


class CounterKind(enum.StrEnum):
    #: A sum over time buckets (requests, tokens, micro-dollars).
    WINDOW = "w"
    #: Open leases that expire on their own (concurrent streams), so a crashed gateway's
    #: streams stop counting after ``ttl`` instead of holding capacity forever.
    LEASE = "c"


@dataclass(slots=True, kw_only=True)
class Counter:
    """One counter a request charges; buckets come from :class:`~llmgw.limits.policy.Window`.

    Not frozen: a request builds a dozen of these on the hot path, and a frozen
    dataclass's ``__init__`` costs three times as much. Treat it as a value.
    """

    key: str
    kind: CounterKind
    limit: int
    amount: int
    bucket: int = 0
    oldest: int = 0
    #: Seconds the counter must outlive this write (window length, or the lease's life).
    ttl: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Reserved:
    """What a reservation saw.

    ``refused`` is the index of the first counter that did not fit, or ``None`` when every
    counter was charged. ``used`` is each counter's total after the charge (before it, when
    refused). ``first`` is the oldest bucket holding a charge (a lease's earliest expiry in
    milliseconds), ``-1`` for none: it tells when capacity frees up.
    """

    refused: int | None
    used: tuple[int, ...]
    first: tuple[int, ...]


class StoreUnavailableError(Exception):
    """The counter store could not be reached in time."""


class CounterBackend(Protocol):
    """Where counters live: one process (memory) or shared by every gateway (Redis)."""

    async def reserve(self, counters: Sequence[Counter], token: str, now: float) -> Reserved:
        """Check every counter and, only if all fit, charge them all, atomically.

        A window counter fits when ``total + amount <= limit`` and it is not already at its
        limit; a lease counter fits when fewer than ``limit`` unexpired leases are open.
        ``token`` names the request's leases. Raises :class:`StoreUnavailableError`.
        """
        ...

    async def settle(self, counters: Sequence[Counter], deltas: Sequence[int], token: str) -> None:
        """Add ``deltas[i]`` to window counter ``i`` in the bucket it was charged in (the
        correction from reserved to actual), and release the request's leases."""
        ...

    async def close(self) -> None: ...
