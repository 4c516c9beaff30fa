"""The official SDK clients through llmgw, same format and across formats.

AnthropicBedrock (SigV4 with the client's dummy keys, and an API-key bearer), AnthropicVertex
and Anthropic, each routed to the fake Bedrock, Vertex and Anthropic upstreams.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from anthropic import AsyncAnthropic, AsyncAnthropicBedrock, AsyncAnthropicVertex
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.context import RequestContext
from llmgw.demo import DemoUsage
from llmgw.usage import Outcome, Usage
from tests.bedrock_vertex_gateway import (
    Gateway,
    anthropic_provider,
    bedrock_provider,
    route,
    start_gateway,
    vertex_provider,
)
from tests.fakes.anthropic import FakeAnthropic, Reply
from tests.fakes.bedrock import TEST_ACCESS_KEY, FakeBedrock
from tests.fakes.vertex import FakeVertex

USAGE = DemoUsage(input_tokens=7, output_tokens=11, cache_creation_5m=2048, cache_read=30000)
BEDROCK_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
VERTEX_ID = "claude-sonnet-4-5@20250929"
READ = ("Read", {"file_path": "/tmp/x.txt"})


def assert_full_usage(usage: Usage) -> None:
    assert usage.input_tokens == 7
    assert usage.output_tokens == 11
    assert usage.cache_creation_input_tokens == 2048
    assert usage.cache_creation_5m_tokens == 2048
    assert usage.cache_read_input_tokens == 30000
    assert usage.final and not usage.estimated and usage.parse_error is None


class Clients:
    """SDK clients for a gateway, closed at teardown (their pools would leak sockets)."""

    def __init__(self) -> None:
        self.opened: list[AsyncAnthropic | AsyncAnthropicBedrock | AsyncAnthropicVertex] = []

    def bedrock(self, gw: Gateway, *, api_key: str | None = None) -> AsyncAnthropicBedrock:
        base_url = str(gw.make_url(""))
        if api_key is not None:
            client = AsyncAnthropicBedrock(
                api_key=api_key, aws_region="us-east-1", base_url=base_url, max_retries=0
            )
        else:
            client = AsyncAnthropicBedrock(
                aws_access_key="AKIDCLIENTDUMMY",
                aws_secret_key="client-secret",
                aws_region="us-east-1",
                base_url=base_url,
                max_retries=0,
            )
        self.opened.append(client)
        return client

    def vertex(self, gw: Gateway, base: str = "/vertex/v1") -> AsyncAnthropicVertex:
        client = AsyncAnthropicVertex(
            region="us-east5",
            project_id="client-project",
            access_token="client-google-token",
            base_url=str(gw.make_url(base)),
            max_retries=0,
        )
        self.opened.append(client)
        return client

    def anthropic(self, gw: Gateway) -> AsyncAnthropic:
        client = AsyncAnthropic(base_url=str(gw.make_url("")), api_key="client-key", max_retries=0)
        self.opened.append(client)
        return client


@pytest.fixture
async def sdk() -> AsyncIterator[Clients]:
    clients = Clients()
    yield clients
    for client in clients.opened:
        await client.close()


@pytest.fixture
async def fake_bedrock(aiohttp_server: AiohttpServer) -> FakeBedrock:
    fake = FakeBedrock(bearer_token="bedrock-api-key-test")
    await fake.start(aiohttp_server)
    return fake


@pytest.fixture
async def fake_vertex(aiohttp_server: AiohttpServer) -> FakeVertex:
    fake = FakeVertex()
    await fake.start(aiohttp_server)
    return fake


# -- Bedrock clients -> Bedrock upstream (same format) ------------------------------------------


async def test_bedrock_sigv4_client_stream_is_resigned_by_the_gateway(
    aiohttp_client: AiohttpClient, sdk: Clients, fake_bedrock: FakeBedrock
) -> None:
    fake_bedrock.queue(Reply(text="Hello from Bedrock.", thinking="hmm", usage=USAGE))
    contexts: list[RequestContext] = []
    gw = await start_gateway(
        aiohttp_client, {"bedrock": bedrock_provider(fake_bedrock)}, contexts=contexts
    )
    client = sdk.bedrock(gw)
    async with client.messages.stream(
        model=BEDROCK_ID, max_tokens=256, messages=[{"role": "user", "content": "say hi"}]
    ) as stream:
        message = await stream.get_final_message()

    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == "Hello from Bedrock."  # type: ignore[union-attr]
    assert fake_bedrock.auth_failures == []
    sent = fake_bedrock.requests[0]
    assert (
        sent.path
        == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    )
    assert TEST_ACCESS_KEY in sent.headers["authorization"]
    assert "AKIDCLIENTDUMMY" not in json.dumps(list(sent.headers.items()))
    assert fake_bedrock.model_ids == [BEDROCK_ID]
    ctx = contexts[0]
    assert ctx.outcome is Outcome.COMPLETE
    assert ctx.stream is True
    assert_full_usage(ctx.usage)


async def test_bedrock_create_and_tool_use_pass_through(
    aiohttp_client: AiohttpClient, sdk: Clients, fake_bedrock: FakeBedrock
) -> None:
    fake_bedrock.queue(Reply(text="Reading.", tool_use=READ, usage=USAGE))
    contexts: list[RequestContext] = []
    gw = await start_gateway(
        aiohttp_client, {"bedrock": bedrock_provider(fake_bedrock)}, contexts=contexts
    )
    # The SDK types AnthropicBedrock.beta against the first-party client: ignore[misc].
    message = await sdk.bedrock(gw).beta.messages.create(  # type: ignore[misc]
        model=BEDROCK_ID,
        max_tokens=256,
        messages=[{"role": "user", "content": "read it"}],
        tools=[{"name": "Read", "input_schema": {"type": "object"}}],
        betas=["interleaved-thinking-2025-05-14"],
    )

    tool = message.content[-1]
    assert tool.type == "tool_use" and tool.input == READ[1]
    assert message.stop_reason == "tool_use"
    body = fake_bedrock.requests[0].json()
    assert body["anthropic_beta"] == ["interleaved-thinking-2025-05-14"]
    assert "anthropic_version" in body and "model" not in body
    assert fake_bedrock.requests[0].path.endswith("/invoke")
    assert_full_usage(contexts[0].usage)


async def test_bedrock_api_key_client_and_bearer_provider(
    aiohttp_client: AiohttpClient, sdk: Clients, fake_bedrock: FakeBedrock
) -> None:
    gw = await start_gateway(
        aiohttp_client,
        {"bedrock": bedrock_provider(fake_bedrock, bearer_token="bedrock-api-key-test")},
    )
    message = await sdk.bedrock(gw, api_key="client-side-bedrock-key").messages.create(
        model=BEDROCK_ID, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )

    assert message.content[0].text == Reply().text  # type: ignore[union-attr]
    sent = fake_bedrock.requests[0]
    assert sent.headers["authorization"] == "Bearer bedrock-api-key-test"
    assert "x-amz-date" not in sent.headers


# -- Vertex clients -> Vertex upstream (same format) --------------------------------------------


async def test_vertex_client_create_stream_and_count_tokens(
    aiohttp_client: AiohttpClient, sdk: Clients, fake_vertex: FakeVertex
) -> None:
    fake_vertex.queue(Reply(usage=USAGE), Reply(text="streamed", usage=USAGE))
    contexts: list[RequestContext] = []
    gw = await start_gateway(
        aiohttp_client, {"vertex": vertex_provider(fake_vertex)}, contexts=contexts
    )
    client = sdk.vertex(gw)
    created = await client.messages.create(
        model=VERTEX_ID, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    async with client.messages.stream(
        model=VERTEX_ID, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        streamed = await stream.get_final_message()
    counted = await client.messages.count_tokens(
        model=VERTEX_ID, messages=[{"role": "user", "content": "hi"}]
    )

    assert created.content[0].text == Reply().text  # type: ignore[union-attr]
    assert streamed.content[0].text == "streamed"  # type: ignore[union-attr]
    assert counted.input_tokens > 0
    paths = [r.path for r in fake_vertex.requests]
    base = "/v1/projects/llmgw-test-project/locations/us-east5/publishers/anthropic/models/"
    assert paths == [
        base + "claude-sonnet-4-5@20250929:rawPredict",
        base + "claude-sonnet-4-5@20250929:streamRawPredict",
        base + "count-tokens:rawPredict",
    ]
    assert all(
        r.headers["authorization"].endswith("llmgw-test-access-token") for r in fake_vertex.requests
    )
    assert_full_usage(contexts[0].usage)
    assert_full_usage(contexts[1].usage)


# -- Anthropic client -> Bedrock / Vertex upstream (translation) --------------------------------


async def test_anthropic_client_streams_from_bedrock_as_sse(
    aiohttp_client: AiohttpClient, sdk: Clients, fake_bedrock: FakeBedrock
) -> None:
    fake_bedrock.queue(Reply(text="Translated.", thinking="think", usage=USAGE))
    contexts: list[RequestContext] = []
    gw = await start_gateway(
        aiohttp_client,
        {"bedrock": bedrock_provider(fake_bedrock)},
        routes=[route("claude-sonnet-4-6", "bedrock", BEDROCK_ID)],
        contexts=contexts,
    )
    client = sdk.anthropic(gw)
    async with client.beta.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=256,
        messages=[{"role": "user", "content": "hi"}],
        betas=["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"],
    ) as stream:
        message = await stream.get_final_message()

    assert message.model == "claude-sonnet-4-6"
    assert [b.type for b in message.content] == ["thinking", "text"]
    body = fake_bedrock.requests[0].json()
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert body["anthropic_beta"] == ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]
    assert "anthropic-beta" not in fake_bedrock.requests[0].headers
    assert fake_bedrock.model_ids == [BEDROCK_ID]
    assert_full_usage(contexts[0].usage)


async def test_anthropic_client_create_and_count_tokens_via_bedrock(
    aiohttp_client: AiohttpClient, sdk: Clients, fake_bedrock: FakeBedrock
) -> None:
    fake_bedrock.queue(Reply(tool_use=READ, usage=USAGE))
    contexts: list[RequestContext] = []
    gw = await start_gateway(
        aiohttp_client, {"bedrock": bedrock_provider(fake_bedrock)}, contexts=contexts
    )
    client = sdk.anthropic(gw)
    message = await client.messages.create(
        model=BEDROCK_ID, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    counted = await client.messages.count_tokens(
        model=BEDROCK_ID, messages=[{"role": "user", "content": "hi"}]
    )

    assert message.model == BEDROCK_ID
    assert message.content[-1].type == "tool_use"
    assert counted.input_tokens > 0
    assert fake_bedrock.requests[1].path.endswith("/count-tokens")
    assert_full_usage(contexts[0].usage)


async def test_anthropic_client_streams_from_vertex(
    aiohttp_client: AiohttpClient, sdk: Clients, fake_vertex: FakeVertex
) -> None:
    fake_vertex.queue(Reply(text="From Vertex.", thinking="t", usage=USAGE))
    contexts: list[RequestContext] = []
    gw = await start_gateway(
        aiohttp_client,
        {"vertex": vertex_provider(fake_vertex)},
        routes=[route("claude-sonnet-4-6", "vertex", VERTEX_ID)],
        contexts=contexts,
    )
    client = sdk.anthropic(gw)
    async with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        message = await stream.get_final_message()
    counted = await client.messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]
    )

    assert message.model == "claude-sonnet-4-6"
    assert message.content[-1].text == "From Vertex."  # type: ignore[union-attr]
    body = fake_vertex.requests[0].json()
    assert body["anthropic_version"] == "vertex-2023-10-16" and body["stream"] is True
    assert counted.input_tokens > 0
    assert fake_vertex.requests[1].json()["model"] == VERTEX_ID
    assert_full_usage(contexts[0].usage)


# -- Bedrock / Vertex clients -> Anthropic upstream (reverse mapping) ---------------------------


async def test_bedrock_client_streams_from_anthropic_as_event_stream(
    aiohttp_client: AiohttpClient, sdk: Clients, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(
        Reply(text="From Anthropic.", thinking="t", usage=USAGE),
        Reply(tool_use=READ, usage=USAGE),
    )
    contexts: list[RequestContext] = []
    gw = await start_gateway(
        aiohttp_client,
        {"anthropic": anthropic_provider(fake_anthropic)},
        routes=[route(BEDROCK_ID, "anthropic", "claude-sonnet-4-5-20250929")],
        contexts=contexts,
    )
    client = sdk.bedrock(gw)
    async with client.beta.messages.stream(  # type: ignore[misc]
        model=BEDROCK_ID,
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        betas=["interleaved-thinking-2025-05-14"],
    ) as stream:
        message = await stream.get_final_message()
    created = await client.messages.create(
        model=BEDROCK_ID, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )

    assert message.model == BEDROCK_ID
    assert message.content[-1].text == "From Anthropic."  # type: ignore[union-attr]
    assert created.model == BEDROCK_ID and created.content[-1].type == "tool_use"
    first = fake_anthropic.requests[0]
    body = first.json()
    assert body["model"] == "claude-sonnet-4-5-20250929" and body["stream"] is True
    assert "anthropic_version" not in body and "anthropic_beta" not in body
    assert first.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert "stream" not in fake_anthropic.requests[1].json()
    assert_full_usage(contexts[0].usage)
    assert_full_usage(contexts[1].usage)


async def test_vertex_client_from_anthropic(
    aiohttp_client: AiohttpClient, sdk: Clients, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply(usage=USAGE), Reply(usage=USAGE))
    contexts: list[RequestContext] = []
    gw = await start_gateway(
        aiohttp_client,
        {"anthropic": anthropic_provider(fake_anthropic)},
        routes=[route(VERTEX_ID, "anthropic", "claude-sonnet-4-5-20250929")],
        contexts=contexts,
    )
    client = sdk.vertex(gw, base="/v1")
    async with client.messages.stream(
        model=VERTEX_ID, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        message = await stream.get_final_message()
    counted = await client.messages.count_tokens(
        model=VERTEX_ID, messages=[{"role": "user", "content": "hi"}]
    )

    assert message.model == VERTEX_ID
    assert counted.input_tokens > 0
    assert fake_anthropic.requests[0].json()["model"] == "claude-sonnet-4-5-20250929"
    assert fake_anthropic.requests[1].path == "/v1/messages/count_tokens"
    assert_full_usage(contexts[0].usage)
