"""Micro-benchmark: what metering adds to one request, and what it would add the other way.

    python benchmarks/metering.py [--requests 20000] [--repeats 5]

Measures, per request (median of ``--repeats`` runs, the variants interleaved in each run so
a busy machine skews them alike):

* ``request path``: the metering middleware's own work around the handler (open snapshot,
  journal append, buffer; settle, price, close snapshot, journal append, buffer), timed
  alone, with the writer batching to a SQLite file in the background as ``llmgw serve``
  runs it. Without a journal (PostgreSQL, memory) the two appends are skipped;
* ``with writer``: the same loop's wall time per request, which also holds the writer
  task's share (building records and SQL rows, a batch at a time) on the same event loop;
* ``sync insert``: the alternative of awaiting a SQLite insert of the open record before
  the upstream call (what crash safety costs without a journal);
* ``http on/off``: requests/s through an aiohttp server with and without the middleware
  (handler filling the context as the relay would), sequential keep-alive client, and the
  TTFB (time to response headers) of the same requests.
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
from llmgw.metering import Journal, SpillFile, SQLUsageStore, UsageWriter, open_record
from llmgw.metering.state import PendingRecord, close_snapshot, open_snapshot
from llmgw.middlewares.metering import _settle_outcome, metering_middleware, request_cost
from llmgw.pricing import PriceTable
from llmgw.storage.db import Database, open_database
from llmgw.typedefs import ApiFormat, Handler, Middleware, Operation
from llmgw.usage import Outcome, Usage


def _context(i: int) -> RequestContext:
    return RequestContext(
        request_id=f"req_gw_{i:024x}",
        started_at=time.time(),
        started_mono=time.monotonic(),
        client_format=ApiFormat.ANTHROPIC,
        operation=Operation.MESSAGES,
        stream=True,
        requested_model="claude-sonnet-4-6",
        session_id="1f0e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        identity=Identity(key_id="key_0123456789", user="ada", team="core", project="llmgw"),
    )


def _finish(ctx: RequestContext) -> None:
    ctx.attempts.append(Attempt(deployment="anthropic", provider="anthropic", status=200))
    ctx.usage = Usage(
        input_tokens=12,
        output_tokens=345,
        cache_read_input_tokens=45_000,
        message_id="msg_01XFDUDYJgAACzvnptvVoYEL",
        stop_reason="end_turn",
        final=True,
    )
    ctx.outcome = Outcome.COMPLETE
    ctx.status = 200
    ctx.ttfb = 0.2
    ctx.bytes_out = 5_000
    ctx.finished_mono = time.monotonic()


async def _writer(tmp: Path, name: str, *, journal: bool) -> tuple[UsageWriter, Database]:
    db = open_database(f"sqlite:///{tmp}/{name}.db")
    await db.open()
    store = SQLUsageStore(db)
    await store.open()
    writer = UsageWriter(
        store,
        journal=Journal(tmp / f"{name}.journal") if journal else None,
        spill=SpillFile(tmp / f"{name}.spill") if journal else None,
    )
    await writer.start()
    return writer, db


async def path_cost(tmp: Path, n: int, *, journal: bool) -> tuple[float, float]:
    """(µs on the request path, µs of loop time including the writer) per request."""
    writer, db = await _writer(tmp, f"path-{journal}", journal=journal)
    prices = PriceTable()
    ctxs = [_context(i) for i in range(n)]
    on_path = 0.0
    clock = time.perf_counter
    t0 = clock()
    for ctx in ctxs:
        # Exactly what metering_middleware does around the handler.
        t1 = clock()
        opened = open_snapshot(ctx)
        await writer.submit(PendingRecord(opened))
        t2 = clock()
        _finish(ctx)  # the relay's part, not timed
        t3 = clock()
        _settle_outcome(ctx, 200, False)
        ctx.cost_micros = cost = request_cost(ctx, prices)
        await writer.submit(PendingRecord(opened, close_snapshot(ctx, cost)))
        on_path += clock() - t3 + t2 - t1
        await asyncio.sleep(0)  # one loop turn per request, as a server would give
    await writer.flush()
    wall = clock() - t0
    await writer.stop()
    await db.close()
    return on_path / n * 1e6, wall / n * 1e6


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


async def http_run(tmp: Path, n: int, *, metering: bool) -> tuple[float, float]:
    """(requests/s, median TTFB in µs) through a server with or without metering."""
    writer, db = await _writer(tmp, f"http-{metering}", journal=True)
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
    ttfb: list[float] = []
    clock = time.perf_counter
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            async with session.post(url, data=b"{}") as r:
                await r.read()
        t0 = clock()
        for _ in range(n):
            t1 = clock()
            async with session.post(url, data=b"{}") as r:
                ttfb.append(clock() - t1)
                await r.read()
        elapsed = clock() - t0
    await runner.cleanup()
    await writer.stop()
    await db.close()
    return n / elapsed, statistics.median(ttfb) * 1e6


async def run(n: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        results: dict[str, list[float]] = {}

        def add(name: str, value: float) -> None:
            results.setdefault(name, []).append(round(value, 1))

        for r in range(repeats):
            sub = tmp / str(r)
            sub.mkdir()
            on_path, wall = await path_cost(sub, n, journal=True)
            add("journal: request path (µs)", on_path)
            add("journal: with writer (µs)", wall)
            on_path, wall = await path_cost(sub, n, journal=False)
            add("no journal: request path (µs)", on_path)
            add("no journal: with writer (µs)", wall)
            add("sync insert (µs/request)", await sync_insert_cost(sub, min(n, 3000)))
            # Alternate the order so neither variant always runs on a warmer machine.
            order = (False, True) if r % 2 == 0 else (True, False)
            for metering in order:
                rps, ttfb = await http_run(sub, min(n, 3000), metering=metering)
                label = "on" if metering else "off"
                add(f"http metering {label} (req/s)", rps)
                add(f"http metering {label} TTFB (µs)", ttfb)
        for name, values in sorted(results.items()):
            print(f"{name:32} median {statistics.median(values):9.1f}   runs {values}")
        off = statistics.median(results["http metering off (req/s)"])
        on = statistics.median(results["http metering on (req/s)"])
        print(f"{'http throughput on/off':32} {on / off:9.1%}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="metering overhead micro-benchmark")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(run(args.requests, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
