"""Metering through the real relay and a fake Anthropic upstream: one record per proxied
request, with exactly the tokens the provider reported (or, for cut streams, what was seen,
flagged), whatever the outcome. Anthropic client format; see test_metering_formats.py for
Bedrock and Vertex."""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmgw.config import MeteringConfig, UpstreamConfig
from llmgw.context import get_context
from llmgw.demo import DemoUsage, message_events, sse_bytes
from llmgw.keys import USAGE_STORE, USAGE_WRITER
from llmgw.metering import MemoryUsageStore, UsageRecord, UsageWriter
from llmgw.middlewares.metering import metering_middleware
from llmgw.pricing import PriceTable
from llmgw.typedefs import ApiFormat, Handler, Middleware, Operation
from llmgw.usage import Outcome, Usage
from tests.conftest import GatewayClient, GatewayFactory, gateway_config
from tests.fakes.anthropic import FakeAnthropic, Reply

MODEL = "claude-sonnet-4-6"
BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}
HEADERS = {"anthropic-version": "2023-06-01", "x-claude-code-session-id": "sess-1"}
LONG_TEXT = " ".join(f"word{i}" for i in range(60))


async def closed_records(client: GatewayClient, count: int = 1) -> list[UsageRecord]:
    """The closed records, once ``count`` of them reached the store."""
    writer = client.app[USAGE_WRITER]
    store = client.app[USAGE_STORE]
    deadline = time.monotonic() + 5
    while True:
        await writer.flush()
        rows = [r for r in await store.records(since=0, until=math.inf) if not r.is_open]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.01)


async def one_record(client: GatewayClient) -> UsageRecord:
    rows = await closed_records(client)
    assert len(rows) == 1, rows
    return rows[0]


def reported(usage: DemoUsage, *, output: int | None = None) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens if output is None else output,
        "cache_creation_tokens": usage.cache_creation,
        "cache_creation_5m_tokens": usage.cache_creation_5m,
        "cache_creation_1h_tokens": usage.cache_creation_1h,
        "cache_read_tokens": usage.cache_read,
    }


def tokens(record: UsageRecord) -> dict[str, int]:
    return {
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cache_creation_tokens": record.cache_creation_tokens,
        "cache_creation_5m_tokens": record.cache_creation_5m_tokens,
        "cache_creation_1h_tokens": record.cache_creation_1h_tokens,
        "cache_read_tokens": record.cache_read_tokens,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One corpus entry: what the fake answers with."""

    id: str
    usage: DemoUsage
    reply: dict[str, Any] = field(default_factory=dict)


CORPUS = (
    Case(id="text", usage=DemoUsage(input_tokens=21, output_tokens=34)),
    Case(
        id="tool_use",
        usage=DemoUsage(input_tokens=410, output_tokens=57),
        reply={"tool_use": ("get_weather", {"city": "Paris", "unit": "c"})},
    ),
    Case(
        id="thinking",
        usage=DemoUsage(input_tokens=90, output_tokens=812),
        reply={"thinking": "Let me think about this step by step. " * 8},
    ),
    Case(
        id="cache_write_5m",
        usage=DemoUsage(input_tokens=3, output_tokens=12, cache_creation_5m=18_000),
    ),
    Case(
        id="cache_write_1h",
        usage=DemoUsage(input_tokens=3, output_tokens=12, cache_creation_1h=25_000),
    ),
    Case(
        id="cache_write_both",
        usage=DemoUsage(
            input_tokens=5, output_tokens=9, cache_creation_5m=1_200, cache_creation_1h=7_000
        ),
    ),
    Case(
        id="cache_read",
        usage=DemoUsage(input_tokens=4, output_tokens=77, cache_read=96_000),
    ),
)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_recorded_tokens_equal_what_the_provider_reported(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, case: Case, stream: bool
) -> None:
    fake_anthropic.queue(Reply(usage=case.usage, **case.reply))
    client = await gateway()
    resp = await client.post("/v1/messages", json=BODY | {"stream": stream}, headers=HEADERS)
    body = await resp.read()
    assert resp.status == 200
    record = await one_record(client)
    assert tokens(record) == reported(case.usage)
    assert record.outcome == "complete"
    assert record.estimated is False
    assert record.request_id == resp.headers["x-llmgw-request-id"]
    assert record.session_id == "sess-1"
    assert (record.client_format, record.provider, record.operation) == (
        "anthropic",
        "anthropic",
        "messages",
    )
    assert (record.requested_model, record.upstream_model) == (MODEL, MODEL)
    assert record.stream is stream
    assert record.status == 200
    assert record.bytes_out == len(body)
    assert record.ttfb is not None and record.duration is not None
    assert 0 < record.ttfb <= record.duration
    assert record.attempts[0]["status"] == 200
    assert record.cost_micros == PriceTable().cost_micros(MODEL, _usage(case.usage))


def _usage(usage: DemoUsage) -> Usage:
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=usage.cache_creation,
        cache_creation_5m_tokens=usage.cache_creation_5m,
        cache_creation_1h_tokens=usage.cache_creation_1h,
        cache_read_input_tokens=usage.cache_read,
    )


async def test_cache_write_1h_costs_twice_input_and_5m_one_and_a_quarter(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    usage = DemoUsage(
        input_tokens=0, output_tokens=0, cache_creation_5m=1000, cache_creation_1h=1000
    )
    fake_anthropic.queue(Reply(usage=usage))
    client = await gateway()
    resp = await client.post("/v1/messages", json=BODY | {"stream": True}, headers=HEADERS)
    await resp.read()
    # Sonnet input $3/MTok: 1000 x 3.75 + 1000 x 6 = 9750 micro-dollars.
    assert (await one_record(client)).cost_micros == 9750


@pytest.mark.parametrize("after", [1, 3, 5])
async def test_error_event_mid_stream_records_what_was_seen_as_upstream_error(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, after: int
) -> None:
    usage = DemoUsage(input_tokens=250, output_tokens=99, cache_read=4000)
    fake_anthropic.queue(Reply(usage=usage, text=LONG_TEXT, error_after=after))
    client = await gateway()
    resp = await client.post("/v1/messages", json=BODY | {"stream": True}, headers=HEADERS)
    assert b"overloaded_error" in await resp.read()
    record = await one_record(client)
    assert record.outcome == "upstream_error"
    assert record.error is not None and "overloaded_error" in record.error
    # message_start's input and cache counts; output from message_start (1) or estimated.
    assert (record.input_tokens, record.cache_read_tokens) == (250, 4000)
    deltas = after - 3 if after > 3 else 0
    assert record.estimated is (deltas > 0)
    assert record.output_tokens >= 1
    assert record.cost_micros is not None and record.cost_micros > 0


@pytest.mark.parametrize("after", [1, 4, 8])
async def test_upstream_dropping_after_n_events_records_what_was_seen(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, after: int
) -> None:
    usage = DemoUsage(input_tokens=321, output_tokens=500, cache_creation_1h=640)
    fake_anthropic.queue(Reply(usage=usage, text=LONG_TEXT, drop_after=after))
    client = await gateway()
    resp = await client.post("/v1/messages", json=BODY | {"stream": True}, headers=HEADERS)
    await resp.read()
    record = await one_record(client)
    assert record.outcome == "upstream_dropped"
    assert (record.input_tokens, record.cache_creation_1h_tokens) == (321, 640)
    # Events: message_start, content_block_start, ping, then text deltas.
    assert record.estimated is (after > 3)
    assert 1 <= record.output_tokens < 500


MALFORMED = b"event: message_delta\ndata: {not json\n\n"


def chunks_with_malformed_event(usage: DemoUsage, at: int) -> list[bytes]:
    """One write per event, with an unparseable ``message_delta`` inserted before event ``at``."""
    chunks = [sse_bytes([e]) for e in message_events(model=MODEL, text=LONG_TEXT, usage=usage)]
    chunks.insert(at, MALFORMED)
    return chunks


async def test_tap_parse_error_on_a_clean_eof_is_complete_with_the_usage_flagged(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    usage = DemoUsage(input_tokens=55, output_tokens=400, cache_read=2000)
    chunks = [sse_bytes([e]) for e in message_events(model=MODEL, text=LONG_TEXT, usage=usage)]
    final = next(i for i, c in enumerate(chunks) if c.startswith(b"event: message_delta"))
    chunks[final] = MALFORMED  # the final usage, unparseable
    fake_anthropic.queue(Reply(chunks=chunks))
    client = await gateway()
    resp = await client.post("/v1/messages", json=BODY | {"stream": True}, headers=HEADERS)
    received = await resp.read()
    assert received == b"".join(chunks)  # the client got every byte, message_stop included
    assert received.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    record = await one_record(client)
    assert (record.outcome, record.status, record.error) == ("complete", 200, None)
    assert record.parse_error is not None and record.parse_error.startswith("JSONDecodeError")
    # What the tap could read: message_start's counts, and output estimated from the deltas.
    assert (record.input_tokens, record.cache_read_tokens) == (55, 2000)
    assert record.estimated is True
    assert 1 < record.output_tokens < 400


async def test_tap_parse_error_then_an_upstream_drop_is_upstream_dropped(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    usage = DemoUsage(input_tokens=55, output_tokens=400)
    fake_anthropic.queue(Reply(chunks=chunks_with_malformed_event(usage, 5), drop_after=7))
    client = await gateway()
    resp = await client.post("/v1/messages", json=BODY | {"stream": True}, headers=HEADERS)
    await resp.read()
    record = await one_record(client)
    assert record.outcome == "upstream_dropped"
    assert record.parse_error is not None


@pytest.mark.parametrize("after", [1, 5])
async def test_client_disconnecting_after_n_events_records_what_was_seen(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, after: int
) -> None:
    usage = DemoUsage(input_tokens=77, output_tokens=900, cache_read=1234)
    hold = asyncio.Event()  # never set: the fake stalls after `after` events
    fake_anthropic.queue(Reply(usage=usage, text=LONG_TEXT, gates={after: hold}))
    cfg = gateway_config(
        str(fake_anthropic.url), upstream=UpstreamConfig(disconnect_poll_interval=0.02)
    )
    client = await gateway(cfg)
    resp = await client.post("/v1/messages", json=BODY | {"stream": True}, headers=HEADERS)
    seen = b""
    while seen.count(b"\n\n") < after:
        seen += await resp.content.readany()
    resp.close()
    await asyncio.wait_for(fake_anthropic.client_disconnected.wait(), 5)
    record = await one_record(client)
    assert record.outcome == "client_disconnected"
    assert (record.input_tokens, record.cache_read_tokens) == (77, 1234)
    assert record.estimated is (after > 3)
    assert record.output_tokens < 900


async def test_upstream_error_status_is_recorded_with_status_and_no_tokens(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply.overloaded())
    client = await gateway()
    resp = await client.post("/v1/messages", json=BODY, headers=HEADERS)
    assert resp.status == 529
    record = await one_record(client)
    assert (record.outcome, record.status) == ("upstream_error", 529)
    assert (record.input_tokens, record.output_tokens, record.cost_micros) == (0, 0, 0)
    assert record.attempts[0]["status"] == 529


async def test_count_tokens_is_recorded_free(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway()
    resp = await client.post("/v1/messages/count_tokens", json=BODY, headers=HEADERS)
    assert resp.status == 200
    record = await one_record(client)
    assert (record.operation, record.cost_micros, record.input_tokens) == ("count_tokens", 0, 0)


async def test_requests_that_never_become_proxied_calls_leave_no_record(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway()
    bad = await client.post("/v1/messages", data=b"{not json", headers=HEADERS)
    assert bad.status == 400
    missing = await client.post("/nowhere", json=BODY, headers=HEADERS)
    assert missing.status == 404
    models = await client.get("/v1/models", headers=HEADERS)
    assert models.status == 200
    await client.app[USAGE_WRITER].flush()
    assert await client.app[USAGE_STORE].records(since=0, until=math.inf) == []
    assert fake_anthropic.requests == []


async def test_unknown_model_price_leaves_cost_unset(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway()
    resp = await client.post("/v1/messages", json=BODY | {"model": "mystery-1"}, headers=HEADERS)
    assert resp.status == 200
    record = await one_record(client)
    assert record.cost_micros is None
    assert record.input_tokens == DemoUsage().input_tokens


async def test_metering_can_be_switched_off(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    cfg = gateway_config(str(fake_anthropic.url), metering=MeteringConfig(enabled=False))
    client = await gateway(cfg)
    resp = await client.post("/v1/messages", json=BODY, headers=HEADERS)
    assert resp.status == 200
    assert USAGE_WRITER not in client.app


# -- the middleware alone, in someone else's application ---------------------------------


def _fill(usage: Usage, outcome: Outcome) -> Middleware:
    """Test-only stand-in for a format handler + relay: fills the context by hand."""

    @web.middleware
    async def _set(request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = get_context(request)
        ctx.client_format = ApiFormat.ANTHROPIC
        ctx.operation = Operation.MESSAGES
        ctx.requested_model = "claude-haiku-4-5"
        response = await handler(request)
        ctx.usage = usage
        ctx.outcome = outcome
        ctx.status = response.status
        return response

    return _set


async def test_middleware_works_alone_and_exposes_cost_to_outer_middlewares(
    aiohttp_client: Any,
) -> None:
    store = MemoryUsageStore()
    writer = UsageWriter(store, flush_interval=0.01)
    await writer.start()
    seen_cost: list[int | None] = []

    @web.middleware
    async def outer(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            seen_cost.append(get_context(request).cost_micros)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, final=True)
    app = web.Application(
        middlewares=[outer, metering_middleware(writer), _fill(usage, Outcome.COMPLETE)]
    )
    app.router.add_post("/x", handler)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    assert (await client.post("/x", data=b"{}")).status == 200
    await writer.flush()
    (record,) = await store.records(since=0, until=math.inf)
    # Haiku 4.5: $1/MTok in, $5/MTok out -> $1 + $0.50.
    assert record.cost_micros == 1_500_000 == seen_cost[0]
    assert record.outcome == "complete"
    await writer.stop()


async def test_a_handler_failing_before_any_upstream_call_is_recorded_refused(
    aiohttp_client: Any,
) -> None:
    store = MemoryUsageStore()
    writer = UsageWriter(store, flush_interval=0.01)
    await writer.start()

    async def handler(request: web.Request) -> web.Response:
        raise web.HTTPForbidden(text=json.dumps({"type": "error"}))

    app = web.Application(
        middlewares=[metering_middleware(writer), _fill(Usage(), Outcome.IN_FLIGHT)]
    )
    app.router.add_post("/x", handler)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    assert (await client.post("/x", data=b"{}")).status == 403
    await writer.flush()
    (record,) = await store.records(since=0, until=math.inf)
    assert (record.outcome, record.status, record.cost_micros) == ("refused", 403, 0)
    await writer.stop()


async def test_sdk_stream_usage_matches_record(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    import anthropic

    usage = DemoUsage(input_tokens=8, output_tokens=40, cache_creation_1h=300, cache_read=20)
    fake_anthropic.queue(Reply(usage=usage))
    client = await gateway()
    sdk = anthropic.AsyncAnthropic(base_url=str(client.make_url("")), api_key="k", max_retries=0)
    async with sdk.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = await stream.get_final_message()
    await sdk.close()
    record = await one_record(client)
    assert record.input_tokens == final.usage.input_tokens
    assert record.output_tokens == final.usage.output_tokens
    assert record.cache_read_tokens == final.usage.cache_read_input_tokens
    assert record.cache_creation_tokens == final.usage.cache_creation_input_tokens
