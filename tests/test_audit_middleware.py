"""audit_middleware: exactly one completed record per request, whatever the path."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from llmgw.audit import AuditQuery, AuditWriter, JSONLAuditSink, Redactor, SQLAuditSink
from llmgw.audit.chain import SealedRecord
from llmgw.audit.setup import chain_name
from llmgw.config import (
    AuditConfig,
    AuthConfig,
    GatewayConfig,
    ProviderConfig,
    ServerConfig,
    StaticKeyConfig,
    parse_config,
)
from llmgw.context import get_context
from llmgw.errors import PermissionDeniedError, RateLimitError
from llmgw.keys import AUDIT
from llmgw.middlewares.audit import audit_middleware
from llmgw.typedefs import Handler
from tests.conftest import GatewayClient, GatewayFactory, gateway_config
from tests.fakes.anthropic import FakeAnthropic, Reply
from tests.secret_scan import SecretRegistry

CLIENT_KEY = "sk-llmgw-client-audit-test-0123456789abcdef"
KEY_SECRET = "audit-test-server-secret-0123456789"
PROVIDER_KEY = "sk-ant-api03-provider-audit-test-XYZ0123456789"

BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
}


def audit_cfg(**changes: Any) -> AuditConfig:
    return dataclasses.replace(AuditConfig(enabled=True, mode="sync", chain="test"), **changes)


async def records(client: GatewayClient, kind: str = "request") -> list[dict[str, Any]]:
    writer = client.app[AUDIT]
    await writer.flush()
    sink = writer.sink
    assert isinstance(sink, SQLAuditSink)
    return [s.record async for s in sink.query(AuditQuery(kind=kind))]


async def wait_records(
    client: GatewayClient, count: int, kind: str = "request"
) -> list[dict[str, Any]]:
    """The record is written after the client has its answer: poll briefly for it."""
    for _ in range(200):
        found = await records(client, kind)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    return await records(client, kind)


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch, secret_registry: SecretRegistry) -> None:
    secret_registry.add(CLIENT_KEY, KEY_SECRET, PROVIDER_KEY)
    monkeypatch.setenv("AUDIT_TEST_CLIENT_KEY", CLIENT_KEY)
    monkeypatch.setenv("AUDIT_TEST_KEY_SECRET", KEY_SECRET)
    monkeypatch.setenv("AUDIT_TEST_PROVIDER_KEY", PROVIDER_KEY)


def authed_config(url: str, **audit: Any) -> GatewayConfig:
    return gateway_config(
        url,
        providers=(
            ProviderConfig(
                name="anthropic",
                kind="anthropic",
                base_url=url,
                api_key_env="AUDIT_TEST_PROVIDER_KEY",
            ),
        ),
        auth=AuthConfig(
            enabled=True,
            store=False,
            key_secret_env="AUDIT_TEST_KEY_SECRET",
            admin_key_env="AUDIT_TEST_NO_ADMIN",
            static_keys=(
                StaticKeyConfig(id="key-alice", key_env="AUDIT_TEST_CLIENT_KEY", user="alice"),
            ),
        ),
        audit=audit_cfg(**audit),
    )


@pytest.mark.usefixtures("secrets_env")
async def test_allowed_request_is_one_completed_record_with_every_field(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway(authed_config(str(fake_anthropic.url)))
    headers = {
        "x-api-key": CLIENT_KEY,
        "anthropic-version": "2023-06-01",
        "user-agent": "claude-cli/2.1.0 (external, cli)",
        "x-claude-code-session-id": "sess-1",
        "x-claude-code-agent-id": "agent-7",
    }
    resp = await client.post("/v1/messages?beta=true", json=BODY, headers=headers)
    assert resp.status == 200
    await resp.read()
    (rec,) = await wait_records(client, 1)
    assert rec["request_id"] == resp.headers["x-llmgw-request-id"]
    assert rec["key_id"] == "static:key-alice"
    assert rec["identity"] == {"user": "alice", "team": None, "project": None}
    assert rec["client"] == "127.0.0.1"
    assert (rec["method"], rec["path"], rec["query"]) == ("POST", "/v1/messages", "beta=true")
    assert rec["format"] == "anthropic"
    assert rec["requested_model"] == rec["routed_model"] == "claude-sonnet-4-5"
    assert rec["provider"] == "anthropic"
    assert (rec["decision"], rec["reason"]) == ("allowed", None)
    assert (rec["status"], rec["outcome"]) == (200, "complete")
    assert rec["usage"]["input_tokens"] > 0 and rec["usage"]["final"] is True
    assert isinstance(rec["cost_micros"], int) and rec["cost_micros"] > 0
    assert rec["latency_ms"] > 0
    assert (rec["session_id"], rec["agent_id"]) == ("sess-1", "agent-7")
    assert rec["user_agent"] == "claude-cli/2.1.0 (external, cli)"
    (start,) = await records(client, "request.start")
    assert start["request_id"] == rec["request_id"]
    assert CLIENT_KEY not in json.dumps(rec) and PROVIDER_KEY not in json.dumps(rec)


@pytest.mark.usefixtures("secrets_env")
async def test_bad_key_is_audited_as_refused_with_the_reason(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway(authed_config(str(fake_anthropic.url)))
    resp = await client.post("/v1/messages", json=BODY, headers={"x-api-key": "sk-wrong-key-1"})
    assert resp.status == 401
    (rec,) = await wait_records(client, 1)
    assert rec["decision"] == "refused"
    assert rec["status"] == 401 and rec["outcome"] == "refused"
    assert rec["reason"].startswith("authentication_error: ")
    assert rec["key_id"] is None and rec["usage"] is None
    assert fake_anthropic.requests == []


def refusing(exc: web.HTTPException) -> Any:
    @web.middleware
    async def _refuse(request: web.Request, handler: Handler) -> web.StreamResponse:
        raise exc

    return _refuse


@pytest.mark.parametrize(
    ("exc", "status", "etype"),
    [
        (RateLimitError("budget exhausted for key-alice", retry_after=30), 429, "rate_limit_error"),
        (PermissionDeniedError("model not allowed for this key"), 403, "permission_error"),
    ],
)
async def test_limit_refusals_raised_inside_are_audited(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    exc: web.HTTPException,
    status: int,
    etype: str,
) -> None:
    cfg = gateway_config(str(fake_anthropic.url), audit=audit_cfg())
    client = await gateway(cfg, middlewares=(refusing(exc),))
    resp = await client.post("/v1/messages", json=BODY)
    assert resp.status == status
    (rec,) = await wait_records(client, 1)
    assert (rec["decision"], rec["status"], rec["outcome"]) == ("refused", status, "refused")
    assert rec["reason"].startswith(f"{etype}: ")


@pytest.mark.parametrize(
    ("data", "status"),
    [(b"{not json", 400), (b'{"max_tokens": 5}', 400), (b"[1, 2]", 400)],
)
async def test_bad_input_is_audited_as_refused(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, data: bytes, status: int
) -> None:
    client = await gateway(gateway_config(str(fake_anthropic.url), audit=audit_cfg()))
    resp = await client.post("/v1/messages", data=data)
    assert resp.status == status
    (rec,) = await wait_records(client, 1)
    assert rec["decision"] == "refused" and rec["status"] == status
    assert rec["reason"].startswith("invalid_request_error: ")


async def test_unknown_path_is_audited(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway(gateway_config(str(fake_anthropic.url), audit=audit_cfg()))
    resp = await client.get("/v2/nothing?api_key=sk-in-the-query-0123456789")
    assert resp.status == 404
    (rec,) = await wait_records(client, 1)
    assert (rec["decision"], rec["status"], rec["path"]) == ("refused", 404, "/v2/nothing")
    assert rec["query"] == "api_key=[REDACTED]"


async def test_upstream_error_is_allowed_with_upstream_error_outcome(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply.overloaded())
    client = await gateway(gateway_config(str(fake_anthropic.url), audit=audit_cfg()))
    resp = await client.post("/v1/messages", json=BODY)
    assert resp.status == 529
    (rec,) = await wait_records(client, 1)
    assert (rec["decision"], rec["status"], rec["outcome"]) == ("allowed", 529, "upstream_error")
    assert "overloaded_error" in rec["error"]
    assert [a["status"] for a in rec["attempts"]] == [529]


async def test_unreachable_upstream_is_a_completed_record(
    gateway: GatewayFactory, unused_tcp_port: int
) -> None:
    cfg = gateway_config(f"http://127.0.0.1:{unused_tcp_port}", audit=audit_cfg())
    client = await gateway(cfg)
    resp = await client.post("/v1/messages", json=BODY)
    assert resp.status == 502
    (rec,) = await wait_records(client, 1)
    assert (rec["decision"], rec["status"], rec["outcome"]) == ("allowed", 502, "upstream_error")
    assert rec["reason"].startswith("api_error: ")


async def test_streaming_request_records_usage_and_ttfb(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway(gateway_config(str(fake_anthropic.url), audit=audit_cfg()))
    resp = await client.post("/v1/messages", json={**BODY, "stream": True})
    assert b"message_stop" in await resp.read()
    (rec,) = await wait_records(client, 1)
    assert rec["stream"] is True and rec["outcome"] == "complete"
    assert rec["ttfb_ms"] is not None and rec["bytes_out"] > 0
    assert rec["usage"]["output_tokens"] > 0


async def test_client_disconnect_mid_stream_is_one_completed_record(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    gate = asyncio.Event()
    fake_anthropic.queue(Reply(gates={2: gate}))
    client = await gateway(gateway_config(str(fake_anthropic.url), audit=audit_cfg()))
    resp = await client.post("/v1/messages", json={**BODY, "stream": True})
    assert b"message_start" in await resp.content.readany()
    resp.close()
    await asyncio.wait_for(fake_anthropic.client_disconnected.wait(), 10)
    (rec,) = await wait_records(client, 1)
    assert rec["outcome"] == "client_disconnected"
    assert rec["decision"] == "allowed"
    gate.set()
    await asyncio.sleep(0.05)
    assert len(await records(client)) == 1


async def test_batched_mode_writes_no_start_record_and_flushes_within_interval(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    cfg = gateway_config(
        str(fake_anthropic.url), audit=audit_cfg(mode="batched", flush_interval=0.2)
    )
    client = await gateway(cfg)
    for _ in range(3):
        assert (await client.post("/v1/messages", json=BODY)).status == 200
    writer = client.app[AUDIT]
    sink = writer.sink
    assert isinstance(sink, SQLAuditSink)
    await asyncio.sleep(0.5)  # > flush_interval: the background flush ran, nobody called flush()
    stored = [s.record async for s in sink.query(AuditQuery())]
    assert [r["kind"] for r in stored] == ["request"] * 3
    assert writer.pending == 0


async def test_admin_change_is_an_audit_event_with_the_actor(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    from llmgw.admin import AdminChange, admin_change_hooks

    client = await gateway(gateway_config(str(fake_anthropic.url), audit=audit_cfg()))
    change = AdminChange(
        actor="admin",
        action="key.create",
        target="key-bob",
        details={"user": "bob", "secret": "sk-never-stored-0123456789", "limits": {"rpm": 5}},
    )
    for hook in admin_change_hooks(client.app):
        await hook(change)
    (rec,) = await records(client, "admin")
    assert (rec["actor"], rec["action"], rec["target"]) == ("admin", "key.create", "key-bob")
    assert rec["details"] == {"user": "bob", "limits": {"rpm": 5}}


class FailingSink:
    """A sink whose store is down (an AuditSink implementation, as a SIEM forwarder is)."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def head(self, chain: str) -> tuple[int, str]:
        return 0, "0" * 64

    async def write(self, records: Any) -> None:
        raise OSError("disk full")


@pytest.fixture
async def jsonl_writer(tmp_path: Path) -> AsyncIterator[AuditWriter]:
    writer = AuditWriter(JSONLAuditSink(tmp_path / "audit.jsonl"), chain="alone", mode="sync")
    await writer.open()
    yield writer
    await writer.close()


async def _hello(request: web.Request) -> web.Response:
    get_context(request).requested_model = "claude-haiku-4-5"
    return web.json_response({"ok": True})


async def test_middleware_alone_in_a_plain_application(
    aiohttp_client: AiohttpClient, jsonl_writer: AuditWriter, tmp_path: Path
) -> None:
    app = web.Application(middlewares=[audit_middleware(jsonl_writer, redactor=Redactor())])
    app.router.add_get("/hello", _hello)
    client = await aiohttp_client(app)
    assert (await client.get("/hello")).status == 200
    assert (await client.get("/missing")).status == 404
    sink = jsonl_writer.sink
    assert isinstance(sink, JSONLAuditSink)
    for _ in range(100):
        got: list[SealedRecord] = [s async for s in sink.query(AuditQuery(kind="request"))]
        if len(got) == 2:
            break
        await asyncio.sleep(0.01)
    hello, missing = (s.record for s in got)
    assert (hello["status"], hello["decision"], hello["outcome"]) == (200, "allowed", "complete")
    assert hello["requested_model"] == "claude-haiku-4-5"
    assert (missing["status"], missing["decision"]) == (404, "refused")


async def test_sync_mode_refuses_to_serve_unaudited_when_the_sink_is_down(
    aiohttp_client: AiohttpClient,
) -> None:
    writer = AuditWriter(FailingSink(), chain="down", mode="sync")
    await writer.open()
    app = web.Application(middlewares=[audit_middleware(writer)])
    app.router.add_get("/hello", _hello)
    client = await aiohttp_client(app)
    resp = await client.get("/hello")
    assert resp.status == 503
    assert (await resp.json())["error"]["message"] == "the audit log is unavailable"
    await writer.close()


ADMIN_KEY = "admin-credential-audit-test-0123456789"


async def test_admin_audit_endpoint_filters_records(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> None:
    secret_registry.add(ADMIN_KEY)
    monkeypatch.setenv("AUDIT_TEST_ADMIN_KEY", ADMIN_KEY)
    cfg = gateway_config(
        str(fake_anthropic.url),
        audit=audit_cfg(),
        auth=AuthConfig(admin_key_env="AUDIT_TEST_ADMIN_KEY"),
    )
    client = await gateway(cfg)
    assert (await client.post("/v1/messages", json=BODY)).status == 200
    assert (await client.post("/v1/messages", data=b"nope")).status == 400
    await wait_records(client, 2)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    resp = await client.get("/admin/audit?kind=request&decision=refused", headers=admin)
    assert resp.status == 200, await resp.text()
    page = await resp.json()
    assert page["count"] == 1
    (env,) = page["data"]
    assert env["record"]["status"] == 400 and env["seq"] > 0 and len(env["hash"]) == 64
    resp = await client.get("/admin/audit?since=1h&limit=2", headers=admin)
    assert [e["record"]["kind"] for e in (await resp.json())["data"]] == [
        "request.start",
        "request",
    ]
    assert (await client.get("/admin/audit?limit=0", headers=admin)).status == 400
    assert (await client.get("/admin/audit")).status == 401


def test_default_chain_is_one_per_listening_port_so_instances_never_share_one() -> None:
    def on(port: int, chain: str | None = None) -> str:
        return chain_name(
            GatewayConfig(server=ServerConfig(port=port), audit=AuditConfig(chain=chain))
        )

    host = socket.gethostname()
    assert on(8080) == f"{host}:8080" == on(8080)  # a restart continues its chain
    assert on(8081) != on(8080)
    assert on(0) == f"{host}:pid{os.getpid()}"  # the port is not known yet
    assert on(8080, "edge-1") == "edge-1"


def test_audit_is_on_by_default_and_off_when_disabled() -> None:
    assert GatewayConfig().audit.enabled
    assert parse_config({}).audit.enabled
    assert not parse_config({"audit": {"enabled": False}}).audit.enabled
