"""auth_middleware: alone in a plain aiohttp app, and wired by make_app in front of the fake."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import anthropic
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from llmgw.auth import Authenticator, FailureThrottle, KeyHasher, KeyManager, KeySpec
from llmgw.auth.store import MemoryKeyStore
from llmgw.config import AuthConfig, StaticKeyConfig, StorageConfig
from llmgw.context import get_context
from llmgw.errors import AuthenticationError
from llmgw.keys import AUTHENTICATOR
from llmgw.middlewares.auth import auth_middleware
from tests.conftest import GatewayFactory, gateway_config
from tests.fakes import FakeAnthropic
from tests.secret_scan import SecretRegistry

SECRET = b"test-server-secret-0123456789"


async def _whoami(request: web.Request) -> web.Response:
    identity = get_context(request).identity
    assert identity is not None
    return web.json_response({"key_id": identity.key_id, "team": identity.team})


def _plain_app(
    authenticator: Authenticator, throttle: FailureThrottle | None = None
) -> web.Application:
    app = web.Application(middlewares=[auth_middleware(authenticator, throttle=throttle)])
    app.router.add_get("/whoami", _whoami)
    app.router.add_post("/v1/messages", _whoami)
    app.router.add_route("HEAD", "/api/hello", _ok)
    return app


async def _ok(request: web.Request) -> web.Response:
    return web.Response()


@pytest.fixture
def manager() -> KeyManager:
    return KeyManager(MemoryKeyStore(), KeyHasher(SECRET))


def _authenticator(manager: KeyManager, **kwargs: Any) -> Authenticator:
    auth = Authenticator(hasher=manager.hasher, store=manager.store, **kwargs)
    manager._on_change = auth.invalidate
    return auth


async def test_key_works_in_either_header_or_both(
    aiohttp_client: AiohttpClient, manager: KeyManager, secret_registry: SecretRegistry
) -> None:
    record, new = await manager.create(KeySpec(team="infra"))
    secret_registry.add(new.secret)
    client = await aiohttp_client(_plain_app(_authenticator(manager)))
    for headers in (
        {"x-api-key": new.secret},
        {"Authorization": f"Bearer {new.secret}"},
        {"x-api-key": new.secret, "Authorization": f"Bearer {new.secret}"},
    ):
        resp = await client.get("/whoami", headers=headers)
        assert resp.status == 200, headers.keys()
        assert await resp.json() == {"key_id": record.key_id, "team": "infra"}


async def test_two_different_credentials_are_a_401(
    aiohttp_client: AiohttpClient, manager: KeyManager
) -> None:
    _, new = await manager.create(KeySpec())
    client = await aiohttp_client(_plain_app(_authenticator(manager)))
    resp = await client.get(
        "/whoami", headers={"x-api-key": new.secret, "Authorization": "Bearer sk-llmgw-other"}
    )
    assert resp.status == 401
    body = await resp.json()
    assert body["error"]["type"] == "authentication_error"
    assert "different credentials" in body["error"]["message"]
    assert new.secret not in await resp.text()


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-api-key": "sk-llmgw-unknownunknownunknown"}, {"Authorization": "Basic dXNlcjpwdw=="}],
)
async def test_missing_or_unknown_credential_is_401_naming_both_headers(
    aiohttp_client: AiohttpClient, manager: KeyManager, headers: dict[str, str]
) -> None:
    client = await aiohttp_client(_plain_app(_authenticator(manager)))
    resp = await client.get("/whoami", headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert "x-api-key" in body["error"]["message"]
    assert "Authorization" in body["error"]["message"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_revoked_key_is_refused_at_once_on_the_revoking_instance(
    aiohttp_client: AiohttpClient, manager: KeyManager
) -> None:
    record, new = await manager.create(KeySpec())
    client = await aiohttp_client(_plain_app(_authenticator(manager)))
    assert (await client.get("/whoami", headers={"x-api-key": new.secret})).status == 200
    await manager.revoke(record.key_id)
    assert (await client.get("/whoami", headers={"x-api-key": new.secret})).status == 401


async def test_revoke_elsewhere_applies_within_cache_ttl(manager: KeyManager) -> None:
    record, new = await manager.create(KeySpec())
    # A second instance: same store, its own cache, not told about the revoke.
    other = Authenticator(hasher=manager.hasher, store=manager.store, cache_ttl=0.3)
    assert (await other.authenticate(new.secret)).key_id == record.key_id
    await manager.revoke(record.key_id)
    assert (await other.authenticate(new.secret)).key_id == record.key_id  # still cached
    await asyncio.sleep(0.35)
    with pytest.raises(AuthenticationError):
        await other.authenticate(new.secret)


async def test_expired_key_is_refused(aiohttp_client: AiohttpClient, manager: KeyManager) -> None:
    _, new = await manager.create(KeySpec(expires_at=time.time() - 1))
    client = await aiohttp_client(_plain_app(_authenticator(manager)))
    resp = await client.get("/whoami", headers={"x-api-key": new.secret})
    assert resp.status == 401
    assert "expired" in (await resp.json())["error"]["message"]


async def test_rotation_keeps_old_key_valid_for_the_grace_period(manager: KeyManager) -> None:
    record, old = await manager.create(KeySpec())
    auth = _authenticator(manager)
    _, new, until = await manager.rotate(record.key_id, grace=0.3)
    assert until == pytest.approx(time.time() + 0.3, abs=0.1)
    assert (await auth.authenticate(old.secret)).key_id == record.key_id
    assert (await auth.authenticate(new.secret)).key_id == record.key_id
    await asyncio.sleep(0.35)
    with pytest.raises(AuthenticationError):
        await auth.authenticate(old.secret)
    assert (await auth.authenticate(new.secret)).key_id == record.key_id


async def test_model_outside_allow_list_is_400_invalid_request(
    aiohttp_client: AiohttpClient, manager: KeyManager
) -> None:
    _, new = await manager.create(KeySpec(allowed_models=["claude-haiku-*", "claude-opus-4-5"]))
    client = await aiohttp_client(_plain_app(_authenticator(manager)))
    headers = {"x-api-key": new.secret}
    for model, status in (
        ("claude-haiku-4-5", 200),
        ("claude-opus-4-5", 200),
        ("claude-opus-4-8", 400),
    ):
        # No content type: the allow-list must not depend on what the client claims.
        resp = await client.post("/v1/messages", headers=headers, data=f'{{"model":"{model}"}}')
        assert resp.status == status, model
    body = await resp.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert "claude-opus-4-8" in body["error"]["message"]


async def test_warm_up_probe_needs_no_credential(
    aiohttp_client: AiohttpClient, manager: KeyManager
) -> None:
    client = await aiohttp_client(_plain_app(_authenticator(manager)))
    assert (await client.head("/api/hello")).status == 200


async def test_failures_from_one_address_are_throttled(
    aiohttp_client: AiohttpClient, manager: KeyManager
) -> None:
    _, new = await manager.create(KeySpec())
    throttle = FailureThrottle(max_failures=3, window=60)
    client = await aiohttp_client(_plain_app(_authenticator(manager), throttle))
    for i in range(3):
        resp = await client.get("/whoami", headers={"x-api-key": f"sk-llmgw-guess{i:030d}"})
        assert resp.status == 401
    resp = await client.get("/whoami", headers={"x-api-key": new.secret})
    assert resp.status == 429  # even the right key: the address is locked out
    assert (await resp.json())["error"]["type"] == "rate_limit_error"
    assert 1 <= int(resp.headers["Retry-After"]) <= 60


def _trace(calls: list[tuple[str, str]]) -> Any:
    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and "/llmgw/" in frame.f_code.co_filename:
            calls.append((Path(frame.f_code.co_filename).name, frame.f_code.co_name))

    return profile


async def _calls(auth: Authenticator, credential: str) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    sys.setprofile(_trace(calls))
    try:
        await auth.authenticate(credential)
    except AuthenticationError:
        pass
    finally:
        sys.setprofile(None)
    return calls


async def test_unknown_wrong_and_revoked_keys_take_the_same_code_path(
    manager: KeyManager,
) -> None:
    _, new = await manager.create(KeySpec())
    gone, revoked = await manager.create(KeySpec())
    await manager.revoke(gone.key_id)
    auth = _authenticator(manager)
    wrong = new.secret[:-1] + ("A" if new.secret[-1] != "A" else "B")
    unknown = KeyHasher(SECRET).new_key().secret
    paths = [await _calls(auth, c) for c in (wrong, unknown, revoked.secret, "not-even-a-key")]
    assert paths[0] == paths[1] == paths[2] == paths[3]
    assert ("authenticator.py", "_load") in paths[0]
    ok = await _calls(auth, new.secret)
    load = ("authenticator.py", "_load")
    # A valid key takes the same steps up to the store lookup, then builds its identity.
    assert ok[: ok.index(load)] == paths[0][: paths[0].index(load)]
    assert ("authenticator.py", "identity_from_match") in ok
    assert ("authenticator.py", "identity_from_match") not in paths[0]


async def test_static_keys_from_config(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> None:
    ci_key, env_key = "static-ci-key-0123456789abcdef", "static-env-key-0123456789abcdef"
    secret_registry.add(ci_key, env_key)
    monkeypatch.setenv("TEAM_KEY", env_key)
    auth = AuthConfig(
        enabled=True,
        store=False,
        static_keys=(
            StaticKeyConfig(id="ci", sha256=hashlib.sha256(ci_key.encode()).hexdigest(), team="ci"),
            StaticKeyConfig(id="dev", key_env="TEAM_KEY", allowed_models=("claude-haiku-4-5",)),
        ),
    )
    client = await gateway(gateway_config(str(fake_anthropic.url), auth=auth))
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert (
        await client.post("/v1/messages", json=body, headers={"x-api-key": ci_key})
    ).status == 200
    assert (
        await client.post("/v1/messages", json=body, headers={"x-api-key": env_key})
    ).status == 400
    assert (
        await client.post("/v1/messages", json=body, headers={"x-api-key": "nope-nope-nope"})
    ).status == 401
    assert "x-api-key" not in fake_anthropic.requests[0].headers  # the client key never goes up


@pytest.fixture
def auth_env(monkeypatch: pytest.MonkeyPatch, secret_registry: SecretRegistry) -> Iterator[None]:
    monkeypatch.setenv("LLMGW_KEY_SECRET", "gateway-secret-for-tests-0123456789")
    secret_registry.add("gateway-secret-for-tests-0123456789")
    yield


async def test_sdk_authenticates_through_both_headers_and_nothing_leaks(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    auth_env: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    secret_registry: SecretRegistry,
) -> None:
    caplog.set_level(logging.DEBUG)
    db_path = tmp_path / "gw.db"
    cfg = gateway_config(
        str(fake_anthropic.url),
        auth=AuthConfig(enabled=True),
        storage=StorageConfig(url=f"sqlite:///{db_path}"),
    )
    client = await gateway(cfg)
    authenticator = client.app[AUTHENTICATOR]
    assert authenticator.store is not None and authenticator.hasher is not None
    manager = KeyManager(authenticator.store, authenticator.hasher)
    record, new = await manager.create(KeySpec(user="ada", team="core"))
    secret_registry.add(new.secret)
    base_url = str(client.make_url(""))

    bearer = anthropic.AsyncAnthropic(
        base_url=base_url, auth_token=new.secret, api_key=None, max_retries=0
    )
    x_key = anthropic.AsyncAnthropic(base_url=base_url, api_key=new.secret, max_retries=0)
    for sdk in (bearer, x_key):
        async with sdk:
            message = await sdk.messages.create(
                model="claude-opus-4-8",
                max_tokens=16,
                messages=[{"role": "user", "content": "hi"}],
            )
            assert message.content[0].type == "text"
    sent = [r.headers for r in fake_anthropic.requests]
    assert len(sent) == 2
    assert all(new.secret not in str(dict(h)) for h in sent)

    bad = anthropic.AsyncAnthropic(base_url=base_url, api_key=new.secret + "x", max_retries=0)
    async with bad:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await bad.messages.create(
                model="claude-opus-4-8",
                max_tokens=16,
                messages=[{"role": "user", "content": "hi"}],
            )
    assert new.secret not in str(refused.value.body)

    assert new.secret not in caplog.text
    await client.close()  # closes the database, so the file is complete
    paths = await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    dump = {path.name: await asyncio.to_thread(path.read_bytes) for path in paths}
    for name, data in dump.items():
        assert new.secret.encode() not in data, name
        assert new.secret[len("sk-llmgw-") :].encode() not in data, name
    assert record.key_id.encode() in dump["gw.db"]  # the dump is a real one


async def test_allow_list_applies_to_models_named_in_bedrock_and_vertex_paths(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> None:
    key = "static-path-key-0123456789abcdef"
    secret_registry.add(key)
    monkeypatch.setenv("PATH_KEY", key)
    auth = AuthConfig(
        enabled=True,
        store=False,
        static_keys=(
            StaticKeyConfig(id="p", key_env="PATH_KEY", allowed_models=("claude-haiku-*",)),
        ),
    )
    client = await gateway(gateway_config(str(fake_anthropic.url), auth=auth))
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": []}
    vertex = "/v1/projects/p/locations/us-east5/publishers/anthropic/models/{}:rawPredict"
    headers = {"x-api-key": key}
    denied = [
        await client.post("/model/claude-opus-4-8/invoke", json=body, headers=headers),
        await client.post(vertex.format("claude-opus-4-8"), json=body, headers=headers),
    ]
    for resp in denied:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert fake_anthropic.requests == []  # refused before any upstream call
    allowed = await client.post("/model/claude-haiku-4-5/invoke", json=body, headers=headers)
    assert allowed.status == 200, await allowed.text()
    assert len(fake_anthropic.requests) == 1
