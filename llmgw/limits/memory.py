"""In-process counters: the reference implementation of the counter contract.

Each operation runs without an ``await`` between check and charge, so it is atomic under
asyncio with no lock. A window keeps its buckets in insertion order (which is time order)
and a running total, so a reservation costs O(1) however busy the counter is. Counters
are dropped once idle past their TTL.
"""

from __future__ import annotations

from collections.abc import Sequence

from .counters import Counter, CounterKind, Reserved

__all__ = ("MemoryCounters",)

_SWEEP_EVERY = 4096


class _Window:
    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.total = 0

    def prune(self, oldest: int) -> None:
        buckets = self.buckets
        while buckets:
            first = next(iter(buckets))
            if first >= oldest:
                return
            self.total -= buckets.pop(first)

    def first_used(self) -> int:
        return next((b for b, v in self.buckets.items() if v > 0), -1)


class MemoryCounters:
    """Counters for one gateway process (the default, and the fail-open fallback)."""

    __slots__ = ("_expires", "_leases", "_ops", "_windows")

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._expires: dict[str, float] = {}
        self._ops = 0

    async def reserve(self, counters: Sequence[Counter], token: str, now: float) -> Reserved:
        return self.reserve_now(counters, token, now)

    def reserve_now(self, counters: Sequence[Counter], token: str, now: float) -> Reserved:
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._sweep(now)
        used: list[int] = []
        refused: int | None = None
        for i, c in enumerate(counters):
            if c.kind is CounterKind.WINDOW:
                window = self._windows.get(c.key)
                total = 0
                if window is not None:
                    window.prune(c.oldest)
                    total = window.total
            else:
                leases = self._leases.get(c.key)
                total = len(leases) if leases else 0
                if leases and total >= c.limit:
                    # Expired leases only matter when they would refuse: drop them lazily.
                    for t in [t for t, exp in leases.items() if exp <= now]:
                        del leases[t]
                    total = len(leases)
            used.append(total)
            if refused is None and (total + c.amount > c.limit or total >= c.limit):
                refused = i
        if refused is not None:
            return Reserved(refused=refused, used=tuple(used), first=self._first(counters, True))
        for i, c in enumerate(counters):
            if c.kind is CounterKind.WINDOW:
                window = self._windows.get(c.key)
                if window is None:
                    window = self._windows[c.key] = _Window()
                buckets = window.buckets
                buckets[c.bucket] = buckets.get(c.bucket, 0) + c.amount
                window.total += c.amount
            else:
                self._leases.setdefault(c.key, {})[token] = now + c.ttl
            self._expires[c.key] = now + c.ttl
            used[i] += c.amount
        return Reserved(refused=None, used=tuple(used), first=self._first(counters, False))

    def _first(self, counters: Sequence[Counter], leases_too: bool) -> tuple[int, ...]:
        # A lease's earliest expiry is O(open leases) and only explains a refusal.
        out = []
        for c in counters:
            if c.kind is CounterKind.WINDOW:
                window = self._windows.get(c.key)
                out.append(window.first_used() if window is not None else -1)
            else:
                leases = self._leases.get(c.key) if leases_too else None
                out.append(int(min(leases.values()) * 1000) if leases else -1)
        return tuple(out)

    async def settle(self, counters: Sequence[Counter], deltas: Sequence[int], token: str) -> None:
        self.settle_now(counters, deltas, token)

    def settle_now(self, counters: Sequence[Counter], deltas: Sequence[int], token: str) -> None:
        for c, delta in zip(counters, deltas, strict=True):
            if c.kind is CounterKind.WINDOW:
                window = self._windows.get(c.key)
                # A bucket already out of the window took its charge with it.
                if delta and window is not None and c.bucket in window.buckets:
                    window.buckets[c.bucket] += delta
                    window.total += delta
            else:
                leases = self._leases.get(c.key)
                if leases is not None:
                    leases.pop(token, None)

    async def close(self) -> None:
        self._windows.clear()
        self._leases.clear()
        self._expires.clear()

    def _sweep(self, now: float) -> None:
        for key in [k for k, exp in self._expires.items() if exp <= now]:
            del self._expires[key]
            self._windows.pop(key, None)
            self._leases.pop(key, None)
