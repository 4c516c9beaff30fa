"""The metering corpus for the Bedrock and Vertex formats: the record holds what the
provider reported (Bedrock: its invocation metrics), or for cut streams what was seen."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.demo import DemoUsage, message_events, sse_bytes
from llmgw.keys import USAGE_STORE, USAGE_WRITER
from llmgw.metering import UsageRecord
from llmgw.wire import EventStreamDecoder
from tests.bedrock_vertex_gateway import (
    Gateway,
    anthropic_provider,
    bedrock_provider,
    route,
    start_gateway,
    vertex_provider,
)
from tests.fakes.anthropic import FakeAnthropic, Reply
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.vertex import FakeVertex

USAGE = DemoUsage(input_tokens=40, output_tokens=25, cache_creation_5m=700, cache_read=3000)
LONG_TEXT = " ".join(f"word{i}" for i in range(60))
BEDROCK_BODY: dict[str, Any] = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}
VERTEX_BODY: dict[str, Any] = BEDROCK_BODY | {"anthropic_version": "vertex-2023-10-16"}
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
VERTEX_MODEL = "claude-sonnet-4-5@20250929"


async def one_record(gw: Gateway) -> UsageRecord:
    deadline = time.monotonic() + 5
    while True:
        await gw.app[USAGE_WRITER].flush()
        rows = [
            r for r in await gw.app[USAGE_STORE].records(since=0, until=math.inf) if not r.is_open
        ]
        if rows or time.monotonic() > deadline:
            assert len(rows) == 1, rows
            return rows[0]
        await asyncio.sleep(0.01)


@pytest.fixture
async def bedrock(aiohttp_server: AiohttpServer) -> FakeBedrock:
    fake = FakeBedrock()
    await fake.start(aiohttp_server)
    return fake


@pytest.fixture
async def vertex(aiohttp_server: AiohttpServer) -> FakeVertex:
    fake = FakeVertex()
    await fake.start(aiohttp_server)
    return fake


async def bedrock_gateway(aiohttp_client: AiohttpClient, fake: FakeBedrock) -> Gateway:
    return await start_gateway(
        aiohttp_client, {"bedrock": bedrock_provider(fake)}, routes=[route("*", "bedrock")]
    )


async def vertex_gateway(aiohttp_client: AiohttpClient, fake: FakeVertex) -> Gateway:
    return await start_gateway(
        aiohttp_client, {"vertex": vertex_provider(fake)}, routes=[route("*", "vertex")]
    )


def vertex_path(fake: FakeVertex, model: str, action: str) -> str:
    return (
        f"/v1/projects/{fake.project}/locations/{fake.region}/publishers/anthropic/models/"
        f"{model}:{action}"
    )


def assert_reported(record: UsageRecord, usage: DemoUsage) -> None:
    assert (record.input_tokens, record.output_tokens) == (usage.input_tokens, usage.output_tokens)
    assert record.cache_creation_tokens == usage.cache_creation
    assert record.cache_read_tokens == usage.cache_read
    assert record.outcome == "complete" and record.estimated is False
    assert record.cost_micros is not None and record.cost_micros > 0


@pytest.mark.parametrize("action", ["invoke", "invoke-with-response-stream"])
async def test_bedrock_records_the_reported_usage(
    aiohttp_client: AiohttpClient, bedrock: FakeBedrock, action: str
) -> None:
    bedrock.queue(Reply(usage=USAGE))
    gw = await bedrock_gateway(aiohttp_client, bedrock)
    resp = await gw.post(f"/model/{BEDROCK_MODEL}/{action}", json=BEDROCK_BODY)
    await resp.read()
    assert resp.status == 200
    record = await one_record(gw)
    assert_reported(record, USAGE)
    assert (record.client_format, record.provider) == ("bedrock", "bedrock")
    assert record.upstream_model == BEDROCK_MODEL


async def test_bedrock_upstream_drop_records_what_was_seen(
    aiohttp_client: AiohttpClient, bedrock: FakeBedrock
) -> None:
    bedrock.queue(Reply(usage=USAGE, text=LONG_TEXT, drop_after=4))
    gw = await bedrock_gateway(aiohttp_client, bedrock)
    resp = await gw.post(f"/model/{BEDROCK_MODEL}/invoke-with-response-stream", json=BEDROCK_BODY)
    await resp.read()
    record = await one_record(gw)
    assert record.outcome == "upstream_dropped"
    assert (record.input_tokens, record.cache_read_tokens) == (40, 3000)
    assert record.estimated is True


async def test_bedrock_exception_mid_stream_is_upstream_error(
    aiohttp_client: AiohttpClient, bedrock: FakeBedrock
) -> None:
    bedrock.queue(Reply(usage=USAGE, text=LONG_TEXT, error_after=3))
    gw = await bedrock_gateway(aiohttp_client, bedrock)
    resp = await gw.post(f"/model/{BEDROCK_MODEL}/invoke-with-response-stream", json=BEDROCK_BODY)
    await resp.read()
    record = await one_record(gw)
    assert record.outcome == "upstream_error"
    assert record.error is not None and "api_error" in record.error
    assert record.input_tokens == 40


async def test_a_stream_the_gateway_cannot_translate_is_upstream_error_not_complete(
    aiohttp_client: AiohttpClient, fake_anthropic: FakeAnthropic
) -> None:
    # The SSE -> event-stream translator ends a Bedrock client's stream with an exception
    # frame at the malformed event: the client never gets the rest, unlike a pass-through.
    chunks = [sse_bytes([e]) for e in message_events(model="claude-x", usage=USAGE)]
    chunks.insert(2, b"event: message_delta\ndata: {not json\n\n")
    fake_anthropic.queue(Reply(chunks=chunks))
    gw = await start_gateway(aiohttp_client, {"anthropic": anthropic_provider(fake_anthropic)})
    resp = await gw.post(f"/model/{BEDROCK_MODEL}/invoke-with-response-stream", json=BEDROCK_BODY)
    frames = EventStreamDecoder().feed(await resp.read())
    assert frames[-1].message_type == "exception"
    record = await one_record(gw)
    assert record.outcome == "upstream_error"
    assert record.parse_error is not None
    assert (record.input_tokens, record.cache_read_tokens) == (40, 3000)


@pytest.mark.parametrize(("action", "stream"), [("rawPredict", False), ("streamRawPredict", True)])
async def test_vertex_records_the_reported_usage(
    aiohttp_client: AiohttpClient, vertex: FakeVertex, action: str, stream: bool
) -> None:
    vertex.queue(Reply(usage=USAGE))
    gw = await vertex_gateway(aiohttp_client, vertex)
    resp = await gw.post(
        vertex_path(vertex, VERTEX_MODEL, action), json=VERTEX_BODY | {"stream": stream}
    )
    await resp.read()
    assert resp.status == 200
    record = await one_record(gw)
    assert_reported(record, USAGE)
    assert (record.client_format, record.provider) == ("vertex", "vertex")


async def test_vertex_error_event_mid_stream_records_what_was_seen(
    aiohttp_client: AiohttpClient, vertex: FakeVertex
) -> None:
    vertex.queue(Reply(usage=USAGE, text=LONG_TEXT, error_after=5))
    gw = await vertex_gateway(aiohttp_client, vertex)
    path = vertex_path(vertex, VERTEX_MODEL, "streamRawPredict")
    resp = await gw.post(path, json=VERTEX_BODY | {"stream": True})
    await resp.read()
    record = await one_record(gw)
    assert record.outcome == "upstream_error"
    assert (record.input_tokens, record.cache_creation_5m_tokens) == (40, 700)
    assert record.estimated is True


async def test_anthropic_client_on_a_bedrock_provider_records_the_reported_usage(
    aiohttp_client: AiohttpClient, bedrock: FakeBedrock
) -> None:
    bedrock.queue(Reply(usage=USAGE))
    gw = await start_gateway(
        aiohttp_client,
        {"bedrock": bedrock_provider(bedrock)},
        routes=[route("claude-sonnet-4-5", "bedrock", BEDROCK_MODEL)],
    )
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True, "messages": []}
    resp = await gw.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    await resp.read()
    assert resp.status == 200
    record = await one_record(gw)
    assert_reported(record, USAGE)
    assert (record.client_format, record.provider) == ("anthropic", "bedrock")
    assert (record.requested_model, record.upstream_model) == ("claude-sonnet-4-5", BEDROCK_MODEL)
