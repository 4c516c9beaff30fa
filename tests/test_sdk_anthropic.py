"""The official ``anthropic`` SDK through llmgw: what SDK users see is what the upstream sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anthropic
import pytest
from anthropic import AsyncAnthropic

from llmgw.config import DeploymentConfig, RouteConfig
from llmgw.demo import DemoUsage, estimate_tokens
from tests.conftest import GatewayFactory, gateway_config
from tests.fakes.anthropic import FakeAnthropic, Reply

MODEL = "claude-sonnet-4-6"
MESSAGES: Any = [{"role": "user", "content": "say hi"}]

SDKFactory = Callable[..., Awaitable[AsyncAnthropic]]


@pytest.fixture
async def sdk(gateway: GatewayFactory) -> AsyncIterator[SDKFactory]:
    """``await sdk(config=None)`` → an AsyncAnthropic pointed at a fresh gateway."""
    opened: list[AsyncAnthropic] = []

    async def factory(**gateway_kwargs: Any) -> AsyncAnthropic:
        client = await gateway(**gateway_kwargs)
        sdk_client = AsyncAnthropic(
            base_url=str(client.make_url("")), api_key="sk-client-secret", max_retries=0
        )
        opened.append(sdk_client)
        return sdk_client

    yield factory
    for sdk_client in opened:
        await sdk_client.close()


async def test_create_returns_the_upstream_message(
    sdk: SDKFactory, fake_anthropic: FakeAnthropic
) -> None:
    usage = DemoUsage(input_tokens=3, output_tokens=5, cache_creation_1h=10, cache_read=20)
    fake_anthropic.queue(Reply(text="Hi there.", usage=usage))
    client = await sdk()

    message = await client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)

    assert message.model == MODEL
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hi there."
    assert message.usage.input_tokens == 3
    assert message.usage.output_tokens == 5
    assert message.usage.cache_creation_input_tokens == 10
    assert message.usage.cache_read_input_tokens == 20
    (sent,) = fake_anthropic.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.json() == {"model": MODEL, "max_tokens": 50, "messages": MESSAGES}


async def test_stream_delivers_text_deltas_and_final_usage(
    sdk: SDKFactory, fake_anthropic: FakeAnthropic
) -> None:
    text = "one two three four five six seven eight"
    fake_anthropic.queue(Reply(text=text, usage=DemoUsage(output_tokens=9)))
    client = await sdk()

    async with client.messages.stream(model=MODEL, max_tokens=50, messages=MESSAGES) as stream:
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()

    assert len(pieces) > 1
    assert "".join(pieces) == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 9


async def test_stream_tool_use_input_json_deltas_assemble_into_the_input(
    sdk: SDKFactory, fake_anthropic: FakeAnthropic
) -> None:
    tool_input = {"file_path": "/tmp/x.txt", "limit": 20, "nested": {"a": [1, 2]}}
    fake_anthropic.queue(Reply(text="Reading.", tool_use=("Read", tool_input)))
    client = await sdk()

    seen: list[str] = []
    async with client.messages.stream(model=MODEL, max_tokens=50, messages=MESSAGES) as stream:
        async for event in stream:
            if event.type == "content_block_delta":
                seen.append(event.delta.type)
        final = await stream.get_final_message()

    assert seen.count("input_json_delta") >= 2
    tool = final.content[-1]
    assert tool.type == "tool_use"
    assert (tool.name, tool.input) == ("Read", tool_input)
    assert final.stop_reason == "tool_use"


async def test_stream_thinking_block_keeps_its_signature(
    sdk: SDKFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply(thinking="Let me think about it.", text="Done."))
    client = await sdk()

    async with client.messages.stream(
        model=MODEL,
        max_tokens=2048,
        messages=MESSAGES,
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        final = await stream.get_final_message()

    thinking, text = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "Let me think about it."
    assert thinking.signature.startswith("Eq")
    assert text.type == "text" and text.text == "Done."
    assert fake_anthropic.requests[0].json()["thinking"]["budget_tokens"] == 1024


async def test_count_tokens_is_relayed(sdk: SDKFactory, fake_anthropic: FakeAnthropic) -> None:
    client = await sdk()

    count = await client.messages.count_tokens(model=MODEL, messages=MESSAGES)

    assert count.input_tokens == estimate_tokens({"messages": MESSAGES})
    assert fake_anthropic.requests[0].path == "/v1/messages/count_tokens"


async def test_models_list_shows_the_routed_models_with_display_names(
    sdk: SDKFactory, fake_anthropic: FakeAnthropic
) -> None:
    deployments = (DeploymentConfig(provider="anthropic"),)
    routes = (
        RouteConfig(model="claude-opus-4-8", deployments=deployments, display_name="Opus"),
        RouteConfig(model=MODEL, deployments=deployments, display_name="Sonnet"),
        RouteConfig(model="claude-haiku-4-5", deployments=deployments),
        RouteConfig(model="claude-*", deployments=deployments),  # a pattern is not listed
    )
    client = await sdk(config=gateway_config(str(fake_anthropic.url), routes=routes))

    listed = [(m.id, m.display_name) async for m in client.models.list(limit=2)]

    assert listed == [
        ("claude-opus-4-8", "Opus"),
        (MODEL, "Sonnet"),
        ("claude-haiku-4-5", "claude-haiku-4-5"),
    ]
    assert fake_anthropic.requests == []  # answered by the gateway itself


async def test_upstream_429_is_the_sdks_rate_limit_error_with_retry_after(
    sdk: SDKFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply.rate_limited(retry_after=13))
    client = await sdk()

    with pytest.raises(anthropic.RateLimitError) as info:
        await client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)

    error = info.value
    assert error.status_code == 429
    assert "Rate limited" in error.message
    assert error.response.headers["retry-after"] == "13"
    assert error.request_id is not None and error.request_id.startswith("req_011C")
    assert isinstance(error.body, dict)
    assert error.body["error"] == {"type": "rate_limit_error", "message": "Rate limited"}


async def test_upstream_529_is_the_sdks_overloaded_error(
    sdk: SDKFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply.overloaded())
    client = await sdk()

    with pytest.raises(anthropic.OverloadedError) as info:
        async with client.messages.stream(model=MODEL, max_tokens=50, messages=MESSAGES) as s:
            await s.get_final_message()

    assert isinstance(info.value, anthropic.InternalServerError)
    assert info.value.status_code == 529
    assert "Overloaded" in info.value.message


async def test_in_band_stream_error_surfaces_as_an_sdk_error(
    sdk: SDKFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply(text="a b c d e f g h i", error_after=4))
    client = await sdk()

    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(model=MODEL, max_tokens=50, messages=MESSAGES) as s:
            await s.get_final_message()

    assert "Overloaded" in str(info.value)


async def test_client_api_key_never_reaches_the_upstream(
    sdk: SDKFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await sdk()

    await client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)

    (sent,) = fake_anthropic.requests
    assert "sk-client-secret" not in repr(sent.raw_headers)
    assert "authorization" not in sent.headers and "x-api-key" not in sent.headers
    # The SDK's own version travels, not the provider's fallback default.
    assert sent.headers["anthropic-version"] == client.default_headers["anthropic-version"]
    assert sent.headers["x-stainless-lang"] == "python"
