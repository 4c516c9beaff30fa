"""The admin API: its own credential, key lifecycle over JSON, field-named validation
errors, an audit hook call per change, and the route-table extension point."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from llmgw.admin import AdminChange, admin_app, admin_change_hooks, notify_admin_change
from llmgw.config import AuthConfig
from tests.conftest import GatewayClient, GatewayFactory, gateway_config
from tests.fakes import FakeAnthropic
from tests.secret_scan import SecretRegistry

ADMIN_KEY = "admin-credential-for-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MESSAGE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 5,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture
async def admin_client(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> AsyncIterator[tuple[GatewayClient, list[AdminChange]]]:
    monkeypatch.setenv("LLMGW_KEY_SECRET", "admin-test-server-secret-0123456789")
    monkeypatch.setenv("LLMGW_ADMIN_KEY", ADMIN_KEY)
    secret_registry.add(ADMIN_KEY, "admin-test-server-secret-0123456789")
    client = await gateway(gateway_config(str(fake_anthropic.url), auth=AuthConfig(enabled=True)))
    changes: list[AdminChange] = []

    async def record(change: AdminChange) -> None:
        changes.append(change)

    admin_change_hooks(client.app).append(record)
    yield client, changes


async def test_admin_needs_its_own_credential(
    admin_client: tuple[GatewayClient, list[AdminChange]], secret_registry: SecretRegistry
) -> None:
    client, _ = admin_client
    assert (await client.get("/admin/keys")).status == 401
    assert (
        await client.get("/admin/keys", headers={"x-api-key": "wrong-admin-credential"})
    ).status == 401
    created = await (await client.post("/admin/keys", headers=ADMIN, json={})).json()
    secret_registry.add(created["secret"])
    # A client key is not an admin credential, and the admin credential is not a client key.
    assert (await client.get("/admin/keys", headers={"x-api-key": created["secret"]})).status == 401
    assert (await client.post("/v1/messages", json=MESSAGE, headers=ADMIN)).status == 401
    assert (await client.get("/admin/keys", headers={"x-api-key": ADMIN_KEY})).status == 200


async def test_key_lifecycle_over_the_admin_api(
    admin_client: tuple[GatewayClient, list[AdminChange]], secret_registry: SecretRegistry
) -> None:
    client, changes = admin_client
    resp = await client.post(
        "/admin/keys",
        headers=ADMIN,
        json={
            "name": "ci",
            "team": "core",
            "allowed_models": ["claude-haiku-*"],
            "limits": {"rpm": 5},
            "expires_in": 3600,
        },
    )
    assert resp.status == 201
    assert resp.headers["Cache-Control"] == "no-store"
    created = await resp.json()
    secret = created["secret"]
    secret_registry.add(secret)
    key_id = created["key"]["id"]
    assert created["key"]["hint"].endswith(secret[-4:])
    assert (
        await client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": secret})
    ).status == 200

    listing = await client.get("/admin/keys", headers=ADMIN)
    text = await listing.text()
    assert secret not in text and secret[9:] not in text
    assert [k["id"] for k in json.loads(text)["data"]] == [key_id]
    shown = await (await client.get(f"/admin/keys/{key_id}", headers=ADMIN)).json()
    assert shown["limits"] == {"rpm": 5} and shown["team"] == "core"

    resp = await client.patch(
        f"/admin/keys/{key_id}",
        headers=ADMIN,
        json={"allowed_models": ["claude-opus-*"], "limits": {"rpm": 10}},
    )
    assert resp.status == 200
    assert (await resp.json())["limits"] == {"rpm": 10}
    # The revoking/updating instance applies the change at once (its cache is evicted).
    denied = await client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": secret})
    assert denied.status == 400

    rotated = await (
        await client.post(f"/admin/keys/{key_id}/rotate", headers=ADMIN, json={"grace_seconds": 60})
    ).json()
    secret_registry.add(rotated["secret"])
    opus = MESSAGE | {"model": "claude-opus-4-8"}
    for key in (secret, rotated["secret"]):
        assert (
            await client.post("/v1/messages", json=opus, headers={"x-api-key": key})
        ).status == 200

    resp = await client.post(f"/admin/keys/{key_id}/revoke", headers=ADMIN)
    assert (await resp.json())["revoked_at"] is not None
    for key in (secret, rotated["secret"]):
        assert (
            await client.post("/v1/messages", json=opus, headers={"x-api-key": key})
        ).status == 401
    assert (await client.delete(f"/admin/keys/{key_id}", headers=ADMIN)).status == 200  # idempotent
    assert (await (await client.get("/admin/keys", headers=ADMIN)).json())["data"] == []

    assert [(c.action, c.target, c.actor) for c in changes] == [
        ("key.create", key_id, "admin"),
        ("key.update", key_id, "admin"),
        ("key.rotate", key_id, "admin"),
        ("key.revoke", key_id, "admin"),
    ]
    assert changes[1].details == {
        "changed": {"allowed_models": ["claude-opus-*"], "limits": {"rpm": 10}}
    }
    for change in changes:
        dumped = json.dumps(change.details)
        assert secret not in dumped and rotated["secret"] not in dumped
        assert change.request_id is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"allowed_models": ["ok", 3]}, "allowed_models[1]: expected a non-empty string"),
        ({"limits": [1]}, "limits: expected a JSON object"),
        ({"expires_at": "tomorrow"}, "expires_at: expected a number"),
        ({"team": 7}, "team: expected a string or null"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"expires_in": 0}, "expires_in: must be at least 1"),
    ],
)
async def test_validation_errors_name_the_field(
    admin_client: tuple[GatewayClient, list[AdminChange]], body: dict[str, object], message: str
) -> None:
    client, changes = admin_client
    resp = await client.post("/admin/keys", headers=ADMIN, json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(message)
    assert changes == []


async def test_unknown_key_is_404_and_bad_json_is_400(
    admin_client: tuple[GatewayClient, list[AdminChange]],
) -> None:
    client, _ = admin_client
    assert (await client.get("/admin/keys/key_nope", headers=ADMIN)).status == 404
    for bad in (b"{not json", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        resp = await client.patch("/admin/keys/key_nope", headers=ADMIN, data=bad)
        assert resp.status == 400
        assert (await resp.json())["error"]["message"].startswith("body: not valid JSON")


async def test_no_admin_credential_means_no_admin_api(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMGW_ADMIN_KEY", raising=False)
    client = await gateway(gateway_config(str(fake_anthropic.url)))
    assert (await client.get("/admin/keys", headers=ADMIN)).status == 404


async def test_features_add_their_own_admin_routes(aiohttp_client: AiohttpClient) -> None:
    """The extension point, used the way metering/limits/audit/routing use it."""

    async def reload_routes(request: web.Request) -> web.Response:
        await notify_admin_change(
            request, action="routes.reload", target="*", details={"routes": 3}
        )
        return web.json_response({"reloaded": 3})

    def routing_admin(router: web.UrlDispatcher) -> None:
        router.add_post("/routes/reload", reload_routes)

    app = admin_app(ADMIN_KEY, routes=[routing_admin])
    seen: list[AdminChange] = []

    async def hook(change: AdminChange) -> None:
        seen.append(change)

    admin_change_hooks(app).append(hook)
    client = await aiohttp_client(app)
    assert (await client.post("/routes/reload")).status == 401
    resp = await client.post("/routes/reload", headers=ADMIN)
    assert await resp.json() == {"reloaded": 3}
    assert [(c.action, c.details) for c in seen] == [("routes.reload", {"routes": 3})]


async def test_key_list_is_paginated_with_limit_and_after(
    admin_client: tuple[GatewayClient, list[AdminChange]], secret_registry: SecretRegistry
) -> None:
    client, _ = admin_client
    ids = []
    for i in range(5):
        resp = await client.post("/admin/keys", headers=ADMIN, json={"name": f"k{i}"})
        body = await resp.json()
        secret_registry.add(body["secret"])
        ids.append(body["key"]["id"])
    everything = await (await client.get("/admin/keys", headers=ADMIN)).json()
    assert everything["has_more"] is False and len(everything["data"]) == 5
    assert {k["id"] for k in everything["data"]} == set(ids)
    ids = [k["id"] for k in everything["data"]]  # (created_at, id) order
    first = await (await client.get("/admin/keys?limit=2", headers=ADMIN)).json()
    assert [k["id"] for k in first["data"]] == ids[:2]
    assert (first["has_more"], first["first_id"], first["last_id"]) == (True, ids[0], ids[1])
    rest = await (
        await client.get(f"/admin/keys?limit=3&after={first['last_id']}", headers=ADMIN)
    ).json()
    assert [k["id"] for k in rest["data"]] == ids[2:] and rest["has_more"] is False

    for query, message in (
        ("limit=0", "limit: must be between 1 and 1000"),
        ("limit=1001", "limit: must be between 1 and 1000"),
        ("limit=ten", "limit: expected an integer"),
        ("after=key_nope", "after: no key with id 'key_nope'"),
    ):
        resp = await client.get(f"/admin/keys?{query}", headers=ADMIN)
        assert resp.status == 400
        assert (await resp.json())["error"]["message"] == message
