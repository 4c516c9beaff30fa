"""What authentication adds per request, cache hot.

Two measurements in one run: ``Authenticator.authenticate`` alone (the lookup a request
pays), and real HTTP round trips over loopback keep-alive to two identical apps, one
behind ``auth_middleware``; their p50 difference is the added time to first byte.
``python benchmarks/auth.py [ROUNDS]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
import time

import aiohttp
from aiohttp import web

from llmgw.auth import Authenticator, KeyHasher, KeyManager, KeySpec, MemoryKeyStore
from llmgw.context import Identity
from llmgw.middlewares.auth import auth_middleware
from llmgw.typedefs import Middleware


async def _hello(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


def _us(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples) * 1e6, statistics.quantiles(samples, n=100)[98] * 1e6


async def _lookups(auth: Authenticator, key: str, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        await auth.authenticate(key)
        out.append(time.perf_counter() - start)
    return out


async def _serve(middlewares: list[Middleware]) -> tuple[web.AppRunner, str]:
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/v1/models", _hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site.port}/v1/models"


async def _round_trips(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], rounds: int
) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        out.append(time.perf_counter() - start)
    return out


async def main(rounds: int) -> None:
    manager = KeyManager(MemoryKeyStore(), KeyHasher(b"benchmark-secret-0123456789"))
    _, new = await manager.create(KeySpec(team="bench"))
    static_key = "static-benchmark-key-0123456789"
    static = {hashlib.sha256(static_key.encode()).hexdigest(): Identity(key_id="static:b")}
    virtual = Authenticator(hasher=manager.hasher, store=manager.store, cache_ttl=3600)
    static_only = Authenticator(static=static, cache_ttl=3600)
    for name, auth, key in (("virtual", virtual, new.secret), ("static", static_only, static_key)):
        await _lookups(auth, key, 100)
        p50, p99 = _us(await _lookups(auth, key, rounds))
        print(f"authenticate() {name:8} key, cache hot: p50 {p50:6.2f} us  p99 {p99:6.2f} us")

    plain, plain_url = await _serve([])
    guarded, guarded_url = await _serve([auth_middleware(virtual)])
    headers = {"x-api-key": new.secret, "Authorization": f"Bearer {new.secret}"}
    base: list[float] = []
    guarded_rt: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            await _round_trips(session, plain_url, headers, 200)
            await _round_trips(session, guarded_url, headers, 200)
            for _ in range(10):  # interleaved blocks so drift hits both sides alike
                base += await _round_trips(session, plain_url, headers, rounds // 10)
                guarded_rt += await _round_trips(session, guarded_url, headers, rounds // 10)
    finally:
        await plain.cleanup()
        await guarded.cleanup()
    b50, b99 = _us(base)
    a50, a99 = _us(guarded_rt)
    print(f"HTTP round trip, no auth:    p50 {b50:7.1f} us  p99 {b99:7.1f} us")
    print(f"HTTP round trip, with auth:  p50 {a50:7.1f} us  p99 {a99:7.1f} us")
    print(f"added by auth_middleware:    p50 {a50 - b50:+7.1f} us  (budget: +100 us)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000))
