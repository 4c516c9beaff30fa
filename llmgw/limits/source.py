"""The limiter's view of the policy store: the whole table in memory, checked every ``ttl``.

Requests never wait on SQL except the very first one. Every ``ttl`` seconds one request
checks the store's version (a one-row query) and rereads the table only if it changed;
other requests meanwhile keep using the snapshot in hand. So a change made anywhere
(another instance's admin API, ``llmgw limits``) is enforced by every instance within
``ttl`` seconds plus one refresh (itself bounded by ``timeout``), and by the instance
whose admin API made it at once. If the store is unreachable, the last snapshot stays
in force (with no snapshot yet: tier defaults only) and the check is retried every ``ttl``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .policy import LimitSet, Tier
from .store import LimitPolicy, LimitPolicyStore, parse_row

__all__ = ("CachedPolicies",)

log = logging.getLogger("llmgw.limits")


class CachedPolicies:
    """A :class:`~llmgw.limits.limiter.PolicySource` over a :class:`LimitPolicyStore`.

    ``store`` may be bound later (when the application's database opens); until then
    every answer is ``None`` (tier defaults apply).
    """

    def __init__(
        self,
        store: LimitPolicyStore | None = None,
        *,
        ttl: float = 5.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.timeout = timeout
        self._clock = clock
        self._snapshot: dict[tuple[Tier, str], LimitSet] = {}
        #: Each row's JSON text, so an unchanged row keeps its LimitSet object (the
        #: limiter recompiles a scope only when the object it got changes).
        self._texts: dict[tuple[Tier, str], str] = {}
        self._version: int | None = None
        self._next_check = 0.0
        self._lock = asyncio.Lock()

    async def get(self, tier: Tier, name: str) -> LimitSet | None:
        if self._clock() >= self._next_check and self.store is not None:
            await self._refresh_due()
        return self._snapshot.get((tier, name))

    async def refresh(self) -> None:
        """Check the store now (after a change made through this instance)."""
        if self.store is not None:
            await self._refresh_due(force=True)

    async def put(self, tier: Tier, name: str, limits: LimitSet) -> LimitPolicy:
        """Store ``limits`` and enforce it here at once (elsewhere within ``ttl``)."""
        assert self.store is not None, "the policy store is not open"
        policy = await self.store.put(tier, name, limits)
        await self.refresh()
        return policy

    async def delete(self, tier: Tier, name: str) -> LimitPolicy | None:
        assert self.store is not None, "the policy store is not open"
        policy = await self.store.delete(tier, name)
        await self.refresh()
        return policy

    async def _refresh_due(self, *, force: bool = False) -> None:
        if self._lock.locked() and self._version is not None and not force:
            return  # another request is refreshing: serve the snapshot in hand
        async with self._lock:
            if not force and self._clock() < self._next_check:
                return  # refreshed while this one waited
            try:
                async with asyncio.timeout(self.timeout):
                    await self._load()
            except Exception as exc:  # any driver error: keep the snapshot
                log.warning("limit policies not refreshed, keeping the last ones: %r", exc)
            finally:
                self._next_check = self._clock() + self.ttl

    async def _load(self) -> None:
        store = self.store
        assert store is not None
        # Version first: a change landing between the two reads is picked up next time.
        version = await store.version()
        if version == self._version:
            return
        snapshot: dict[tuple[Tier, str], LimitSet] = {}
        texts: dict[tuple[Tier, str], str] = {}
        for row in await store.rows():
            try:
                key = (Tier(row["tier"]), str(row["name"]))
                text = str(row["limits"])
                old = self._snapshot.get(key)
                limits = old if old is not None and self._texts.get(key) == text else None
                if limits is None:
                    limits = parse_row(row)
            except ValueError as exc:
                log.warning("skipping unreadable limit policy: %s", exc)
                continue
            snapshot[key] = limits
            texts[key] = text
        self._snapshot, self._texts, self._version = snapshot, texts, version
