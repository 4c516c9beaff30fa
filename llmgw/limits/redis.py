"""Counters in Redis, shared by every gateway instance.

Each reserve and each settle is one Lua script, so a check and its charge are one atomic
step on the server and one round trip from the gateway, over one pipelined connection
(:mod:`._redis_client`). A command unanswered for ``timeout`` seconds drops the
connection, and each call has one deadline: a dead or frozen Redis costs a request at most
``max(timeout, 1) + 2 * timeout`` seconds, after which the limiter fails open or closed as
configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from ..wire.resp import Reply, RespError
from ._redis_client import RedisClient, RedisScript
from .counters import Counter, CounterKind, Reserved, StoreUnavailableError

__all__ = ("RESERVE_LUA", "SETTLE_LUA", "RedisCounters")

log = logging.getLogger("llmgw.limits")

#: One settle entry: KEY and "kind,bucket,delta,token": a window's correction in the bucket
#: it was charged in (skipped once the window expired), or a lease released.
_SETTLE_STEP = """
local function settle(key, spec)
  local kind, bucket, delta, token = string.match(spec, '^(%a),(%-?%d+),(%-?%d+),(.*)$')
  if kind == 'w' then
    if tonumber(delta) ~= 0 and redis.call('EXISTS', key) == 1 then
      redis.call('HINCRBY', key, bucket, delta)
    end
  else
    redis.call('ZREM', key, token)
  end
end
"""

#: KEYS: the settles riding along (S of them), then one per counter. ARGV: now_ms, token, S,
#: S settle entries, then one "kind,limit,amount,bucket,oldest,ttl_ms,want" per counter (one
#: string each: packing and parsing dozens of arguments costs more on the client than the
#: script does on the server). The settles apply first. ``want`` asks for an allowance on
#: top of the amount (:mod:`.leased`): up to a quarter of what is left after the request,
#: none if that is less than the amount, charged like the request (a window's units, or
#: stream slots named ``token#1``...). Returns "refused;used,...;first,...;granted,..."
#: with ``refused`` 1-based, 0 for none.
RESERVE_LUA = (
    _SETTLE_STEP
    + """
-- Lua writes a number of 15 digits or more as "1e+14": integers go out through %d.
local function int(v) return string.format('%d', v) end
local function ints(t)
  local out = {}
  for i = 1, #t do out[i] = int(t[i]) end
  return table.concat(out, ',')
end
local now = tonumber(ARGV[1])
local token = ARGV[2]
local base = tonumber(ARGV[3])
for i = 1, base do settle(KEYS[i], ARGV[3 + i]) end
local n = #KEYS - base
local specs, used, first, granted = {}, {}, {}, {}
local refused = 0
for i = 1, n do
  local f = {}
  for v in string.gmatch(ARGV[3 + base + i], '[^,]+') do f[#f + 1] = v end
  specs[i] = f
  local kind, limit, amount = f[1], tonumber(f[2]), tonumber(f[3])
  local key = KEYS[base + i]
  local total, oldest = 0, -1
  if kind == 'w' then
    local minb = tonumber(f[5])
    local fields = redis.call('HGETALL', key)
    for j = 1, #fields, 2 do
      local b = tonumber(fields[j])
      if b < minb then
        redis.call('HDEL', key, fields[j])
      else
        local v = tonumber(fields[j + 1])
        total = total + v
        if v > 0 and (oldest < 0 or b < oldest) then oldest = b end
      end
    end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    total = redis.call('ZCARD', key)
  end
  used[i], first[i], granted[i] = total, oldest, 0
  if refused == 0 and (total + amount > limit or total >= limit) then
    refused = i
    if kind ~= 'w' then  -- the earliest lease expiry says when a slot frees up
      local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if head[2] then first[i] = tonumber(head[2]) end
    end
  end
end
if refused == 0 then
  for i = 1, n do
    local f = specs[i]
    local key = KEYS[base + i]
    local ttl = tonumber(f[6])
    local amount = tonumber(f[3])
    local want = tonumber(f[7])
    local extra = 0
    if want > 0 then
      extra = math.min(want, math.floor((tonumber(f[2]) - used[i] - amount) / 4))
      if extra < math.max(amount, 1) then extra = 0 end  -- too little to serve a request
    end
    if f[1] == 'w' then
      -- A window key lives ttl past its newest bucket: extended when a bucket starts.
      if redis.call('HINCRBY', key, f[4], int(amount + extra)) == amount + extra then
        redis.call('PEXPIRE', key, ttl)
      end
    else
      local expiry = int(now + ttl)
      redis.call('ZADD', key, expiry, token)
      for j = 1, extra do redis.call('ZADD', key, expiry, token .. '#' .. j) end
      redis.call('PEXPIRE', key, ttl)
    end
    used[i] = used[i] + amount + extra
    granted[i] = extra
  end
end
return refused .. ';' .. ints(used) .. ';' .. ints(first) .. ';' .. ints(granted)
"""
)

#: KEYS and ARGV: settle entries, one each (the settles no reservation carried in time).
SETTLE_LUA = (
    _SETTLE_STEP
    + """
for i = 1, #KEYS do settle(KEYS[i], ARGV[i]) end
return 1
"""
)


class RedisCounters:
    """Counters in one Redis database, at ``url`` (``redis://host:6379/0``).

    Settles ride on the next reservation's script (applied first, atomically with it), so
    a busy gateway makes one round trip per request, not two; those still waiting after
    ``settle_delay`` seconds go together in one script of their own. :meth:`settle`
    returns once its corrections are applied either way. Each round trip cost ~0.1 ms of
    gateway CPU on the benchmark machine (system calls and wake-ups), as much as the
    Python around it.
    """

    __slots__ = (
        "_client",
        "_deadline",
        "_flush_handle",
        "_flushing",
        "_pending",
        "_reserve",
        "_settle",
        "settle_delay",
    )

    def __init__(self, url: str, *, timeout: float = 0.25, settle_delay: float = 0.005) -> None:
        connect_timeout = max(timeout, 1.0)
        # A call ends by this deadline, a connect (and its AUTH/SELECT) included.
        self._deadline = connect_timeout + 2 * timeout
        self._client = RedisClient(url, timeout=timeout, connect_timeout=connect_timeout)
        self._reserve = RedisScript(self._client, RESERVE_LUA)
        self._settle = RedisScript(self._client, SETTLE_LUA)
        self.settle_delay = settle_delay
        self._pending = _Settles()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    async def reserve(self, counters: Sequence[Counter], token: str, now: float) -> Reserved:
        return (await self.reserve_granting(counters, token, now, None))[0]

    async def reserve_granting(
        self, counters: Sequence[Counter], token: str, now: float, wants: Sequence[int] | None
    ) -> tuple[Reserved, tuple[int, ...]]:
        """:meth:`reserve`, asking for ``wants[i]`` more units (stream slots) of counter
        ``i`` as an allowance; returns what was seen and what each counter granted."""
        carried = self._take_settles()
        keys, args = carried.keys, [str(int(now * 1000)), token, str(len(carried.keys))]
        args += carried.specs
        for i, c in enumerate(counters):
            ttl_ms = max(int(c.ttl * 1000), 1)
            want = wants[i] if wants is not None else 0
            keys.append(c.key)
            args.append(
                f"{c.kind.value},{c.limit},{c.amount},{c.bucket},{c.oldest},{ttl_ms},{want}"
            )
        reply = await self._carrying(carried, self._reserve, keys, args)
        if not isinstance(reply, bytes):
            raise StoreUnavailableError(f"redis: unexpected reserve reply {reply!r}")
        refused, used, first, granted = reply.decode().split(";")
        seen = Reserved(
            refused=int(refused) - 1 if refused != "0" else None,
            used=tuple(int(v) for v in used.split(",")),
            first=tuple(int(v) for v in first.split(",")),
        )
        return seen, tuple(int(v) for v in granted.split(","))

    async def settle(self, counters: Sequence[Counter], deltas: Sequence[int], token: str) -> None:
        if not self._queue_settle(counters, deltas, token):
            return
        applied = asyncio.get_running_loop().create_future()
        self._pending.waiters.append(applied)
        await applied

    def settle_nowait(self, counters: Sequence[Counter], deltas: Sequence[int], token: str) -> None:
        """:meth:`settle` for a caller that does not wait for it (a failure is logged):
        no task, future or coroutine per request, which at one client showed up in the next
        request's time to first byte."""
        if self._queue_settle(counters, deltas, token):
            self._pending.unwatched += 1

    def _queue_settle(self, counters: Sequence[Counter], deltas: Sequence[int], token: str) -> bool:
        """Add the settle entries to those the next script carries; whether there were any."""
        pending = self._pending
        before = len(pending.keys)
        for c, delta in zip(counters, deltas, strict=True):
            if c.kind is CounterKind.WINDOW and not delta:
                continue
            pending.keys.append(c.key)
            pending.specs.append(f"{c.kind.value},{c.bucket},{delta},{token}")
        if len(pending.keys) == before:
            return False
        self._arm_flush()
        return True

    def give_back(self, key: str, kind: CounterKind, bucket: int, amount: int, token: str) -> None:
        """Queue the return of an allowance (:mod:`.leased`): ``amount`` units out of a
        window's ``bucket``, or the stream slot named ``token``. A failure is logged; what
        was not returned leaves the window with its bucket (a slot expires)."""
        self._pending.keys.append(key)
        self._pending.specs.append(f"{kind.value},{bucket},{-amount},{token}")
        self._pending.unwatched += 1
        self._arm_flush()

    def _arm_flush(self) -> None:
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.settle_delay, self._flush_later)

    def _take_settles(self) -> _Settles:
        carried, self._pending = self._pending, _Settles()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        return carried

    def _flush_later(self) -> None:
        self._flush_handle = None
        task = asyncio.ensure_future(self._flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self) -> None:
        carried = self._take_settles()
        if carried.keys:
            with contextlib.suppress(StoreUnavailableError):  # its waiters were told
                await self._carrying(carried, self._settle, carried.keys, carried.specs)

    async def _carrying(
        self, carried: _Settles, script: RedisScript, keys: list[str], args: list[str]
    ) -> Reply:
        """Run a script that applies ``carried``, and tell their waiters how it went."""
        try:
            reply = await self._call(script, keys, args)
        except BaseException as exc:
            # Failed, or cancelled (a shutdown): whether Redis ran the script is unknown, and
            # sending the settles again could count a correction twice; leases expire anyway.
            carried.fail(exc if isinstance(exc, Exception) else StoreUnavailableError(repr(exc)))
            raise
        carried.done()
        return reply

    async def _call(self, script: RedisScript, keys: list[str], args: list[str]) -> Reply:
        try:
            if self._client.connected:
                # Each command is bounded by the connection's own timer already; the
                # deadline is for a connect (and the callers queued behind it).
                return await script(keys, args)
            async with asyncio.timeout(self._deadline):
                return await script(keys, args)
        except (RespError, OSError, TimeoutError) as exc:
            raise StoreUnavailableError(f"redis: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._flush()  # settles still waiting for a reservation to carry them
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        await self._client.close()


class _Settles:
    """Settle entries waiting to go to Redis, and the :meth:`RedisCounters.settle` calls
    waiting for them."""

    __slots__ = ("keys", "specs", "unwatched", "waiters")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.specs: list[str] = []
        self.waiters: list[asyncio.Future[None]] = []
        #: Settles queued by :meth:`RedisCounters.settle_nowait`: nobody to tell on failure.
        self.unwatched = 0

    def done(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)

    def fail(self, exc: Exception) -> None:
        if self.unwatched:
            log.error(
                "could not settle %d requests or returned allowances (stream leases expire"
                " on their own): %s",
                self.unwatched,
                exc,
            )
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(exc)
