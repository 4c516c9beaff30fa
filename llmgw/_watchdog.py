"""Noticing, while a relay waits on its upstream, that something else needs doing.

aiohttp only tells a handler that its client left on the handler's next write, and a
silent upstream means no writes: the trap DESIGN.md §3.5 measured, where abandoned
upstream streams kept generating (and billing) for as long as the silence lasted.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

__all__ = ("ClientGone", "Watchdog", "client_gone")

_T = TypeVar("_T")


class ClientGone(Exception):
    """The client's connection closed while the relay was waiting."""


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class _Ticker:
    """One ``call_later`` per event loop and poll interval that checks every open watchdog.

    A timer per request measured ~0.6 KB per open stream (uvloop's timer handle) and one
    rescheduling per stream per tick; a shared tick costs a set entry. It stops when no
    watchdog is open and starts again with the next one.
    """

    __slots__ = ("_dogs", "_handle", "_loop", "_poll")

    def __init__(self, loop: asyncio.AbstractEventLoop, poll: float) -> None:
        self._loop = loop
        self._poll = poll
        self._dogs: set[Watchdog] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, dog: Watchdog) -> None:
        self._dogs.add(dog)
        if self._handle is None:
            self._handle = self._loop.call_later(self._poll, self._tick)

    def discard(self, dog: Watchdog) -> None:
        self._dogs.discard(dog)

    def _tick(self) -> None:
        self._handle = None
        if not self._dogs:
            return
        now = time.monotonic()
        for dog in self._dogs:
            if dog.armed and dog.reason is None:
                dog.check(now)
        self._handle = self._loop.call_later(self._poll, self._tick)


_TICKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Ticker]] = (
    weakref.WeakKeyDictionary()
)


def _ticker(loop: asyncio.AbstractEventLoop, poll: float) -> _Ticker:
    per_loop = _TICKERS.get(loop)
    if per_loop is None:
        per_loop = _TICKERS[loop] = {}
    ticker = per_loop.get(poll)
    if ticker is None:
        ticker = per_loop[poll] = _Ticker(loop, poll)
    return ticker


class Watchdog:
    """Interrupts the relay's upstream waits when something else needs doing.

    aiohttp only tells a handler that its client left on the next write, and a silent
    upstream means no writes. Rather than a task per upstream call and a timeout per read
    (both measurable per chunk), a tick shared by every open request (every ``poll``
    seconds, see :class:`_Ticker`) checks the client's transport, the deadline (first byte,
    then idle gap) and when a ping is due. When something is due *and* the relay is parked
    on an upstream await (``armed``), it cancels the relay's task, exactly as
    ``asyncio.timeout`` does; the relay then asks :meth:`interrupted` why. Upstream reads
    are cancellation-safe (unread bytes stay buffered), and writes are never interrupted.
    """

    GONE = "client gone"
    DEADLINE = "deadline"
    PING = "ping"

    __slots__ = (
        "_request",
        "_task",
        "_ticker",
        "armed",
        "deadline",
        "ping_at",
        "reason",
    )

    def __init__(self, request: web.Request, poll: float) -> None:
        self._request = request
        # The loop from aiohttp's connection task, not asyncio.get_running_loop(): on
        # CPython 3.11 that makes a getpid() system call each time (two per request here).
        loop = request.task.get_loop()
        task = asyncio.current_task(loop)  # the handler's own task
        assert task is not None
        self._task = task
        self.armed = False
        #: ``time.monotonic()`` values: when to give up waiting, and when a ping is due.
        self.deadline: float | None = None
        self.ping_at: float | None = None
        self.reason: str | None = None
        self._ticker: _Ticker | None = _ticker(loop, poll)
        self._ticker.add(self)

    def check(self, now: float) -> None:
        """The tick: cancel the parked relay when its client left or a wait is due."""
        if client_gone(self._request):
            self.reason = self.GONE
        elif self.deadline is not None and now >= self.deadline:
            self.reason = self.DEADLINE
        elif self.ping_at is not None and now >= self.ping_at:
            self.reason = self.PING
        if self.reason is not None:
            self._task.cancel()

    def interrupted(self) -> str | None:
        """Inside ``except CancelledError``: why this watchdog cancelled, or ``None`` when
        the cancellation came from outside (then it must propagate)."""
        reason, self.reason = self.reason, None
        if reason is None or self._task.uncancel() > 0:
            return None
        return reason

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.discard(self)
            self._ticker = None

    async def wait(self, aw: Awaitable[_T], *, limit: float | None = None) -> _T:
        """Await an upstream operation; :class:`ClientGone` if the client leaves,
        ``TimeoutError`` after ``limit`` seconds."""
        self.deadline = None if limit is None else time.monotonic() + limit
        self.armed = True
        try:
            return await aw
        except asyncio.CancelledError:
            reason = self.interrupted()
            if reason is None:
                raise
            if reason is self.GONE:
                raise ClientGone from None
            raise TimeoutError from None
        finally:
            self.armed = False
            self.deadline = None
