"""Body capture through the Bedrock and Vertex adapters: the client's stream is captured as
it was sent (Bedrock's event stream as the events it carries) and redacted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.app import make_app
from llmgw.audit import AuditQuery, SQLAuditSink
from llmgw.audit.capture import eventstream_text
from llmgw.audit.redact import MASK
from llmgw.config import (
    AuditCaptureConfig,
    AuditConfig,
    GatewayConfig,
    RouteConfig,
    StorageConfig,
)
from llmgw.keys import AUDIT
from llmgw.providers import Provider
from llmgw.wire import encode_bedrock_chunk, encode_bedrock_exception
from tests.bedrock_vertex_gateway import Gateway, bedrock_provider, route, vertex_provider
from tests.fakes.anthropic import Reply
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.vertex import FakeVertex
from tests.secret_scan import SecretRegistry

SECRET = "sk-ant-api03-" + "W" * 40
BEDROCK_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


async def capturing_gateway(
    aiohttp_client: AiohttpClient, providers: Mapping[str, Provider], routes: list[RouteConfig]
) -> Gateway:
    config = GatewayConfig(
        storage=StorageConfig(url="sqlite://:memory:"),
        routes=tuple(routes),
        audit=AuditConfig(mode="sync", chain="cap-providers", capture=AuditCaptureConfig(all=True)),
    )
    return await aiohttp_client(make_app(config, providers=providers))


async def completed(client: Gateway) -> dict[str, Any]:
    sink = client.app[AUDIT].sink
    assert isinstance(sink, SQLAuditSink)
    for _ in range(300):
        found = [s.record async for s in sink.query(AuditQuery(kind="request"))]
        if found:
            (record,) = found
            return record
        await asyncio.sleep(0.01)
    raise AssertionError("no completed audit record")


def assert_redacted(text: str) -> None:
    assert SECRET not in text and MASK in text


@pytest.fixture
async def bedrock(aiohttp_server: AiohttpServer, secret_registry: SecretRegistry) -> FakeBedrock:
    secret_registry.add(SECRET)
    fake = FakeBedrock()
    await fake.start(aiohttp_server)
    return fake


@pytest.fixture
async def vertex(aiohttp_server: AiohttpServer, secret_registry: SecretRegistry) -> FakeVertex:
    secret_registry.add(SECRET)
    fake = FakeVertex()
    await fake.start(aiohttp_server)
    return fake


async def test_bedrock_client_stream_is_captured_as_its_events_and_redacted(
    aiohttp_client: AiohttpClient, bedrock: FakeBedrock
) -> None:
    bedrock.queue(Reply(text=f"the key is {SECRET}"))
    gw = await capturing_gateway(
        aiohttp_client, {"bedrock": bedrock_provider(bedrock)}, [route("*", "bedrock")]
    )
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": f"remember {SECRET}"}],
    }
    resp = await gw.post(f"/model/{BEDROCK_ID}/invoke-with-response-stream", json=body)
    streamed = await resp.read()
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/vnd.amazon.eventstream"
    assert streamed == bedrock.streamed[0]  # the client's bytes are untouched
    record = await completed(gw)
    out = record["response_body"]
    assert out["bytes"] == len(streamed) and not out["truncated"]
    events = [json.loads(line) for line in out["text"].splitlines()]
    assert events[0]["type"] == "message_start"
    assert events[-1]["type"] == "message_stop"
    assert_redacted(out["text"])
    assert_redacted(record["request_body"]["text"])


async def test_anthropic_client_through_bedrock_provider_captures_the_translated_stream(
    aiohttp_client: AiohttpClient, bedrock: FakeBedrock
) -> None:
    bedrock.queue(Reply(text=f"the key is {SECRET}"))
    gw = await capturing_gateway(
        aiohttp_client, {"bedrock": bedrock_provider(bedrock)}, [route("*", "bedrock", BEDROCK_ID)]
    )
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    resp = await gw.post("/v1/messages", json=body)
    streamed = await resp.read()
    assert resp.status == 200 and SECRET.encode() in streamed
    record = await completed(gw)
    out = record["response_body"]
    assert out["bytes"] == len(streamed)
    assert "event: message_start" in out["text"] and "event: message_stop" in out["text"]
    assert_redacted(out["text"])
    assert record["provider"] == "bedrock"


async def test_vertex_client_stream_is_captured_and_redacted(
    aiohttp_client: AiohttpClient, vertex: FakeVertex
) -> None:
    vertex.queue(Reply(text=f"the key is {SECRET}"))
    gw = await capturing_gateway(
        aiohttp_client, {"vertex": vertex_provider(vertex)}, [route("*", "vertex")]
    )
    path = (
        f"/v1/projects/{vertex.project}/locations/{vertex.region}/publishers/anthropic/models/"
        "claude-sonnet-4-5@20250929:streamRawPredict"
    )
    body = {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": f"remember {SECRET}"}],
    }
    resp = await gw.post(path, json=body)
    streamed = await resp.read()
    assert resp.status == 200, streamed
    record = await completed(gw)
    out = record["response_body"]
    assert out["bytes"] == len(streamed) and not out["truncated"]
    assert "event: message_stop" in out["text"]
    assert_redacted(out["text"])
    assert_redacted(record["request_body"]["text"])
    assert record["provider"] == "vertex"


def test_event_stream_text_decodes_chunks_and_exceptions_and_drops_a_cut_frame() -> None:
    chunk = encode_bedrock_chunk(b'{"type":"ping"}', padding="abc")
    exception = encode_bedrock_exception("throttlingException", "slow down")
    text = eventstream_text(chunk + exception + chunk[:10])
    assert text is not None and text.splitlines() == [
        b'{"type":"ping"}',
        b'exception:throttlingException: {"message":"slow down"}',
    ]
    assert eventstream_text(b'{"type":"message","content":[]}') is None
    assert eventstream_text(b"event: ping\ndata: {}\n\n") is None
    assert eventstream_text(chunk[:10]) is None
