"""One pipelined connection to Redis for the limiter's scripts.

Every reserve and settle is one ``EVALSHA``. Through redis-py each call cost ~150 µs of
gateway CPU (its connection pool, command packing and reply machinery), twice the
round trip itself; here a call is a ``write()`` and a future resolved by the protocol in
reply order, since Redis answers the commands of a connection in the order it got them.
One connection carries every concurrent call (Redis runs scripts one at a time anyway).

Failure is bounded without a timer per call: one timer per connection watches the oldest
unanswered command, and when it is ``timeout`` old the connection is dropped and every
waiting call fails at once (a later reply could no longer be matched to its caller).
The next call reconnects.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from typing import Any, cast

from yarl import URL

from ..wire import ProtocolError
from ..wire.resp import Reply, RespError, RespParser, encode_command

__all__ = ("RedisClient", "RedisScript")


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._parser = RespParser()
        self._waiters: deque[tuple[float, asyncio.Future[Reply]]] = deque()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have write/abort.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ProtocolError as exc:
            self._drop(ConnectionError(f"redis: {exc}"))
            return
        waiters = self._waiters
        for reply in replies:
            if not waiters:
                self._drop(ConnectionError("redis: a reply nobody asked for"))
                return
            _, future = waiters.popleft()
            if not future.done():  # a cancelled caller's reply is read and dropped
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop(ConnectionError(f"redis: connection lost ({exc or 'closed by the server'})"))

    def send(self, command: bytes) -> asyncio.Future[Reply]:
        if self.closed or self._transport is None:
            raise ConnectionError("redis: not connected")
        future: asyncio.Future[Reply] = self._loop.create_future()
        self._waiters.append((self._loop.time(), future))
        self._transport.write(command)
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout, self._check)
        return future

    def _check(self) -> None:
        self._timer = None
        if not self._waiters:
            return
        age = self._loop.time() - self._waiters[0][0]
        if age >= self._timeout:
            self._drop(TimeoutError(f"redis: no reply in {self._timeout:g}s"))
            return
        self._timer = self._loop.call_later(self._timeout - age, self._check)

    def _drop(self, exc: Exception) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._drop(ConnectionError("redis: client closed"))


class RedisClient:
    """``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS).

    Calls raise :class:`ConnectionError` or :class:`TimeoutError` when Redis is away, and
    :class:`~llmgw.wire.resp.RespError` when it refuses a command.
    """

    def __init__(self, url: str, *, timeout: float = 0.25, connect_timeout: float = 1.0) -> None:
        parsed = URL(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError(f"redis url: scheme must be redis or rediss, not {parsed.scheme!r}")
        self._host = parsed.host or "127.0.0.1"
        self._port = parsed.port or 6379
        self._tls = parsed.scheme == "rediss"
        self._user = parsed.user or None
        self._password = parsed.password
        db = parsed.path.strip("/") or "0"
        if not db.isdigit():
            raise ValueError(f"redis url: the path must be a database number, not {db!r}")
        self._db = int(db)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._protocol is not None and not self._protocol.closed

    async def call(self, *args: bytes | str | int) -> Reply:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        reply = await protocol.send(encode_command(*args))
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def _connect(self) -> _Protocol:
        async with self._lock:  # one connect for a burst of callers
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            protocol = _Protocol(loop, self.timeout)
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(
                    lambda: protocol,
                    self._host,
                    self._port,
                    ssl=ssl.create_default_context() if self._tls else None,
                )
                hello: list[tuple[Any, ...]] = []
                if self._password is not None:
                    user = (self._user,) if self._user else ()
                    hello.append(("AUTH", *user, self._password))
                if self._db:
                    hello.append(("SELECT", self._db))
                for command in hello:
                    reply = await protocol.send(encode_command(*command))
                    if isinstance(reply, RespError):
                        protocol.close()
                        raise ConnectionError(f"redis: {command[0]} refused: {reply}")
            self._protocol = protocol
            return protocol

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


class RedisScript:
    """A Lua script called by its SHA1 (``EVALSHA``), loaded with ``EVAL`` when the server
    does not know it yet (first use, or after a restart or ``SCRIPT FLUSH``)."""

    __slots__ = ("_client", "_sha", "source")

    def __init__(self, client: RedisClient, source: str) -> None:
        self._client = client
        self.source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[str]) -> Reply:
        try:
            return await self._client.call("EVALSHA", self._sha, len(keys), *keys, *args)
        except RespError as exc:
            if exc.kind != "NOSCRIPT":
                raise
        return await self._client.call("EVAL", self.source, len(keys), *keys, *args)
