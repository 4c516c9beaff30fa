"""Body capture: off by default, selected per model or identity, redacted, capped, and
streamed responses tapped without touching the client's stream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any
from urllib.parse import quote

import pytest

from llmgw.audit import AuditQuery, Redactor, SQLAuditSink
from llmgw.audit.capture import CAPTURE
from llmgw.audit.redact import MASK
from llmgw.config import AuditCaptureConfig, AuditConfig, GatewayConfig
from llmgw.context import RequestContext
from llmgw.keys import AUDIT
from tests.claude_cli import ProxySink, require_claude, run_claude
from tests.conftest import GatewayClient, GatewayFactory, gateway_config, live_contexts
from tests.fakes.anthropic import FakeAnthropic, Reply
from tests.secret_scan import SecretRegistry

ANTHROPIC_SHAPED = "sk-ant-api03-" + "Q" * 40
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
CLI_KEY = "sk-ant-api03-cli-capture-test-0123456789abcdef"


def capture_config(url: str, **capture: Any) -> GatewayConfig:
    audit = AuditConfig(
        enabled=True,
        mode="sync",
        chain="cap",
        redact_patterns=("email",),
        capture=AuditCaptureConfig(**capture),
    )
    return gateway_config(url, audit=audit)


async def completed(client: GatewayClient, count: int = 1) -> list[dict[str, Any]]:
    sink = client.app[AUDIT].sink
    assert isinstance(sink, SQLAuditSink)
    for _ in range(300):
        found = [s.record async for s in sink.query(AuditQuery(kind="request"))]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    return found


def test_redactor_masks_secrets_by_shape_by_name_and_literally() -> None:
    red = Redactor(literals=["opaque-provider-credential-42"], patterns=["email"])
    text = json.dumps(
        {
            "a": f"use {ANTHROPIC_SHAPED} or {AWS_KEY}",
            "api_key": "anything-at-all",
            "b": "Authorization: Bearer abc.def.ghijklmnop",
            "c": "the key is opaque-provider-credential-42, mail bob@example.com",
            "max_tokens": 100,
        }
    )
    out = red.text(text)
    for gone in (ANTHROPIC_SHAPED, AWS_KEY, "anything-at-all", "abc.def.ghijklmnop"):
        assert gone not in out
    assert "opaque-provider-credential-42" not in out and "bob@example.com" not in out
    assert json.loads(out)["max_tokens"] == 100 and out.count(MASK) == 6


def test_a_string_seen_clean_is_still_masked_where_it_is_a_presented_credential() -> None:
    base = Redactor()
    opaque = "opaque-client-credential-77"
    assert base.text(opaque) == opaque  # no known shape: clean for the shared redactor
    assert base.with_literals([opaque]).text(f"ua {opaque}") == f"ua {MASK}"
    assert base.with_literals([opaque]).text(opaque) == MASK
    assert base.text(f"x {ANTHROPIC_SHAPED}") == f"x {MASK}"  # and shapes every time
    assert base.text(f"x {ANTHROPIC_SHAPED}") == f"x {MASK}"


def test_redactor_masks_secret_query_parameters_only() -> None:
    red = Redactor()
    assert red.query("beta=true&key=abc123&x-amz-signature=ff&limit=5") == (
        "beta=true&key=[REDACTED]&x-amz-signature=[REDACTED]&limit=5"
    )


def test_a_remembered_query_is_still_masked_for_a_request_whose_credential_it_holds() -> None:
    base = Redactor()
    opaque = "opaque-credential-0123456789"
    query = f"note={opaque}"
    assert base.query(query) == query  # no known shape: clean, and remembered
    assert base.query(query) == query
    assert base.with_literals([opaque]).query(query) == f"note={quote(MASK, safe='[]')}"
    assert base.query(query) == query


async def test_capture_is_off_by_default(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway(capture_config(str(fake_anthropic.url)))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}
    assert (await client.post("/v1/messages", json=body)).status == 200
    (rec,) = await completed(client)
    assert "request_body" not in rec and "response_body" not in rec


async def test_streamed_response_is_captured_redacted_and_capped(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, secret_registry: SecretRegistry
) -> None:
    secret_registry.add(ANTHROPIC_SHAPED)
    fake_anthropic.queue(Reply(text=f"your key {ANTHROPIC_SHAPED}; write to carol@example.org"))
    client = await gateway(capture_config(str(fake_anthropic.url), models=("claude-sonnet-*",)))
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": f"my key is {ANTHROPIC_SHAPED}, I am a@b.io"}],
    }
    resp = await client.post("/v1/messages", json=body)
    streamed = await resp.read()
    assert ANTHROPIC_SHAPED.encode() in streamed  # the client's stream is untouched
    (rec,) = await completed(client)
    req, out = rec["request_body"], rec["response_body"]
    assert ANTHROPIC_SHAPED not in req["text"] and "a@b.io" not in req["text"]
    assert json.loads(req["text"])["messages"][0]["content"] == f"my key is {MASK}, I am {MASK}"
    assert out["bytes"] == len(streamed) and not out["truncated"]
    assert "event: message_stop" in out["text"]
    assert ANTHROPIC_SHAPED not in out["text"] and "carol@example.org" not in out["text"]


async def test_captured_bodies_are_let_go_once_the_record_is_written(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    # aiohttp keeps a keep-alive connection's last request, and so its context, until the
    # next request comes: the context must not keep the bodies the record was built from.
    seen: list[RequestContext] = []
    keep = live_contexts(seen)
    config = capture_config(str(fake_anthropic.url), all=True)
    client = await gateway(config, middlewares=(keep,))
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": "remember this"}],
    }
    resp = await client.post("/v1/messages", json=body)
    await resp.read()
    (rec,) = await completed(client)
    assert "remember this" in rec["request_body"]["text"] and rec["response_body"]["bytes"] > 0
    (ctx,) = seen
    assert ctx.raw_body is None and ctx.body is None and ctx.capture is None
    assert CAPTURE not in ctx.extras


async def test_capture_cap_truncates_and_counts_the_whole_size(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway(capture_config(str(fake_anthropic.url), all=True, max_bytes=100))
    body = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user"}] * 50}
    resp = await client.post("/v1/messages", json={**body, "stream": True})
    streamed = await resp.read()
    (rec,) = await completed(client)
    assert rec["request_body"]["truncated"] and len(rec["request_body"]["text"]) == 100
    assert rec["response_body"] == {
        "text": streamed[:100].decode(),
        "bytes": len(streamed),
        "truncated": True,
    }


async def test_capture_by_identity_does_not_capture_other_models(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    cfg = capture_config(str(fake_anthropic.url), identities=("team-red",), models=("x-*",))
    client = await gateway(cfg)
    body = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": []}
    assert (await client.post("/v1/messages", json=body)).status == 200
    (rec,) = await completed(client)
    assert "request_body" not in rec


async def test_refusal_response_body_is_captured(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway(capture_config(str(fake_anthropic.url), all=True))
    resp = await client.post("/v1/messages", data=b'{"model": 7}')
    assert resp.status == 400
    (rec,) = await completed(client)
    assert json.loads(rec["response_body"]["text"])["error"]["type"] == "invalid_request_error"


@pytest.mark.e2e
async def test_claude_code_request_is_captured_whole_and_redacted(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, secret_registry: SecretRegistry
) -> None:
    require_claude()
    secret_registry.add(CLI_KEY, AWS_KEY)
    cfg = capture_config(str(fake_anthropic.url), all=True, max_bytes=1 << 20)
    cfg = dataclasses.replace(cfg, audit=dataclasses.replace(cfg.audit, mode="batched"))
    client = await gateway(cfg)
    async with ProxySink() as sink:
        result = await run_claude(
            f"say hi to dave@example.com, my aws key is {AWS_KEY}",
            env={"ANTHROPIC_BASE_URL": str(client.make_url("")), "ANTHROPIC_API_KEY": CLI_KEY},
            sink=sink,
        )
    assert result.returncode == 0, result.stderr
    await client.app[AUDIT].flush()
    records = [r for r in await completed(client) if r["path"] == "/v1/messages"]
    assert records
    rec = records[-1]
    req = rec["request_body"]
    assert req["bytes"] > 20_000 and not req["truncated"]
    body = json.loads(req["text"])  # still valid JSON after redaction
    assert body["stream"] is True
    assert AWS_KEY not in req["text"] and "dave@example.com" not in req["text"]
    assert f"say hi to {MASK}, my aws key is {MASK}" in req["text"]
    assert "message_stop" in rec["response_body"]["text"]
    assert rec["user_agent"].startswith("claude-cli/")
    assert rec["session_id"]
    assert CLI_KEY not in json.dumps(records)
