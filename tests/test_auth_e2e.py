"""End to end: the real Claude Code CLI with a virtual key in either header or from an
``apiKeyHelper`` (a virtual key, or a short-lived JWT it mints), and a revoke on one gateway
process reaching a second one sharing PostgreSQL within ``auth.cache_ttl``."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pytest_aiohttp import AiohttpServer

from llmgw.auth import KeyManager, KeySpec
from llmgw.config import AuthConfig, JwtConfig
from llmgw.context import Identity, get_context
from llmgw.keys import AUTHENTICATOR, USAGE_STORE, USAGE_WRITER
from llmgw.metering.record import UsageRecord
from llmgw.typedefs import Handler, Middleware
from tests.claude_cli import ProxySink, require_claude, run_claude
from tests.conftest import GatewayClient, GatewayFactory, gateway_config
from tests.fakes import FakeAnthropic
from tests.secret_scan import SecretRegistry
from tests.test_auth_jwks import AUD, ISS, JwksServer, ec_jwk
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


# --- apiKeyHelper: the CLI runs a command for its credential and sends it in both headers ---

_MINT = """\
import sys, time, uuid
import jwt
key = open(sys.argv[1], "rb").read()
now = int(time.time())
claims = {{"sub": "grace", "team": "platform", "proj": "cli", "iss": {iss!r}, "aud": {aud!r},
          "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex}}
token = jwt.encode(claims, key, algorithm="ES256", headers={{"kid": "ec-1"}})
with open(sys.argv[2], "a") as minted:
    minted.write(token + "\\n")
print(token)
"""


@dataclass(slots=True)
class Seen:
    """What reached the handler: both credential headers and the identity they resolved to."""

    requests: list[tuple[str | None, str | None, Identity | None]] = field(default_factory=list)

    def middleware(self) -> Middleware:
        @web.middleware
        async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
            headers = request.headers
            identity = get_context(request).identity
            self.requests.append((headers.get("Authorization"), headers.get("x-api-key"), identity))
            return await handler(request)

        return observe

    def credentials(self) -> set[str]:
        """Every credential seen; fails unless each request carried it in both headers."""
        values = set()
        for authorization, api_key, _ in self.requests:
            assert api_key is not None and authorization == f"Bearer {api_key}"
            values.add(api_key)
        return values


async def _usage(client: GatewayClient) -> list[UsageRecord]:
    await client.app[USAGE_WRITER].flush()
    return await client.app[USAGE_STORE].records(since=0, until=time.time() + 60)


@pytest.mark.e2e
async def test_api_key_helper_jwt_reaches_metering_with_its_user_and_team(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
    secret_registry: SecretRegistry,
) -> None:
    require_claude()
    signing = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "signing.pem"
    pem.write_bytes(
        signing.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    idp = JwksServer([ec_jwk(signing, "ec-1")])
    await idp.start(aiohttp_server)
    script, minted = tmp_path / "mint.py", tmp_path / "minted.txt"
    script.write_text(_MINT.format(iss=ISS, aud=AUD))
    secret_registry.exempt(minted)  # the helper's own record of what it printed

    jwt_cfg = JwtConfig(
        issuer=ISS,
        audience=AUD,
        algorithms=("ES256",),
        jwks_url=idp.url,
        jwks_timeout=2.0,
        team_claim="team",
        project_claim="proj",
    )
    seen = Seen()
    auth = AuthConfig(enabled=True, store=False, jwt=jwt_cfg)
    client = await gateway(
        gateway_config(str(fake_anthropic.url), auth=auth), middlewares=(seen.middleware(),)
    )
    env = {"ANTHROPIC_BASE_URL": str(client.make_url("")).rstrip("/")}
    settings = {"apiKeyHelper": f"{sys.executable} {script} {pem} {minted}"}
    async with ProxySink() as sink:
        result = await run_claude("say hi", env=env, sink=sink, settings=settings)
        assert sink.hits == []
    assert result.returncode == 0, result.stderr
    assert result.json is not None and result.json["result"] == "Hello from the fake upstream."

    tokens = set(minted.read_text().split())
    secret_registry.add(*tokens)
    assert tokens and seen.requests
    assert seen.credentials() <= tokens  # exactly what the helper printed, in both headers
    for *_, identity in seen.requests:
        assert identity is not None
        assert (identity.key_id, identity.user, identity.team, identity.project) == (
            "jwt:grace",
            "grace",
            "platform",
            "cli",
        )
        assert identity.metadata["credential"] == "jwt"
    usage = [r for r in await _usage(client) if r.requested_model is not None]
    assert usage and all(
        (r.user, r.team, r.key_id) == ("grace", "platform", "jwt:grace") for r in usage
    )
    assert sum(r.output_tokens for r in usage) > 0
    assert idp.fetches == 1


@pytest.mark.e2e
async def test_api_key_helper_virtual_key_is_sent_in_both_headers_and_accepted(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> None:
    require_claude()
    monkeypatch.setenv("LLMGW_KEY_SECRET", SERVER_SECRET)
    secret_registry.add(SERVER_SECRET)
    seen = Seen()
    client = await gateway(
        gateway_config(str(fake_anthropic.url), auth=AuthConfig(enabled=True)),
        middlewares=(seen.middleware(),),
    )
    authenticator = client.app[AUTHENTICATOR]
    assert authenticator.store is not None and authenticator.hasher is not None
    record, new = await KeyManager(authenticator.store, authenticator.hasher).create(
        KeySpec(user="lin", team="data")
    )
    secret_registry.add(new.secret)
    env = {"ANTHROPIC_BASE_URL": str(client.make_url("")).rstrip("/")}
    async with ProxySink() as sink:
        result = await run_claude(
            "say hi", env=env, sink=sink, settings={"apiKeyHelper": f"echo {new.secret}"}
        )
        assert sink.hits == []
    assert result.returncode == 0, result.stderr
    assert seen.credentials() == {new.secret}
    assert all(i is not None and i.key_id == record.key_id for *_, i in seen.requests)
    usage = [r for r in await _usage(client) if r.requested_model is not None]
    assert usage and all(
        (r.key_id, r.user, r.team) == (record.key_id, "lin", "data") for r in usage
    )
