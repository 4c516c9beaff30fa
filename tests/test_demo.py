"""The demo upstream and the event builder, checked with the official anthropic SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from anthropic import AsyncAnthropic
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.demo import DemoUsage, demo_app, message_events, message_json, sse_bytes
from tests.fakes import FakeAnthropic, Reply

MODEL = "claude-sonnet-4-6"


@pytest.fixture
async def demo_client(aiohttp_server: AiohttpServer) -> AsyncIterator[AsyncAnthropic]:
    server = await aiohttp_server(demo_app())
    base_url = str(server.make_url(""))
    async with AsyncAnthropic(base_url=base_url, api_key="any-key", max_retries=0) as client:
        yield client


async def test_create_replies_with_requested_model_and_echoes_user_text(
    demo_client: AsyncAnthropic,
) -> None:
    message = await demo_client.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "ping " * 40}]
    )

    assert message.model == MODEL
    assert message.id.startswith("msg_01")
    assert message.stop_reason == "end_turn"
    text = message.content[0]
    assert text.type == "text"
    assert text.text == "Hello from the llmgw demo upstream. You said: " + ("ping " * 40)[:60]
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens == len(text.text) // 4


async def test_stream_accumulates_text_over_several_deltas_and_reports_usage(
    demo_client: AsyncAnthropic,
) -> None:
    messages: Any = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "<reminder>"}, {"type": "text", "text": "say hi"}],
        }
    ]
    pieces: list[str] = []
    async with demo_client.messages.stream(
        model=MODEL, max_tokens=100, messages=messages
    ) as stream:
        async for piece in stream.text_stream:
            pieces.append(piece)
        final = await stream.get_final_message()

    assert len(pieces) > 1
    assert "".join(pieces) == "Hello from the llmgw demo upstream. You said: say hi"
    assert final.model == MODEL
    assert final.usage.output_tokens == len("".join(pieces)) // 4
    assert final.usage.input_tokens > 0


async def test_count_tokens_is_about_a_quarter_of_the_prompt_characters(
    demo_client: AsyncAnthropic,
) -> None:
    short = await demo_client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    long = await demo_client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "x" * 4000}], system="be brief"
    )

    assert short.input_tokens >= 1
    assert 1000 <= long.input_tokens <= 1030


async def test_models_list_pages_through_every_claude_model(demo_client: AsyncAnthropic) -> None:
    first = await demo_client.models.list(limit=2)
    everything = [model.id async for model in demo_client.models.list(limit=2)]

    assert len(first.data) == 2
    assert first.has_more is True
    assert first.first_id == first.data[0].id
    assert first.last_id == first.data[1].id
    assert len(everything) == len(set(everything)) >= 3
    assert all(model_id.startswith("claude-") for model_id in everything)


async def test_demo_rejects_a_body_without_messages(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(demo_app())

    response = await client.post("/v1/messages", json={"model": MODEL})

    assert response.status == 400
    body = await response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"


async def test_demo_stream_is_sse_with_one_compact_event_per_block(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(demo_app())

    response = await client.post(
        "/v1/messages",
        json={
            "model": MODEL,
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )

    assert response.status == 200
    assert response.content_type == "text/event-stream"
    raw = (await response.read()).decode()
    blocks = raw.split("\n\n")
    assert blocks[-1] == ""
    names = [block.split("\n")[0].removeprefix("event: ") for block in blocks[:-1]]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for block in blocks[:-1]:
        event_line, data_line = block.split("\n")
        data = data_line.removeprefix("data: ")
        assert json.loads(data)["type"] == event_line.removeprefix("event: ")
        assert ", " not in data and '": ' not in data


def test_message_events_match_the_documented_usage_shapes() -> None:
    usage = DemoUsage(
        input_tokens=12,
        output_tokens=95,
        cache_creation_5m=2000,
        cache_creation_1h=48,
        cache_read=30000,
    )

    events = message_events(model=MODEL, text="Hi there.", usage=usage)

    start = events[0][1]["message"]["usage"]
    assert start == {
        "input_tokens": 12,
        "cache_creation_input_tokens": 2048,
        "cache_read_input_tokens": 30000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 48},
        "output_tokens": 1,
        "service_tier": "standard",
    }
    name, delta = events[-2]
    assert name == "message_delta"
    assert delta["usage"] == {
        "input_tokens": 12,
        "cache_creation_input_tokens": 2048,
        "cache_read_input_tokens": 30000,
        "output_tokens": 95,
    }
    assert [n for n, _ in events].count("ping") == 1
    assert message_json(model=MODEL, usage=usage)["usage"] == {**start, "output_tokens": 95}


def test_sse_bytes_writes_event_and_compact_data_lines() -> None:
    encoded = sse_bytes([("ping", {"type": "ping"}), ("message_stop", {"type": "message_stop"})])

    assert encoded == (
        b'event: ping\ndata: {"type":"ping"}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


async def test_sdk_rebuilds_thinking_text_and_tool_use_from_the_event_stream(
    aiohttp_server: AiohttpServer,
) -> None:
    tool_input = {"path": "a.ts", "lines": [1, 2], "note": 'héllo "quoted"'}
    reply = Reply(
        thinking="Need to read the file.", text="Reading it now.", tool_use=("Read", tool_input)
    )
    fake = FakeAnthropic(reply, reply)
    url = await fake.start(aiohttp_server)

    async with AsyncAnthropic(base_url=str(url), api_key="k", max_retries=0) as client:
        async with client.messages.stream(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "read a.ts"}]
        ) as stream:
            streamed = await stream.get_final_message()
        created = await client.messages.create(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "read a.ts"}]
        )

    for message in (streamed, created):
        assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
        thinking, text, tool = message.content
        assert thinking.type == "thinking" and thinking.thinking == "Need to read the file."
        assert thinking.signature
        assert text.type == "text" and text.text == "Reading it now."
        assert tool.type == "tool_use" and tool.name == "Read" and tool.input == tool_input
        assert tool.id.startswith("toolu_01")
        assert message.stop_reason == "tool_use"
