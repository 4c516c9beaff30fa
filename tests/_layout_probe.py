"""Run as ``python tests/_layout_probe.py llmgw|plain N``, in a fresh interpreter: N streams
opened at once through llmgw (``make_app``) or through a plain aiohttp proxy, all held open
after their first event, then one JSON line: how many ``ClientResponse`` and
``StreamWriter`` instances are alive and how many of them keep a dict of their own.

A fresh process because what it checks depends on every instance a class ever had.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import client_reqrep, http_writer, web

_EVENT = b'event: ping\ndata: {"type": "ping"}\n\n'
_BODY = {"model": "claude-sonnet-4-6", "max_tokens": 8, "stream": True, "messages": []}
_WATCHED = (client_reqrep.ClientResponse, http_writer.StreamWriter)
_SESSION = web.AppKey("session", aiohttp.ClientSession)


def _census() -> dict[str, list[int]]:
    """Per watched class: [alive, with a dict]. On CPython 3.11/3.12 an instance's
    referents include its own dict only when it has one (else its values, one by one)."""
    out = {cls.__name__: [0, 0] for cls in _WATCHED}
    for obj in gc.get_objects():
        if type(obj) in _WATCHED:
            row = out[type(obj).__name__]
            row[0] += 1
            # (a dict among them holding the instance's own names; not one of its values)
            row[1] += any(type(ref) is dict and "_protocol" in ref for ref in gc.get_referents(obj))
    return out


async def _serve(app: web.Application, runners: list[web.AppRunner]) -> str:
    runner = web.AppRunner(app)
    await runner.setup()
    runners.append(runner)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _run(mode: str, streams: int) -> dict[str, list[int]]:
    release = asyncio.Event()

    async def upstream(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_EVENT)
        await release.wait()
        await resp.write_eof()
        return resp

    up_app = web.Application()
    up_app.router.add_post("/v1/messages", upstream)
    if mode == "llmgw":
        from llmgw import GatewayConfig, ProviderConfig, StorageConfig, make_app

        def gateway(url: str) -> web.Application:
            provider = ProviderConfig(name="anthropic", kind="anthropic", base_url=url)
            storage = StorageConfig(url="sqlite://:memory:")
            return make_app(GatewayConfig(providers=(provider,), storage=storage))
    else:

        def gateway(url: str) -> web.Application:
            async def session_ctx(app: web.Application) -> AsyncIterator[None]:
                async with aiohttp.ClientSession() as session:
                    app[_SESSION] = session
                    yield

            async def proxy(request: web.Request) -> web.StreamResponse:
                body = await request.read()
                async with request.app[_SESSION].post(url + "/v1/messages", data=body) as up:
                    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
                    await resp.prepare(request)
                    async for chunk in up.content.iter_any():
                        await resp.write(chunk)
                    await resp.write_eof()
                    return resp

            app = web.Application()
            app.cleanup_ctx.append(session_ctx)
            app.router.add_post("/v1/messages", proxy)
            return app

    runners: list[web.AppRunner] = []
    try:
        upstream_url = await _serve(up_app, runners)
        url = await _serve(gateway(upstream_url), runners) + "/v1/messages"
        headers = {"anthropic-version": "2023-06-01"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
            opened = asyncio.Event()
            count = 0

            async def one() -> None:
                nonlocal count
                async with client.post(url, json=_BODY, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    assert await r.content.readany()
                    count += 1
                    if count == streams:
                        opened.set()
                    await r.read()

            tasks = [asyncio.ensure_future(one()) for _ in range(streams)]
            async with asyncio.timeout(30):
                await opened.wait()
            census = _census()
            release.set()
            await asyncio.gather(*tasks)
        return census
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_run(sys.argv[1], int(sys.argv[2])))))
