"""The real Claude Code CLI through llmgw in Bedrock and Vertex modes, and across formats.

Bedrock mode (``CLAUDE_CODE_USE_BEDROCK=1``) and Vertex mode (``CLAUDE_CODE_USE_VERTEX=1``)
against the same-format fakes, then the Anthropic mode (``ANTHROPIC_BASE_URL``) routed to the
Bedrock and Vertex fakes. Each run must complete, talk to nothing but the gateway, and leave
usage with every token class on the request context.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.betas import BetaPolicy
from llmgw.config import AuthConfig, StaticKeyConfig
from llmgw.context import RequestContext
from llmgw.demo import DemoUsage
from llmgw.providers import Provider
from llmgw.typedefs import ApiFormat
from llmgw.usage import Outcome
from tests.bedrock_vertex_gateway import (
    anthropic_provider,
    bedrock_provider,
    start_gateway,
    vertex_provider,
)
from tests.claude_cli import ProxySink, require_claude, run_claude
from tests.fakes.anthropic import FakeAnthropic, Reply
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.vertex import FakeVertex

pytestmark = pytest.mark.e2e

USAGE = DemoUsage(input_tokens=7, output_tokens=11, cache_creation_5m=2048, cache_read=30000)
READ = ("Read", {"file_path": "/nonexistent/llmgw-e2e.txt"})


@pytest.fixture
async def sink() -> AsyncIterator[ProxySink]:
    require_claude()
    async with ProxySink() as proxy:
        yield proxy


def _messages(contexts: list[RequestContext]) -> list[RequestContext]:
    return [c for c in contexts if c.operation is not None]


def assert_usage_recorded(ctx: RequestContext) -> None:
    assert ctx.outcome is Outcome.COMPLETE
    usage = ctx.usage
    assert (usage.input_tokens, usage.output_tokens) == (7, 11)
    assert usage.cache_creation_input_tokens == 2048
    assert usage.cache_read_input_tokens == 30000
    assert usage.final and usage.parse_error is None


async def test_cli_bedrock_mode_through_llmgw(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, sink: ProxySink
) -> None:
    fake = FakeBedrock(
        Reply(thinking="Read first.", text="Reading.", tool_use=READ, usage=USAGE),
        Reply(text="The file does not exist.", usage=USAGE),
    )
    await fake.start(aiohttp_server)
    contexts: list[RequestContext] = []
    gw = await start_gateway(aiohttp_client, {"bedrock": bedrock_provider(fake)}, contexts=contexts)

    result = await run_claude(
        "read the file",
        env={
            "CLAUDE_CODE_USE_BEDROCK": "1",
            "ANTHROPIC_BEDROCK_BASE_URL": str(gw.make_url("/bedrock")),
            "CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1",
            "AWS_REGION": "us-east-1",
        },
        sink=sink,
    )

    assert result.returncode == 0, result.stderr
    assert result.json is not None, result.stdout
    assert result.json["result"] == "The file does not exist."
    assert fake.auth_failures == []
    assert len(fake.requests) == 2
    assert all(r.path.endswith("/invoke-with-response-stream") for r in fake.requests)
    assert all(":" not in r.path.rpartition("/model/")[2] for r in fake.requests)  # sent as %3A
    calls = _messages(contexts)
    assert [c.client_format for c in calls] == [ApiFormat.BEDROCK, ApiFormat.BEDROCK]
    assert calls[0].requested_model == fake.model_ids[0]
    assert_usage_recorded(calls[0])
    assert sink.hits == []


async def test_cli_vertex_mode_through_llmgw(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, sink: ProxySink
) -> None:
    fake = FakeVertex(Reply(text="Hello from Vertex.", thinking="Greet.", usage=USAGE))
    await fake.start(aiohttp_server)
    contexts: list[RequestContext] = []
    gw = await start_gateway(aiohttp_client, {"vertex": vertex_provider(fake)}, contexts=contexts)

    result = await run_claude(
        "say hi",
        env={
            "CLAUDE_CODE_USE_VERTEX": "1",
            "ANTHROPIC_VERTEX_BASE_URL": str(gw.make_url("/vertex/v1")),
            "CLAUDE_CODE_SKIP_VERTEX_AUTH": "1",
            "CLOUD_ML_REGION": "europe-west1",
            "ANTHROPIC_VERTEX_PROJECT_ID": "the-clients-project",
        },
        sink=sink,
    )

    assert result.returncode == 0, result.stderr
    assert result.json is not None, result.stdout
    assert result.json["result"] == "Hello from Vertex."
    # The gateway's own project and region go upstream, whatever the client's path said.
    assert fake.requests[0].path.startswith(
        "/v1/projects/llmgw-test-project/locations/us-east5/publishers/anthropic/models/"
    )
    calls = _messages(contexts)
    assert calls[0].client_format is ApiFormat.VERTEX
    assert calls[0].extras["vertex.project"] == "the-clients-project"
    assert_usage_recorded(calls[0])
    assert sink.hits == []


@pytest.mark.parametrize("upstream", ["bedrock", "vertex"])
async def test_cli_anthropic_mode_routed_to_other_formats(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, sink: ProxySink, upstream: str
) -> None:
    read = Reply(thinking="Read first.", text="Reading.", tool_use=READ, usage=USAGE)
    done = Reply(text="The file does not exist.", usage=USAGE)
    contexts: list[RequestContext] = []
    providers: dict[str, Provider]
    if upstream == "bedrock":
        bedrock = FakeBedrock(read, done)
        await bedrock.start(aiohttp_server)
        providers = {"bedrock": bedrock_provider(bedrock)}
    else:
        vertex = FakeVertex(read, done)
        await vertex.start(aiohttp_server)
        providers = {"vertex": vertex_provider(vertex)}
    gw = await start_gateway(aiohttp_client, providers, contexts=contexts)

    result = await run_claude(
        "read the file",
        env={"ANTHROPIC_BASE_URL": str(gw.make_url("")), "ANTHROPIC_AUTH_TOKEN": "tok-test"},
        sink=sink,
    )

    assert result.returncode == 0, result.stderr
    assert result.json is not None, result.stdout
    assert result.json["result"] == "The file does not exist."
    calls = _messages(contexts)
    assert len(calls) == 2 and all(c.client_format is ApiFormat.ANTHROPIC for c in calls)
    assert_usage_recorded(calls[0])
    # The response model equalled the requested one, so the CLI sent the thinking block back.
    fake = bedrock if upstream == "bedrock" else vertex
    history = fake.requests[1].json()["messages"]
    assistant = next(m for m in history if m["role"] == "assistant")
    assert assistant["content"][0]["type"] == "thinking"
    assert sink.hits == []


# -- beta policy: Claude Code's first-party betas against providers that refuse them ----------


def _sent_betas(fake: FakeBedrock | FakeVertex, index: int) -> list[str]:
    recorded = fake.requests[index]
    if isinstance(fake, FakeBedrock):
        betas = recorded.json().get("anthropic_beta", [])
        assert isinstance(betas, list)
        return betas
    header = recorded.headers.get("anthropic-beta", "")
    return [b for b in header.split(",") if b]


@pytest.mark.parametrize("upstream", ["bedrock", "vertex"])
async def test_cli_anthropic_mode_completes_against_a_strict_provider(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, sink: ProxySink, upstream: str
) -> None:
    read = Reply(thinking="Read first.", text="Reading.", tool_use=READ, usage=USAGE)
    done = Reply(text="The file does not exist.", usage=USAGE)
    fake: FakeBedrock | FakeVertex
    if upstream == "bedrock":
        fake = FakeBedrock(read, done, strict=True)
        await fake.start(aiohttp_server)
        providers: dict[str, Provider] = {"bedrock": bedrock_provider(fake)}
    else:
        fake = FakeVertex(read, done, strict=True)
        await fake.start(aiohttp_server)
        providers = {"vertex": vertex_provider(fake)}
    contexts: list[RequestContext] = []
    gw = await start_gateway(aiohttp_client, providers, contexts=contexts)

    result = await run_claude(
        "read the file",
        env={"ANTHROPIC_BASE_URL": str(gw.make_url("")), "ANTHROPIC_AUTH_TOKEN": "tok-test"},
        sink=sink,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.json is not None and result.json["result"] == "The file does not exist."
    assert fake.rejections == []
    assert len(fake.requests) == 2
    calls = _messages(contexts)
    dropped = calls[0].extras["translate.dropped"]
    # The first-party-only betas went nowhere; the ones the provider knows did.
    assert "mid-conversation-system-2026-04-07" in dropped["betas"]
    assert "prompt-caching-scope-2026-01-05" in dropped["betas"]
    sent = _sent_betas(fake, 0)
    assert "interleaved-thinking-2025-05-14" in sent
    assert not set(sent) & set(dropped["betas"])
    first = fake.requests[0].json()
    roles = [m["role"] for m in first["messages"]]
    assert "system" not in roles
    # The agent list Claude Code sent as a system message now ends the user turn it followed.
    last_block = first["messages"][0]["content"][-1]
    assert last_block["text"].startswith("<system-reminder>\nAvailable agent types")
    assert sink.hits == []


async def test_cli_anthropic_mode_with_passthrough_gets_bedrocks_400_verbatim(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, sink: ProxySink
) -> None:
    fake = FakeBedrock(strict=True)
    await fake.start(aiohttp_server)
    provider = bedrock_provider(fake, beta_policy=BetaPolicy.passthrough())
    gw = await start_gateway(aiohttp_client, {"bedrock": provider})

    result = await run_claude(
        "say hi",
        env={"ANTHROPIC_BASE_URL": str(gw.make_url("")), "ANTHROPIC_AUTH_TOKEN": "tok-test"},
        sink=sink,
    )

    assert result.returncode != 0
    assert fake.rejections == ["invalid beta flag"]  # a 400: no retry
    assert result.json is not None and result.json["is_error"] is True
    assert "invalid beta flag" in result.json["result"]
    assert sink.hits == []


# -- errors as the CLI in Bedrock and Vertex mode sees them -------------------------------------

BEDROCK_ENV = {
    "CLAUDE_CODE_USE_BEDROCK": "1",
    "CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1",
    "AWS_REGION": "us-east-1",
}


async def test_cli_bedrock_mode_shows_the_gateways_auth_denial_without_retrying(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    sink: ProxySink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMGW_E2E_STATIC_KEY", "gw-key-right-0123456789")
    fake = FakeBedrock()
    await fake.start(aiohttp_server)
    seen: list[str] = []
    key = StaticKeyConfig(id="dev", key_env="LLMGW_E2E_STATIC_KEY")
    auth = AuthConfig(enabled=True, store=False, static_keys=(key,))
    gw = await start_gateway(
        aiohttp_client, {"bedrock": bedrock_provider(fake)}, auth=auth, seen=seen
    )

    result = await run_claude(
        "say hi",
        env={
            "CLAUDE_CODE_USE_BEDROCK": "1",
            "AWS_REGION": "us-east-1",
            "ANTHROPIC_BEDROCK_BASE_URL": str(gw.make_url("/bedrock")),
            # The gateway key as a Bedrock API key: sent as Authorization: Bearer.
            "AWS_BEARER_TOKEN_BEDROCK": "gw-key-wrong-0123456789",
        },
        sink=sink,
    )

    assert result.returncode != 0
    assert result.json is not None and result.json["is_error"] is True
    # Claude Code replaces any auth error whose message names x-api-key (the gateway's does)
    # with its own login hint; other 401 messages are shown as "API Error: 401 <message>".
    shown = result.json["result"]
    assert shown == "Not logged in · Please run /login" or "API Error: 401" in shown
    # x-should-retry: false, where a bare 401 is retried CLAUDE_CODE_MAX_RETRIES times.
    streams = [s for s in seen if s.endswith("/invoke-with-response-stream")]
    assert len(streams) == 1
    assert fake.requests == []
    assert sink.hits == []


async def test_cli_bedrock_mode_retries_an_upstream_overload_and_shows_its_message(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    sink: ProxySink,
) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream = FakeAnthropic(*(Reply(status=529, body=overloaded) for _ in range(3)))
    await upstream.start(aiohttp_server)
    gw = await start_gateway(aiohttp_client, {"anthropic": anthropic_provider(upstream)})

    result = await run_claude(
        "say hi",
        env=BEDROCK_ENV | {"ANTHROPIC_BEDROCK_BASE_URL": str(gw.make_url("/bedrock"))},
        sink=sink,
    )

    assert result.returncode != 0
    assert result.json is not None
    assert "API Error: 529 Overloaded" in result.json["result"]
    assert len(upstream.requests) == 3  # CLAUDE_CODE_MAX_RETRIES=2 in the harness
    assert sink.hits == []


async def test_cli_vertex_mode_retries_a_rate_limit_and_shows_its_message(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    sink: ProxySink,
) -> None:
    limited = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    upstream = FakeAnthropic(
        *(Reply(status=429, body=limited, headers={"retry-after": "0"}) for _ in range(3))
    )
    await upstream.start(aiohttp_server)
    gw = await start_gateway(aiohttp_client, {"anthropic": anthropic_provider(upstream)})

    result = await run_claude(
        "say hi",
        env={
            "CLAUDE_CODE_USE_VERTEX": "1",
            "ANTHROPIC_VERTEX_BASE_URL": str(gw.make_url("/vertex/v1")),
            "CLAUDE_CODE_SKIP_VERTEX_AUTH": "1",
            "CLOUD_ML_REGION": "us-east5",
            "ANTHROPIC_VERTEX_PROJECT_ID": "p",
        },
        sink=sink,
    )

    assert result.returncode != 0
    assert result.json is not None
    assert "API Error: Request rejected (429) · slow down" in result.json["result"]
    assert len(upstream.requests) == 3
    assert sink.hits == []
