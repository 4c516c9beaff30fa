"""Brute-force throttling: too many failed credentials from one address earns a 429.

A fixed window per client address: after ``max_failures`` failures inside ``window``
seconds, the address is refused (without checking what it sends) until the window that
started with its first failure ends. Memory is bounded by ``maxsize`` addresses.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ("FailureThrottle",)


class FailureThrottle:
    __slots__ = ("_clock", "_windows", "max_failures", "maxsize", "window")

    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        maxsize: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.maxsize = maxsize
        self._clock = clock
        # address -> (window start, failures in that window)
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or ``None`` when it is not blocked."""
        entry = self._windows.get(address)
        if entry is None:
            return None
        start, failures = entry
        remaining = start + self.window - self._clock()
        if remaining <= 0:
            del self._windows[address]
            return None
        return remaining if failures >= self.max_failures else None

    def failed(self, address: str) -> None:
        now = self._clock()
        start, failures = self._windows.get(address, (now, 0))
        if start + self.window <= now:
            start, failures = now, 0
        self._windows[address] = (start, failures + 1)
        self._windows.move_to_end(address)
        while len(self._windows) > self.maxsize:
            self._windows.popitem(last=False)
