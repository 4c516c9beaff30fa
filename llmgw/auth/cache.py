"""A small bounded TTL cache: what keeps authentication off the database per request.

Entries live at most ``ttl`` seconds, so a change written by another instance (revoke,
update, rotation) is seen everywhere within ``ttl``; the instance that makes a change
evicts the affected entries at once. ``maxsize`` bounds memory when callers present many
distinct (for example random) credentials: the least recently used entries go first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ("TTLCache",)

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """``get`` returns ``None`` on a miss or an expired entry, never a stale value."""

    __slots__ = ("_clock", "_data", "maxsize", "ttl")

    def __init__(
        self, *, ttl: float, maxsize: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V, *, ttl: float | None = None) -> None:
        """Store ``value``; ``ttl`` may only shorten the cache's own bound."""
        life = self.ttl if ttl is None else min(ttl, self.ttl)
        if life <= 0:
            return
        self._data[key] = (self._clock() + life, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def discard_if(self, predicate: Callable[[V], bool]) -> int:
        """Evict every entry whose value matches; returns how many went."""
        doomed = [k for k, (_, v) in self._data.items() if predicate(v)]
        for k in doomed:
            del self._data[k]
        return len(doomed)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data))
