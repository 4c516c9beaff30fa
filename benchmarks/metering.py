"""Micro-benchmark: what metering adds to one request, and what it would add the other way.

    python benchmarks/metering.py [--requests 20000]

Measures, per request (µs, median of 5 runs):

* ``journal``: the request path of :func:`metering_middleware` (open record, journal
  append, queue; close record, price, journal append, queue) with the writer batching to
  a SQLite file in the background, as ``llmgw serve`` runs it;
* ``no journal``: the same without the journal (in-memory databases);
* ``sync insert``: the alternative of awaiting a SQLite insert of the open record before
  the upstream call (what crash safety costs without a journal);
* ``http on/off``: requests/s through an aiohttp server with and without the middleware
  (handler filling the context as the relay would), sequential keep-alive client.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

from llmgw.context import Attempt, Identity, RequestContext, get_context
from llmgw.metering import Journal, SpillFile, SQLUsageStore, UsageWriter, closed_record
from llmgw.metering.record import open_record
from llmgw.middlewares.metering import metering_middleware, request_cost
from llmgw.pricing import PriceTable
from llmgw.storage.db import open_database
from llmgw.typedefs import ApiFormat, Handler, Middleware, Operation
from llmgw.usage import Outcome, Usage


def _context(i: int) -> RequestContext:
    now = time.time()
    ctx = RequestContext(
        request_id=f"req_gw_{i:024x}",
        started_at=now,
        started_mono=time.monotonic(),
        client_format=ApiFormat.ANTHROPIC,
        operation=Operation.MESSAGES,
        stream=True,
        requested_model="claude-sonnet-4-6",
        session_id="1f0e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        identity=Identity(key_id="key_0123456789", user="ada", team="core", project="llmgw"),
    )
    return ctx


def _finish(ctx: RequestContext) -> None:
    ctx.attempts.append(Attempt(deployment="anthropic", provider="anthropic", status=200))
    ctx.usage = Usage(
        input_tokens=12, output_tokens=345, cache_read_input_tokens=45_000, final=True
    )
    ctx.outcome = Outcome.COMPLETE
    ctx.status = 200
    ctx.ttfb = 0.2
    ctx.bytes_out = 5_000


async def _writer(tmp: Path, *, journal: bool) -> tuple[UsageWriter, object]:
    db = open_database(f"sqlite:///{tmp}/bench-{journal}.db")
    await db.open()
    store = SQLUsageStore(db)
    await store.open()
    writer = UsageWriter(
        store,
        journal=Journal(tmp / f"j-{journal}") if journal else None,
        spill=SpillFile(tmp / f"s-{journal}") if journal else None,
    )
    await writer.start()
    return writer, db


async def path_cost(tmp: Path, n: int, *, journal: bool) -> float:
    """µs per request for metering's own work on the request path."""
    writer, db = await _writer(tmp, journal=journal)
    prices = PriceTable()
    ctxs = [_context(i) for i in range(n)]
    for ctx in ctxs:
        _finish(ctx)
    t0 = time.perf_counter()
    for ctx in ctxs:
        await writer.submit(open_record(ctx))
        ctx.cost_micros = request_cost(ctx, prices)
        await writer.submit(closed_record(ctx, ctx.cost_micros))
        if writer._queue.qsize() > 1000:  # let the writer run, as a real loop would
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - t0
    await writer.stop()
    await db.close()  # type: ignore[attr-defined]
    return elapsed / n * 1e6


async def sync_insert_cost(tmp: Path, n: int) -> float:
    """µs per request to await one SQLite insert of the open record."""
    db = open_database(f"sqlite:///{tmp}/sync.db")
    await db.open()
    store = SQLUsageStore(db)
    await store.open()
    t0 = time.perf_counter()
    for i in range(n):
        await store.write([open_record(_context(i))])
    elapsed = time.perf_counter() - t0
    await db.close()
    return elapsed / n * 1e6


def _fake_relay() -> Middleware:
    @web.middleware
    async def _fill(request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = get_context(request)
        ctx.client_format = ApiFormat.ANTHROPIC
        ctx.operation = Operation.MESSAGES
        ctx.requested_model = "claude-sonnet-4-6"
        response = await handler(request)
        _finish(ctx)
        return response

    return _fill


async def http_rps(tmp: Path, n: int, *, metering: bool) -> float:
    writer, db = await _writer(tmp, journal=True)
    chain = [metering_middleware(writer)] if metering else []

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 512)

    app = web.Application(middlewares=[*chain, _fake_relay()])
    app.router.add_post("/v1/messages", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site.port}/v1/messages"
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            async with session.post(url, data=b"{}") as r:
                await r.read()
        t0 = time.perf_counter()
        for _ in range(n):
            async with session.post(url, data=b"{}") as r:
                await r.read()
        elapsed = time.perf_counter() - t0
    await runner.cleanup()
    await writer.stop()
    await db.close()  # type: ignore[attr-defined]
    return n / elapsed


async def run(n: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        results: dict[str, list[float]] = {}
        for r in range(repeats):
            sub = tmp / str(r)
            sub.mkdir()
            results.setdefault("journal (µs/request)", []).append(
                await path_cost(sub, n, journal=True)
            )
            results.setdefault("no journal (µs/request)", []).append(
                await path_cost(sub, n, journal=False)
            )
            results.setdefault("sync insert (µs/request)", []).append(
                await sync_insert_cost(sub, min(n, 5000))
            )
            results.setdefault("http metering off (req/s)", []).append(
                await http_rps(sub, min(n, 3000), metering=False)
            )
            results.setdefault("http metering on (req/s)", []).append(
                await http_rps(sub, min(n, 3000), metering=True)
            )
        for name, values in results.items():
            print(f"{name:28} median {statistics.median(values):9.1f}   runs {values}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="metering overhead micro-benchmark")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(run(args.requests, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
