"""Gateway memory per open stream, by request body size: naive proxy vs llmgw.

`relay.py`'s paced case measures RSS per stream with a small request body. Claude Code's
bodies are ~100 KB (megabytes with images), and a proxy that keeps the request for as long
as it streams the answer holds all of it per open stream. Here an in-process upstream holds
every stream open after its first event until all N are open; the gateway's RSS is read
before and then, and its growth divided by N. Streams open all at once (`burst`: the peak of
a thundering herd) or one after another (`sequential`: a gateway whose streams start at
different times, which is the usual case). Each proxy is a fresh process per measurement,
warmed up with 16 connections first.

    python benchmarks/memory.py
    python benchmarks/memory.py --bodies 100000 --streams 500 --modes sequential
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import aiohttp
from _procs import Child, proxy_argv, rss_bytes, start_child, stop_child
from _servers import loop_name
from _variants import LLMGW, NAIVE, VARIANTS
from aiohttp import web

from llmgw.demo import DemoUsage, message_events, sse_bytes

_WARM = 16


class _Upstream:
    """Answers every message request with its first events, then waits for `release`."""

    def __init__(self) -> None:
        events = message_events(model="claude-sonnet-4-6", text="x" * 100, usage=DemoUsage())
        self.head = sse_bytes(events[:3])
        self.tail = sse_bytes(events[3:])
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        async for _ in request.content.iter_chunked(1 << 16):  # read, keep nothing
            pass
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(self.head)
        await self.release.wait()
        await resp.write(self.tail)
        await resp.write_eof()
        return resp


async def _stream(
    session: aiohttp.ClientSession, url: str, body: bytes, first: asyncio.Future[None]
) -> None:
    """One stream: ``first`` resolves with its first event, the call with its end."""
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    async with session.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {(await resp.read())[:200]!r}")
        await resp.content.readany()
        first.set_result(None)
        await resp.read()


def _request_body(prompt_bytes: int) -> bytes:
    message = {"role": "user", "content": "x" * prompt_bytes}
    body = {"model": "claude-sonnet-4-6", "max_tokens": 100, "stream": True, "messages": [message]}
    return json.dumps(body).encode()


async def measure(kind: str, body_size: int, mode: str, streams: int, tmp: Path) -> float:
    """KB of gateway RSS per open stream."""
    up = _Upstream()
    app = web.Application(client_max_size=body_size + (1 << 20))
    app.router.add_post("/v1/messages", up.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    children: list[Child] = []
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        upstream = f"http://127.0.0.1:{runner.addresses[0][1]}"
        variant = next(v for v in VARIANTS if v.name == kind)
        workdir = Path(tempfile.mkdtemp(dir=tmp))
        argv = proxy_argv(variant, workdir, upstream=upstream, redis="", prefix="")
        proxy = await start_child(kind, argv, cpu=None, logdir=workdir, children=children)
        pid = proxy.proc.pid
        body = _request_body(body_size)
        url = proxy.url + "/v1/messages"
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            up.release.set()
            for _ in range(4):  # code paths loaded, 16 connections open on both hops
                await asyncio.gather(
                    *(_stream(session, url, body, loop.create_future()) for _ in range(_WARM))
                )
            up.release.clear()
            await asyncio.sleep(0.2)
            before = rss_bytes(pid)
            firsts: list[asyncio.Future[None]] = []
            tasks = []
            async with asyncio.timeout(120):
                for _ in range(streams):
                    firsts.append(loop.create_future())
                    tasks.append(asyncio.ensure_future(_stream(session, url, body, firsts[-1])))
                    if mode == "sequential":
                        await firsts[-1]
                await asyncio.gather(*firsts)
            await asyncio.sleep(1.0)  # streams last longer: llmgw's trims (0.5 s apart) ran
            after = rss_bytes(pid)
            up.release.set()
            await asyncio.gather(*tasks)
        await stop_child(proxy, children)
        return (after - before) / streams / 1024
    finally:
        for child in list(children):
            await stop_child(child, children)
        await runner.cleanup()


async def run(args: argparse.Namespace, loop: str) -> None:
    bodies = [int(b) for b in args.bodies.split(",")]
    modes = args.modes.split(",")
    print(f"gateway RSS per open stream, {args.streams} streams, median of {args.repeats};"
          f" {loop}")  # fmt: skip
    print(f"{'body':>10} {'opened':<11} {'naive':>9} {'llmgw':>9} {'x naive':>8}")
    with tempfile.TemporaryDirectory(prefix="llmgw-memory-") as tmp:
        for body in bodies:
            for mode in modes:
                kb: dict[str, list[float]] = {NAIVE: [], LLMGW: []}
                for _ in range(args.repeats):
                    for kind in kb:
                        kb[kind].append(await measure(kind, body, mode, args.streams, Path(tmp)))
                naive, ours = (sorted(kb[k])[len(kb[k]) // 2] for k in (NAIVE, LLMGW))
                print(f"{body:>10,} {mode:<11} {naive:>6.1f} KB {ours:>6.1f} KB "
                      f"{ours / naive:>7.2f}x")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bodies", default="200,100000,1000000", help="prompt bytes, comma list")
    parser.add_argument("--modes", default="burst,sequential")
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    loop = loop_name()  # before the loop starts
    asyncio.run(run(args, loop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
