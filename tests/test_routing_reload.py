"""Route reloads: in-process under load, via the admin handler, and by SIGHUP to a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.app import make_app
from llmgw.config import load_config
from llmgw.keys import ROUTE_RELOADER, ROUTES
from llmgw.routing.reload import reload_routes_handler
from tests._routing_helpers import HEADERS, body
from tests.fakes.anthropic import FakeAnthropic, Reply

SONNET = "claude-sonnet-4-6"


def write_config(path: Path, provider: str, url: str, *, model: str = SONNET) -> None:
    path.write_text(
        f'[storage]\nurl = "sqlite://:memory:"\n'
        f'[metering]\nstore = "memory"\njournal = "off"\n'
        f'[providers.{provider}]\nkind = "anthropic"\nbase_url = "{url}"\n'
        f'[[routes]]\nmodel = "{model}"\ndeployments = [{{ provider = "{provider}" }}]\n'
    )


async def test_reload_during_100_open_streams_drops_none(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    release = asyncio.Event()
    old = FakeAnthropic(responder=lambda _r: Reply(gates={2: release}))
    new = FakeAnthropic()
    for fake in (old, new):
        await fake.start(aiohttp_server)
    path = tmp_path / "gw.toml"
    write_config(path, "old", str(old.url))
    app = make_app(load_config(path))
    app[ROUTE_RELOADER].path = path
    # The client's default pool (100) would hold the request made after the reload.
    client = await aiohttp_client(app, connector=aiohttp.TCPConnector(limit=200))

    streams = await asyncio.gather(
        *(
            client.post("/v1/messages", json=body(SONNET, stream=True), headers=HEADERS)
            for _ in range(100)
        )
    )
    assert old.open_streams == 100
    write_config(path, "new", str(new.url))
    table = await app[ROUTE_RELOADER].reload()
    after = await client.post("/v1/messages", json=body(SONNET), headers=HEADERS)

    assert app[ROUTES].table is table and app[ROUTES].generation == 1
    assert after.status == 200 and len(new.requests) == 1
    assert old.open_streams == 100
    release.set()
    texts = await asyncio.gather(*(s.text() for s in streams))
    assert all(s.status == 200 for s in streams)
    assert all(t.rstrip().endswith('"type":"message_stop"}') for t in texts)
    assert old.completed_streams == 100 and old.client_disconnects == 0


async def test_a_bad_file_keeps_the_old_table_and_the_handler_names_the_key(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    fake = FakeAnthropic()
    await fake.start(aiohttp_server)
    path = tmp_path / "gw.toml"
    write_config(path, "a", str(fake.url))
    gateway = make_app(load_config(path))
    gateway[ROUTE_RELOADER].path = path
    before = gateway[ROUTES].table
    # The handler is mounted wherever the operator guards it; here on a bare app.
    admin = web.Application()
    admin[ROUTE_RELOADER] = gateway[ROUTE_RELOADER]
    admin.router.add_post("/admin/routes/reload", reload_routes_handler)
    client = await aiohttp_client(admin)

    path.write_text(path.read_text() + 'strategy = "fastest"\n')
    bad = await client.post("/admin/routes/reload")
    write_config(path, "a", str(fake.url), model="claude-opus-4-6")
    good = await client.post("/admin/routes/reload")

    assert bad.status == 400
    message = (await bad.json())["error"]["message"]
    assert "routes[0].strategy: unknown strategy 'fastest'" in message
    assert good.status == 200
    assert await good.json() == {
        "generation": 1,
        "routes": [{"model": "claude-opus-4-6", "aliases": [], "deployments": 1}],
    }
    assert gateway[ROUTES].table is not before
    assert gateway[ROUTES].resolve(SONNET) is None


async def test_sighup_reloads_routes_of_a_running_server(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    old, new = FakeAnthropic(), FakeAnthropic()
    for fake in (old, new):
        await fake.start(aiohttp_server)
    path = tmp_path / "gw.toml"
    write_config(path, "old", str(old.url))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgw",
        "serve",
        "-c",
        str(path),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "ANTHROPIC_API_KEY": ""},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        if "listening on" not in line:
            pytest.fail(f"gateway did not start: {line!r}")
        base = line.split("listening on ", 1)[1].strip()
        async with aiohttp.ClientSession() as http:

            async def ask() -> int:
                async with http.post(
                    base + "/v1/messages", json=body(SONNET), headers=HEADERS
                ) as resp:
                    await resp.read()
                    return resp.status

            assert await ask() == 200
            write_config(path, "new", str(new.url))
            proc.send_signal(signal.SIGHUP)
            for _ in range(100):
                await asyncio.sleep(0.05)
                assert await ask() == 200
                if new.requests:
                    break
        assert len(new.requests) == 1
        assert json.loads(new.requests[0].body)["model"] == SONNET
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)


async def test_admin_route_reload_through_the_mounted_admin_api(
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new = FakeAnthropic(), FakeAnthropic()
    for fake in (old, new):
        await fake.start(aiohttp_server)
    monkeypatch.setenv("LLMGW_ADMIN_KEY", "admin-secret-for-tests")
    path = tmp_path / "gw.toml"
    write_config(path, "old", str(old.url))
    app = make_app(load_config(path))
    app[ROUTE_RELOADER].path = path
    client = await aiohttp_client(app)
    write_config(path, "new", str(new.url))

    refused = await client.post("/admin/routes/reload", headers={"x-api-key": "wrong"})
    reloaded = await client.post(
        "/admin/routes/reload", headers={"authorization": "Bearer admin-secret-for-tests"}
    )
    served = await client.post("/v1/messages", json=body(SONNET), headers=HEADERS)

    assert refused.status == 401
    assert reloaded.status == 200, await reloaded.text()
    assert (await reloaded.json())["generation"] == 1
    assert served.status == 200
    assert (len(old.requests), len(new.requests)) == (0, 1)
