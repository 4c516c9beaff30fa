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
from collections.abc import Sequence

from ..wire.resp import Reply, RespError
from ._redis_client import RedisClient, RedisScript
from .counters import Counter, CounterKind, Reserved, StoreUnavailableError

__all__ = ("RESERVE_LUA", "SETTLE_LUA", "RedisCounters")

#: KEYS: one per counter. ARGV: now_ms, token, then one "kind,limit,amount,bucket,oldest,ttl_ms"
#: per counter (one string each: packing and parsing dozens of arguments costs more on the
#: client than the script does on the server). Returns "refused;used,...;first,..." with
#: ``refused`` 1-based, 0 for none.
RESERVE_LUA = """
local now = tonumber(ARGV[1])
local token = ARGV[2]
local specs, used, first = {}, {}, {}
local refused = 0
for i = 1, #KEYS do
  local f = {}
  for v in string.gmatch(ARGV[2 + i], '[^,]+') do f[#f + 1] = v end
  specs[i] = f
  local kind, limit, amount = f[1], tonumber(f[2]), tonumber(f[3])
  local key = KEYS[i]
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
  used[i], first[i] = total, oldest
  if refused == 0 and (total + amount > limit or total >= limit) then
    refused = i
    if kind ~= 'w' then  -- the earliest lease expiry says when a slot frees up
      local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if head[2] then first[i] = tonumber(head[2]) end
    end
  end
end
if refused == 0 then
  for i = 1, #KEYS do
    local f = specs[i]
    local ttl = tonumber(f[6])
    local amount = tonumber(f[3])
    if f[1] == 'w' then
      -- A window key lives ttl past its newest bucket: extended when a bucket starts.
      if redis.call('HINCRBY', KEYS[i], f[4], amount) == amount then
        redis.call('PEXPIRE', KEYS[i], ttl)
      end
    else
      redis.call('ZADD', KEYS[i], now + ttl, token)
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
    used[i] = used[i] + amount
  end
end
return refused .. ';' .. table.concat(used, ',') .. ';' .. table.concat(first, ',')
"""

#: KEYS: one per counter. ARGV: token, then one "kind,bucket,delta" per counter.
SETTLE_LUA = """
for i = 1, #KEYS do
  local f = {}
  for v in string.gmatch(ARGV[1 + i], '[^,]+') do f[#f + 1] = v end
  if f[1] == 'w' then
    if tonumber(f[3]) ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
      redis.call('HINCRBY', KEYS[i], f[2], f[3])
    end
  else
    redis.call('ZREM', KEYS[i], ARGV[1])
  end
end
return 1
"""


class RedisCounters:
    """Counters in one Redis database, at ``url`` (``redis://host:6379/0``)."""

    __slots__ = ("_client", "_deadline", "_reserve", "_settle")

    def __init__(self, url: str, *, timeout: float = 0.25) -> None:
        connect_timeout = max(timeout, 1.0)
        # A call ends by this deadline, a connect (and its AUTH/SELECT) included.
        self._deadline = connect_timeout + 2 * timeout
        self._client = RedisClient(url, timeout=timeout, connect_timeout=connect_timeout)
        self._reserve = RedisScript(self._client, RESERVE_LUA)
        self._settle = RedisScript(self._client, SETTLE_LUA)

    async def reserve(self, counters: Sequence[Counter], token: str, now: float) -> Reserved:
        args = [str(int(now * 1000)), token]
        for c in counters:
            ttl_ms = max(int(c.ttl * 1000), 1)
            args.append(f"{c.kind.value},{c.limit},{c.amount},{c.bucket},{c.oldest},{ttl_ms}")
        reply = await self._call(self._reserve, [c.key for c in counters], args)
        if not isinstance(reply, bytes):
            raise StoreUnavailableError(f"redis: unexpected reserve reply {reply!r}")
        refused, used, first = reply.decode().split(";")
        return Reserved(
            refused=int(refused) - 1 if refused != "0" else None,
            used=tuple(int(v) for v in used.split(",")),
            first=tuple(int(v) for v in first.split(",")),
        )

    async def settle(self, counters: Sequence[Counter], deltas: Sequence[int], token: str) -> None:
        keys, args = [], [token]
        for c, delta in zip(counters, deltas, strict=True):
            if c.kind is CounterKind.WINDOW and not delta:
                continue
            keys.append(c.key)
            args.append(f"{c.kind.value},{c.bucket},{delta}")
        if keys:
            await self._call(self._settle, keys, args)

    async def _call(self, script: RedisScript, keys: list[str], args: list[str]) -> Reply:
        try:
            async with asyncio.timeout(self._deadline):
                return await script(keys, args)
        except (RespError, OSError, TimeoutError) as exc:
            raise StoreUnavailableError(f"redis: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._client.close()
