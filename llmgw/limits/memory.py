"""In-process counters: the reference implementation of the counter contract.

Each operation runs without an ``await`` between check and charge, so it is atomic under
asyncio with no lock. A window keeps its buckets in insertion order (which is time order)
and a running total, so a reservation costs O(1) however busy the counter is. Counters
are dropped once idle past their TTL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .counters import Counter, CounterKind, Reserved

__all__ = ("MemoryCounters",)

_SWEEP_EVERY = 4096
_WINDOW = CounterKind.WINDOW
_EMPTY = 1 << 62  # the head of a window with no bucket: never older than any window


class _Window:
    __slots__ = ("buckets", "expires", "head", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.total = 0
        #: The oldest bucket id (buckets are in time order), ``_EMPTY`` when none.
        self.head = _EMPTY
        self.expires = 0.0

    def prune(self, oldest: int) -> None:
        buckets = self.buckets
        while buckets:
            first = next(iter(buckets))
            if first >= oldest:
                self.head = first
                return
            self.total -= buckets.pop(first)
        self.head = _EMPTY

    def first_used(self) -> int:
        """The oldest bucket holding a charge, ``-1`` for none."""
        buckets = self.buckets
        if buckets and buckets[self.head] > 0:
            return self.head
        return next((b for b, v in buckets.items() if v > 0), -1)


class _Leases:
    __slots__ = ("expires", "open")

    def __init__(self) -> None:
        #: Lease token -> when it expires.
        self.open: dict[str, float] = {}
        self.expires = 0.0


class MemoryCounters:
    """Counters for one gateway process (the default, and the fail-open fallback)."""

    __slots__ = ("_leases", "_ops", "_windows")

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._leases: dict[str, _Leases] = {}
        self._ops = 0

    async def reserve(self, counters: Sequence[Counter], token: str, now: float) -> Reserved:
        return self.reserve_now(counters, token, now)

    def reserve_now(self, counters: Sequence[Counter], token: str, now: float) -> Reserved:
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._sweep(now)
        windows, all_leases, window_kind = self._windows, self._leases, _WINDOW
        used: list[int] = []
        first: list[int] = []
        found: list[Any] = []  # the _Window or _Leases of each counter, None if new
        refused: int | None = None
        for i, c in enumerate(counters):
            oldest = -1
            total = 0
            if c.kind is window_kind:
                window = windows.get(c.key)
                if window is not None:
                    if window.head < c.oldest:
                        window.prune(c.oldest)
                    total = window.total
                    if total:
                        oldest = window.first_used()
                found.append(window)
            else:
                leases = all_leases.get(c.key)
                if leases is not None:
                    held = leases.open
                    total = len(held)
                    if total >= c.limit:
                        # Expired leases only matter when they would refuse: drop them lazily.
                        for t in [t for t, exp in held.items() if exp <= now]:
                            del held[t]
                        total = len(held)
                        # A lease's earliest expiry only explains a refusal.
                        oldest = int(min(held.values()) * 1000) if held else -1
                found.append(leases)
            used.append(total)
            first.append(oldest)
            if refused is None and (total + c.amount > c.limit or total >= c.limit):
                refused = i
        if refused is not None:
            return Reserved(refused=refused, used=tuple(used), first=tuple(first))
        for i, c in enumerate(counters):
            amount = c.amount
            entry = found[i]
            if c.kind is window_kind:
                if entry is None:
                    entry = windows[c.key] = _Window()
                buckets = entry.buckets
                if buckets:
                    buckets[c.bucket] = buckets.get(c.bucket, 0) + amount
                else:
                    buckets[c.bucket] = amount
                    entry.head = c.bucket
                entry.total += amount
                if first[i] < 0 and amount > 0:
                    first[i] = c.bucket
            else:
                if entry is None:
                    entry = all_leases[c.key] = _Leases()
                entry.open[token] = now + c.ttl
                first[i] = -1
            entry.expires = now + c.ttl
            used[i] += amount
        return Reserved(refused=None, used=tuple(used), first=tuple(first))

    async def settle(self, counters: Sequence[Counter], deltas: Sequence[int], token: str) -> None:
        self.settle_nowait(counters, deltas, token)

    def settle_nowait(self, counters: Sequence[Counter], deltas: Sequence[int], token: str) -> None:
        """:meth:`settle` for synchronous callers: applied at once (as ``RedisCounters``
        queues it for its next script)."""
        for c, delta in zip(counters, deltas, strict=True):
            if c.kind is CounterKind.WINDOW:
                if not delta:
                    continue
                window = self._windows.get(c.key)
                # A bucket already out of the window took its charge with it.
                if window is not None and c.bucket in window.buckets:
                    window.buckets[c.bucket] += delta
                    window.total += delta
            else:
                leases = self._leases.get(c.key)
                if leases is not None:
                    leases.open.pop(token, None)

    async def close(self) -> None:
        self._windows.clear()
        self._leases.clear()

    def _sweep(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if w.expires <= now]:
            del self._windows[key]
        for key in [k for k, leases in self._leases.items() if leases.expires <= now]:
            del self._leases[key]
