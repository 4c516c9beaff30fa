"""Allowances leased from the Redis counters, so most requests make no round trip.

A reservation that goes to Redis also asks, for each of its counters, for an allowance on
top of what the request takes: ``fraction`` of the limit (at least two requests' worth; at
most ``max_slots`` stream slots), never more than a quarter of what the counter has left
after the request, and nothing when that is less than a request, so allowances shrink to
nothing near a limit. An allowance is charged in Redis like a request, in the same atomic
script, so the requests of every instance plus every outstanding allowance still fit the
limit: the cap holds across instances exactly as it does without leasing. A later request
whose counters all have enough allowance is charged here, synchronously, with no round
trip.

An allowance lives in its window bucket and for at most ``hold`` seconds; then what is
left of it goes back to Redis (riding the next script, as settles do). A settle's
correction goes to the allowance of its bucket when there is one (the units stay charged
in Redis, now as this instance's to hand out), else to Redis.

What the round trips saved cost:

- near a limit, a request may be refused while another instance holds an unused
  allowance, for at most ``hold`` seconds (each allowance is at most a quarter of what
  was left, and ``fraction`` of the limit);
- ``anthropic-ratelimit-*-remaining`` on a request served here is this instance's view as
  of its last round trip;
- the allowances of an instance that dies stay charged until their bucket leaves the
  window (a minute for rates, the period for a budget), like the reservations it held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .counters import Counter, CounterKind, Reserved
from .redis import RedisCounters

__all__ = ("LeasedCounters",)

_WINDOW = CounterKind.WINDOW


class _Allowance:
    """Units of one counter charged in Redis and not yet used by a request here."""

    __slots__ = ("bucket", "first", "free", "slots", "until", "used")

    def __init__(self, bucket: int, first: int, until: float) -> None:
        self.bucket = bucket
        #: Window units left (a stream counter keeps ``slots`` instead).
        self.free = 0
        #: Stream slots left: the names of their leases in Redis.
        self.slots: list[str] = []
        #: The counter's total and oldest charged bucket as Redis last reported them.
        self.used = 0
        self.first = first
        #: Loop time at which what is left goes back.
        self.until = until


class LeasedCounters:
    """:class:`~llmgw.limits.redis.RedisCounters` with allowances served in this process.

    Same contract and the same guarantee (no instance, and no set of instances, charges a
    counter past its limit); ``fraction`` of 0.01 leases 1 % of a limit at a time.
    """

    __slots__ = ("_allowances", "_held", "_sweeper", "fraction", "hold", "max_slots", "redis")

    def __init__(
        self, redis: RedisCounters, *, fraction: float, hold: float = 1.0, max_slots: int = 16
    ) -> None:
        if not 0 < fraction <= 1 or hold <= 0 or max_slots < 0:
            raise ValueError("fraction must be in (0, 1], hold positive, max_slots >= 0")
        self.redis = redis
        self.fraction = fraction
        self.hold = hold
        self.max_slots = max_slots
        self._allowances: dict[str, _Allowance] = {}
        #: Request token -> the stream slots it took from an allowance, with that allowance.
        self._held: dict[str, list[tuple[str, _Allowance, str]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    async def reserve(self, counters: Sequence[Counter], token: str, now: float) -> Reserved:
        loop = asyncio.get_running_loop()
        seen = self._from_allowances(counters, token, loop.time())
        if seen is not None:
            return seen
        for c in counters:
            # What is left of an allowance of these counters goes back first (carried by
            # this very script), so it can never be the cause of this request's refusal.
            stale = self._allowances.pop(c.key, None)
            if stale is not None:
                self._return(c.key, stale)
        wants = [self._want(c) for c in counters]
        seen, granted = await self.redis.reserve_granting(counters, token, now, wants)
        if seen.refused is not None:
            # Allowances granted meanwhile to requests that raced this one may cover it.
            return self._from_allowances(counters, token, loop.time()) or seen
        used = list(seen.used)
        loop_now = loop.time()
        for i, c in enumerate(counters):
            extra = granted[i]
            if not extra:
                continue
            a = self._allowances.get(c.key)
            if a is None or a.bucket != c.bucket or a.until <= loop_now:
                if a is not None:
                    self._return(c.key, a)
                a = self._allowances[c.key] = _Allowance(
                    c.bucket, seen.first[i], loop_now + self.hold
                )
            # else granted to requests that raced this one: one allowance, the first's life
            a.used = max(a.used, seen.used[i])
            if c.kind is _WINDOW:
                a.free += extra
            else:
                a.slots += [f"{token}#{j}" for j in range(1, extra + 1)]
            used[i] -= extra  # the allowance is this instance's to use: not spent yet
        if self._sweeper is None and self._allowances:
            self._sweeper = loop.call_later(self.hold, self._sweep)
        return Reserved(refused=None, used=tuple(used), first=seen.first)

    def _from_allowances(
        self, counters: Sequence[Counter], token: str, loop_now: float
    ) -> Reserved | None:
        """Charge every counter from its allowance, or nothing (``None``) when one of them
        has none, an old bucket's, or too little."""
        allowances = self._allowances
        found = []
        for c in counters:
            a = allowances.get(c.key)
            if a is None or a.until <= loop_now or a.bucket != c.bucket:
                return None
            if (a.free < c.amount) if c.kind is _WINDOW else not a.slots:
                return None
            found.append(a)
        used = []
        first = []
        for c, a in zip(counters, found, strict=True):
            if c.kind is _WINDOW:
                a.free -= c.amount
                used.append(a.used - a.free)
            else:
                slot = a.slots.pop()
                self._held.setdefault(token, []).append((c.key, a, slot))
                used.append(a.used - len(a.slots))
            first.append(a.first)
        return Reserved(refused=None, used=tuple(used), first=tuple(first))

    def _want(self, c: Counter) -> int:
        want = max(int(c.limit * self.fraction), 2 * c.amount)
        return want if c.kind is _WINDOW else min(want, self.max_slots)

    async def settle(self, counters: Sequence[Counter], deltas: Sequence[int], token: str) -> None:
        rest = self._settle_here(counters, deltas, token)
        if rest:
            await self.redis.settle([c for c, _ in rest], [d for _, d in rest], token)

    def settle_nowait(self, counters: Sequence[Counter], deltas: Sequence[int], token: str) -> None:
        rest = self._settle_here(counters, deltas, token)
        if rest:
            self.redis.settle_nowait([c for c, _ in rest], [d for _, d in rest], token)

    def _settle_here(
        self, counters: Sequence[Counter], deltas: Sequence[int], token: str
    ) -> list[tuple[Counter, int]]:
        """Apply what this instance's allowances can take; the rest, for Redis."""
        held = self._held.pop(token, None)
        rest: list[tuple[Counter, int]] = []
        allowances = self._allowances
        for c, delta in zip(counters, deltas, strict=True):
            if c.kind is _WINDOW:
                a = allowances.get(c.key)
                if a is not None and a.bucket == c.bucket and a.free >= delta:
                    a.free -= delta  # a refund, or a charge the allowance covers
                elif delta:
                    rest.append((c, delta))
                continue
            taken = next((t for t in held or () if t[0] == c.key), None)
            if taken is None:
                rest.append((c, 0))  # its lease is in Redis under the request's token
                continue
            _, a, slot = taken
            if allowances.get(c.key) is a:
                a.slots.append(slot)  # still within the allowance's life: reuse it
            else:
                self.redis.give_back(c.key, c.kind, 0, 0, slot)
        return rest

    def _sweep(self) -> None:
        """Return the allowances whose time is up (a busy counter renews its own on the
        request that finds it expired; this is for those no request asks for any more)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for key, a in list(self._allowances.items()):
            if a.until <= now:
                del self._allowances[key]
                self._return(key, a)
        if self._allowances:
            self._sweeper = loop.call_later(self.hold, self._sweep)

    def _return(self, key: str, a: _Allowance) -> None:
        """Give what is left of ``a`` back to Redis (with the next script)."""
        if a.free:
            self.redis.give_back(key, _WINDOW, a.bucket, a.free, "")
        for slot in a.slots:
            self.redis.give_back(key, CounterKind.LEASE, 0, 0, slot)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for key, a in self._allowances.items():
            self._return(key, a)
        self._allowances.clear()
        await self.redis.close()  # flushes what was given back
