"""Per-entity limits through the admin API: round trip, field-named errors, an audit hook
call per change, and the limit taking effect on the next request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from llmgw.admin import AdminChange, admin_change_hooks
from llmgw.config import AuthConfig, LimitsConfig
from llmgw.limits import parse_limit_sets
from tests.conftest import GatewayClient, GatewayFactory, gateway_config
from tests.fakes import FakeAnthropic
from tests.secret_scan import SecretRegistry

ADMIN_KEY = "admin-credential-for-limits-tests-0123"
SERVER_SECRET = "limits-test-server-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MESSAGE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 5,
    "messages": [{"role": "user", "content": "hi"}],
}
Admin = tuple[GatewayClient, list[AdminChange]]


@pytest.fixture
async def admin(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> AsyncIterator[Admin]:
    monkeypatch.setenv("LLMGW_KEY_SECRET", SERVER_SECRET)
    monkeypatch.setenv("LLMGW_ADMIN_KEY", ADMIN_KEY)
    secret_registry.add(ADMIN_KEY, SERVER_SECRET)
    defaults = parse_limit_sets({"team": {"rpm": 100, "tpm": 1_000_000}}, "d")
    config = gateway_config(
        str(fake_anthropic.url),
        auth=AuthConfig(enabled=True),
        limits=LimitsConfig(enabled=True, defaults=defaults),
    )
    client = await gateway(config)
    changes: list[AdminChange] = []

    async def record(change: AdminChange) -> None:
        changes.append(change)

    admin_change_hooks(client.app).append(record)
    yield client, changes


async def new_key(client: GatewayClient, registry: SecretRegistry, **fields: Any) -> str:
    resp = await client.post("/admin/keys", headers=ADMIN, json=fields)
    assert resp.status == 201, await resp.text()
    secret: str = (await resp.json())["secret"]
    registry.add(secret)
    return secret


async def send(client: GatewayClient, secret: str) -> int:
    async with client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": secret}) as resp:
        await resp.read()
        return resp.status


async def test_limits_round_trip_over_the_admin_api(admin: Admin) -> None:
    client, changes = admin
    body = {"rpm": 5, "budgets": [{"usd": 25, "period": "daily", "warn_at": 0.8}]}
    resp = await client.put("/admin/limits/team/core", headers=ADMIN, json=body)
    assert resp.status == 200
    put = await resp.json()
    assert put["limits"] == body
    assert put["default"] == {"rpm": 100, "tpm": 1_000_000}
    # Unset fields fall back to the tier default.
    assert put["effective"] == {**body, "tpm": 1_000_000}

    shown = await (await client.get("/admin/limits/team/core", headers=ADMIN)).json()
    assert shown["limits"] == body and shown["updated_at"] == put["updated_at"]
    await client.put("/admin/limits/user/ada", headers=ADMIN, json={"tpm": 1000})
    listed = await (await client.get("/admin/limits", headers=ADMIN)).json()
    assert [(p["tier"], p["name"]) for p in listed["data"]] == [("team", "core"), ("user", "ada")]
    only = await (await client.get("/admin/limits?tier=user", headers=ADMIN)).json()
    assert [p["name"] for p in only["data"]] == ["ada"]

    resp = await client.delete("/admin/limits/team/core", headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["limits"] == body
    assert (await client.get("/admin/limits/team/core", headers=ADMIN)).status == 404
    assert (await client.delete("/admin/limits/team/core", headers=ADMIN)).status == 404

    assert [(c.action, c.target) for c in changes] == [
        ("limits.set", "team/core"),
        ("limits.set", "user/ada"),
        ("limits.delete", "team/core"),
    ]
    assert changes[0].details == {"limits": body}
    assert all(c.request_id is not None for c in changes)


async def test_limits_routes_need_the_admin_credential(
    admin: Admin, secret_registry: SecretRegistry
) -> None:
    client, _ = admin
    secret = await new_key(client, secret_registry)
    for headers in ({}, {"x-api-key": secret}):
        resp = await client.put("/admin/limits/team/core", headers=headers, json={"rpm": 1})
        assert resp.status == 401
    assert (await client.get("/admin/limits", headers={"x-api-key": secret})).status == 401


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/admin/limits/team/core", {"rpm": -1}, "body.rpm: expected a non-negative integer"),
        ("/admin/limits/team/core", {"burst": 1}, "body.burst: unknown key"),
        (
            "/admin/limits/team/core",
            {"budgets": [{"usd": 5, "period": "yearly"}]},
            "body.budgets[0].period: expected daily, weekly, monthly or a duration",
        ),
        (
            "/admin/limits/team/core",
            {"budgets": [{"usd": 5, "warn_at": 2}]},
            "body.budgets[0].warn_at: expected a fraction in (0, 1]",
        ),
        ("/admin/limits/org/core", {"rpm": 1}, "tier: unknown tier 'org'"),
        ("/admin/limits/global/core", {"rpm": 1}, "name: the global tier has one entry"),
        ("/admin/limits/team/core", [1], "body: expected a JSON object"),
    ],
)
async def test_put_errors_name_the_field(
    admin: Admin, path: str, body: object, message: str
) -> None:
    client, changes = admin
    resp = await client.put(path, headers=ADMIN, json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(message), error["message"]
    assert changes == []
    assert (await (await client.get("/admin/limits", headers=ADMIN)).json())["data"] == []


async def test_team_limit_applies_to_every_key_of_the_team_at_once(
    admin: Admin, secret_registry: SecretRegistry
) -> None:
    client, _ = admin
    first = await new_key(client, secret_registry, team="core")
    second = await new_key(client, secret_registry, team="core")
    other = await new_key(client, secret_registry, team="infra")
    assert (await client.put("/admin/limits/team/core", headers=ADMIN, json={"rpm": 2})).ok

    assert [await send(client, k) for k in (first, second, first)] == [200, 200, 429]
    async with client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": second}) as resp:
        assert resp.status == 429
        message = (await resp.json())["error"]["message"]
    assert "team 'core' limit of 2 requests per minute" in message
    assert await send(client, other) == 200  # another team keeps the default

    # Removing the override puts the team back on the default (100 rpm) at once.
    assert (await client.delete("/admin/limits/team/core", headers=ADMIN)).ok
    assert await send(client, first) == 200


async def test_user_budget_and_global_limit_set_at_runtime(
    admin: Admin, secret_registry: SecretRegistry
) -> None:
    client, _ = admin
    ada = await new_key(client, secret_registry, user="ada")
    bob = await new_key(client, secret_registry, user="bob")
    tiny = {"budgets": [{"usd": 0.000001, "period": "monthly"}]}
    assert (await client.put("/admin/limits/user/ada", headers=ADMIN, json=tiny)).ok
    async with client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": ada}) as resp:
        assert resp.status == 400
        message = (await resp.json())["error"]["message"]
    assert message.startswith("Budget exhausted: user 'ada' monthly budget of $0.00")
    assert await send(client, bob) == 200

    assert (await client.put("/admin/limits/global/*", headers=ADMIN, json={"rpm": 1})).ok
    assert [await send(client, bob) for _ in range(2)] == [200, 429]


async def test_a_keys_own_limits_are_validated_on_create_and_update(
    admin: Admin, secret_registry: SecretRegistry
) -> None:
    client, changes = admin
    resp = await client.post("/admin/keys", headers=ADMIN, json={"limits": {"rpm": -1}})
    assert resp.status == 400
    assert (await resp.json())["error"]["message"].startswith(
        "limits.rpm: expected a non-negative integer"
    )
    secret = await new_key(client, secret_registry, limits={"rpm": 1})
    key_id = changes[-1].target
    bad = {"limits": {"budgets": [{"usd": 1, "period": "day"}]}}
    resp = await client.patch(f"/admin/keys/{key_id}", headers=ADMIN, json=bad)
    assert resp.status == 400
    assert (await resp.json())["error"]["message"].startswith("limits.budgets[0].period:")
    # The key's own limit is enforced, over the tier default.
    assert [await send(client, secret) for _ in range(2)] == [200, 429]
