"""End to end: the real Claude Code CLI with a virtual key in either header, and a revoke on
one gateway process reaching a second one sharing PostgreSQL within ``auth.cache_ttl``."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from llmgw.auth import KeyManager, KeySpec
from llmgw.config import AuthConfig
from llmgw.keys import AUTHENTICATOR
from tests.claude_cli import ProxySink, require_claude, run_claude
from tests.conftest import GatewayFactory, gateway_config
from tests.fakes import FakeAnthropic
from tests.secret_scan import SecretRegistry
from tests.test_auth_store import drop_schema, pg_schema_dsn

SERVER_SECRET = "e2e-server-secret-0123456789abcdef"
ADMIN_KEY = "e2e-admin-credential-0123456789abcdef"
CACHE_TTL = 1.0


@pytest.mark.e2e
@pytest.mark.parametrize("variable", ["ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY"])
async def test_claude_code_authenticates_with_a_virtual_key(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
    variable: str,
) -> None:
    require_claude()
    monkeypatch.setenv("LLMGW_KEY_SECRET", SERVER_SECRET)
    secret_registry.add(SERVER_SECRET)
    client = await gateway(gateway_config(str(fake_anthropic.url), auth=AuthConfig(enabled=True)))
    authenticator = client.app[AUTHENTICATOR]
    assert authenticator.store is not None and authenticator.hasher is not None
    manager = KeyManager(authenticator.store, authenticator.hasher)
    _, new = await manager.create(KeySpec(user="dev"))
    secret_registry.add(new.secret)
    env = {"ANTHROPIC_BASE_URL": str(client.make_url("")).rstrip("/"), variable: new.secret}
    async with ProxySink() as sink:
        result = await run_claude("say hi", env=env, sink=sink)
        assert result.returncode == 0, result.stderr
        assert result.json is not None and result.json["result"] == "Hello from the fake upstream."
        header = "Authorization" if variable == "ANTHROPIC_AUTH_TOKEN" else "x-api-key"
        assert all(header not in r.headers for r in fake_anthropic.requests)
        assert len(fake_anthropic.requests) >= 1

        bad = await run_claude("say hi", env=env | {variable: new.secret[:-2] + "zz"}, sink=sink)
        assert bad.returncode != 0
        assert sink.hits == []


async def _start_gateway(config: Path, log: Path) -> tuple[asyncio.subprocess.Process, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env |= {"LLMGW_KEY_SECRET": SERVER_SECRET, "LLMGW_ADMIN_KEY": ADMIN_KEY}
    with log.open("wb") as stderr:  # the child keeps its own copy of the descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "llmgw", "serve", "-c", str(config), "--port", "0"),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line, f"gateway exited early, see {log}"
        if line.startswith("llmgw listening on "):
            return proc, line.removeprefix("llmgw listening on ").strip()


@pytest.fixture
async def two_gateways(
    tmp_path: Path, secret_registry: SecretRegistry
) -> AsyncIterator[tuple[str, str]]:
    secret_registry.add(SERVER_SECRET, ADMIN_KEY)
    schema, dsn = await pg_schema_dsn()
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[storage]\nurl = "{dsn}"\n\n[auth]\nenabled = true\ncache_ttl = {CACHE_TTL}\n'
    )
    procs = []
    try:
        urls = []
        for name in ("a", "b"):
            proc, url = await _start_gateway(config, tmp_path / f"{name}.log")
            procs.append(proc)
            urls.append(url)
        yield urls[0], urls[1]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
        await drop_schema(schema)


@pytest.mark.postgres
async def test_revoke_on_one_instance_reaches_the_other_within_cache_ttl(
    two_gateways: tuple[str, str], secret_registry: SecretRegistry
) -> None:
    a, b = two_gateways
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    message = {
        "model": "claude-haiku-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{a}/admin/keys", json={"name": "shared"}, headers=admin) as resp:
            assert resp.status == 201
            created = await resp.json()
        secret = created["secret"]
        secret_registry.add(secret)

        status: Callable[[], Awaitable[int]]

        async def status() -> int:
            async with http.post(
                f"{b}/v1/messages", json=message, headers={"x-api-key": secret}
            ) as r:
                await r.read()
                return r.status

        assert await status() == 200  # B has now cached the key as valid
        async with http.post(
            f"{a}/admin/keys/{created['key']['id']}/revoke", headers=admin
        ) as resp:
            assert resp.status == 200
        revoked_at = time.monotonic()
        while (code := await status()) == 200:
            assert time.monotonic() - revoked_at < CACHE_TTL + 0.5, "revoke did not reach B in time"
            await asyncio.sleep(0.05)
        assert code == 401
        elapsed = time.monotonic() - revoked_at
        assert elapsed <= CACHE_TTL + 0.5
