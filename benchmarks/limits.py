"""What limits_middleware adds before the first byte: memory and Redis backends vs off.

Each request goes over loopback HTTP to an in-process app. An outer middleware parses the
body (routing does that anyway) and stamps the time; the handler stamps its entry. The
added TTFB of a variant is its (handler entry - stamp) minus the same for limits off.
Limits charged per request: rpm, tpm, concurrent streams and a daily budget for each of
key, team and global scopes (12 counters). Reference: one Redis PING round trip.

``--baseline REV`` adds the same variants built from ``llmgw/limits`` and the limits
middleware as of git revision ``REV`` (loaded side by side), for an A/B in one run;
variants take turns over ``--rounds`` rounds so drift hits them alike.

    python -m benchmarks.limits [--requests 3000] [--redis URL] [--baseline HEAD]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
from aiohttp import web

from llmgw.context import Identity, get_body, get_context
from llmgw.limits import MemoryCounters, Tier, parse_limit_set
from llmgw.limits._redis_client import RedisClient
from llmgw.limits.limiter import Limiter
from llmgw.limits.redis import RedisCounters
from llmgw.middlewares.limits import limits_middleware
from llmgw.typedefs import Handler, Middleware
from llmgw.usage import Usage

LIMITS = parse_limit_set(
    {
        "rpm": 10**9,
        "tpm": 10**12,
        "concurrent": 10**6,
        "budgets": [{"usd": 10**6, "period": "daily"}],
    },
    "bench",
)
#: A Claude Code-sized request: ~60 KB of system prompt, tools and history.
BODY = json.dumps(
    {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code. " * 1500}],
        "messages": [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 80}
            for i in range(40)
        ],
    }
).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_app(
    limiter: Any, samples: list[float], factory: Callable[[Any], Middleware]
) -> web.Application:
    @web.middleware
    async def stamp(request: web.Request, handler: Handler) -> web.StreamResponse:
        await get_body(request)
        ctx = get_context(request)
        ctx.identity = Identity(key_id="k1", team="t1")
        ctx.extras["bench.t0"] = time.perf_counter()
        return await handler(request)

    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = get_context(request)
        samples.append(time.perf_counter() - ctx.extras["bench.t0"])
        ctx.usage = Usage(input_tokens=15_000, output_tokens=300, final=True)
        return web.Response(body=b"event: message_stop\ndata: {}\n\n")

    middlewares: list[Middleware] = [stamp]
    if limiter is not None:
        middlewares.append(factory(limiter))
    app = web.Application(middlewares=middlewares, client_max_size=1 << 24)
    app.router.add_post("/v1/messages", handler)
    return app


async def run_variant(
    limiter: Any, requests: int, factory: Callable[[Any], Middleware] = limits_middleware
) -> list[float]:
    samples: list[float] = []
    runner = web.AppRunner(build_app(limiter, samples, factory), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/v1/messages"
    headers = {"content-type": "application/json"}
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(requests):
                async with http.post(url, data=BODY, headers=headers) as resp:
                    await resp.read()
    finally:
        await runner.cleanup()
    return samples[requests // 10 :]  # drop warm-up


def load_baseline(rev: str) -> ModuleType:
    """``llmgw/limits`` and the limits middleware as of git ``rev``, as the package
    ``llmgw._limits_baseline`` (its relative imports of the rest of llmgw still resolve)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, check=True, capture_output=True, text=True
        ).stdout

    where = Path(tempfile.mkdtemp(prefix="llmgw-limits-baseline-"))
    for path in git("ls-tree", "--name-only", rev, "llmgw/limits/").split():
        if path.endswith(".py"):
            (where / Path(path).name).write_text(git("show", f"{rev}:{path}"))
    middleware = git("show", f"{rev}:llmgw/middlewares/limits.py")
    (where / "_middleware.py").write_text(middleware.replace("from ..limits.", "from ."))
    name = "llmgw._limits_baseline"
    spec = importlib.util.spec_from_file_location(
        name, where / "__init__.py", submodule_search_locations=[str(where)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package


async def redis_rtt(url: str, n: int) -> list[float]:
    """PING round trips over the connection the limiter uses."""
    client = RedisClient(url)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            await client.call("PING")
            out.append(time.perf_counter() - t0)
    finally:
        await client.close()
    return out[n // 10 :]


def limiter_with(counters: Any, limiter_cls: Any = Limiter) -> Any:
    defaults = {Tier.KEY: LIMITS, Tier.TEAM: LIMITS, Tier.GLOBAL: LIMITS}
    prefix = f"llmgw:bench:{secrets.token_hex(4)}:"
    return limiter_cls(counters, defaults=defaults, key_prefix=prefix)


async def main(requests: int, redis_url: str | None, baseline: str | None, rounds: int) -> None:
    # name -> (limiter or None, middleware factory)
    variants: dict[str, tuple[Any, Callable[[Any], Middleware]]] = {
        "off": (None, limits_middleware),
        "memory": (limiter_with(MemoryCounters()), limits_middleware),
    }
    if redis_url:
        variants["redis"] = (limiter_with(RedisCounters(redis_url)), limits_middleware)
    if baseline:
        base = load_baseline(baseline)
        limiter_mod = importlib.import_module(base.__name__ + ".limiter")
        factory = importlib.import_module(base.__name__ + "._middleware").limits_middleware
        variants[f"memory@{baseline}"] = (
            limiter_with(base.MemoryCounters(), limiter_mod.Limiter),
            factory,
        )
        if redis_url:
            redis_mod = importlib.import_module(base.__name__ + ".redis")
            variants[f"redis@{baseline}"] = (
                limiter_with(redis_mod.RedisCounters(redis_url), limiter_mod.Limiter),
                factory,
            )
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (limiter, factory) in variants.items():
            results[name] += await run_variant(limiter, requests // rounds, factory)
    base50 = statistics.median(results["off"])
    base99 = percentile(results["off"], 0.99)
    width = max(len(n) for n in results) + 1
    print(f"{'variant':<{width}} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}")
    for name, values in results.items():
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        print(
            f"{name:<{width}} {p50 * 1e3:8.4f} {p99 * 1e3:8.4f} "
            f"{(p50 - base50) * 1e3:10.4f} {(p99 - base99) * 1e3:10.4f}"
        )
    if redis_url:
        rtt = await redis_rtt(redis_url, requests)
        print(
            f"redis PING round trip: p50 {statistics.median(rtt) * 1e3:.4f} ms, "
            f"p99 {percentile(rtt, 0.99) * 1e3:.4f} ms"
        )
    for limiter, _ in variants.values():
        if limiter is not None:
            await limiter.counters.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="'' to skip")
    parser.add_argument("--baseline", help="git revision to compare with (e.g. HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.redis or None, args.baseline, args.rounds))
