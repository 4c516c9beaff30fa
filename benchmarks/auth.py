"""What authentication adds per request: the middleware around a no-op handler, cache hot.

Runs in-process (no sockets, so the number is the middleware's own cost), prints the p50
and p99 of the plain handler, the handler behind ``auth_middleware`` with a virtual key
and with a static key, and the added cost. ``python benchmarks/auth.py [ROUNDS]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
import time

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from llmgw.auth import Authenticator, KeyHasher, KeyManager, KeySpec, MemoryKeyStore
from llmgw.context import Identity
from llmgw.middlewares.auth import auth_middleware
from llmgw.typedefs import Handler


async def _noop(request: web.Request) -> web.StreamResponse:
    return web.Response()


async def _timings(handler: Handler, headers: dict[str, str], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        request = make_mocked_request("GET", "/v1/models", headers=headers)
        start = time.perf_counter()
        await handler(request)
        out.append(time.perf_counter() - start)
    return out


def _wrap(auth: Authenticator) -> Handler:
    middleware = auth_middleware(auth)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await middleware(request, _noop)

    return handler


def _row(name: str, samples: list[float], base: float | None = None) -> float:
    p50 = statistics.median(samples) * 1e6
    p99 = statistics.quantiles(samples, n=100)[98] * 1e6
    extra = f"  (+{p50 - base:.2f} us over plain)" if base is not None else ""
    print(f"{name:28} p50 {p50:7.2f} us   p99 {p99:7.2f} us{extra}")
    return p50


async def main(rounds: int) -> None:
    manager = KeyManager(MemoryKeyStore(), KeyHasher(b"benchmark-secret-0123456789"))
    _, new = await manager.create(KeySpec(team="bench"))
    static_key = "static-benchmark-key-0123456789"
    static = {hashlib.sha256(static_key.encode()).hexdigest(): Identity(key_id="static:b")}
    virtual = Authenticator(hasher=manager.hasher, store=manager.store, cache_ttl=3600)
    static_only = Authenticator(static=static, cache_ttl=3600)
    await _timings(_wrap(virtual), {"x-api-key": new.secret}, 1000)  # warm the cache
    base = _row("plain handler", await _timings(_noop, {}, rounds))
    _row(
        "auth, virtual key (x-api-key)",
        await _timings(_wrap(virtual), {"x-api-key": new.secret}, rounds),
        base,
    )
    bearer = {"Authorization": f"Bearer {new.secret}", "x-api-key": new.secret}
    _row("auth, virtual key (both)", await _timings(_wrap(virtual), bearer, rounds), base)
    _row(
        "auth, static key",
        await _timings(_wrap(static_only), {"x-api-key": static_key}, rounds),
        base,
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
