"""The real Claude Code CLI through llmgw, llmgw in front of the fake Anthropic upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from pytest_aiohttp import AiohttpServer

from llmgw.app import make_app
from llmgw.config import ProviderConfig
from llmgw.context import RequestContext
from tests.claude_cli import ProxySink, require_claude, run_claude
from tests.conftest import context_copies, gateway_config
from tests.fakes.anthropic import FakeAnthropic, Reply

pytestmark = pytest.mark.e2e

UPSTREAM_KEY = "sk-ant-upstream-provider-key"


@pytest.fixture
async def sink() -> AsyncIterator[ProxySink]:
    require_claude()
    async with ProxySink() as proxy:
        yield proxy


async def _gateway(
    aiohttp_server: AiohttpServer,
    fake: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    contexts: list[RequestContext],
) -> str:
    """llmgw on a real loopback port, holding the provider key the fake insists on."""
    monkeypatch.setenv("LLMGW_E2E_UPSTREAM_KEY", UPSTREAM_KEY)
    fake.api_key = UPSTREAM_KEY
    provider = ProviderConfig(
        name="anthropic",
        kind="anthropic",
        base_url=str(fake.url),
        api_key_env="LLMGW_E2E_UPSTREAM_KEY",
    )
    cfg = gateway_config(str(fake.url), providers=(provider,))
    server = await aiohttp_server(make_app(cfg, middlewares=(context_copies(contexts),)))
    return str(server.make_url(""))


@pytest.mark.parametrize(
    ("credential", "secret"),
    [
        ("ANTHROPIC_AUTH_TOKEN", "tok-client-gateway-credential"),
        ("ANTHROPIC_API_KEY", "sk-client-key"),
    ],
)
async def test_claude_says_hi_through_the_gateway(
    aiohttp_server: AiohttpServer,
    fake_anthropic: FakeAnthropic,
    sink: ProxySink,
    monkeypatch: pytest.MonkeyPatch,
    credential: str,
    secret: str,
) -> None:
    fake_anthropic.queue(Reply(text="Hi from behind llmgw.", thinking="Greet them."))
    contexts: list[RequestContext] = []
    url = await _gateway(aiohttp_server, fake_anthropic, monkeypatch, contexts)

    result = await run_claude(
        "say hi", env={"ANTHROPIC_BASE_URL": url, credential: secret}, sink=sink
    )

    assert result.returncode == 0, result.stderr
    assert result.json is not None, result.stdout
    assert result.json["result"] == "Hi from behind llmgw."
    assert [(r.method, r.path_qs) for r in fake_anthropic.requests] == [
        ("POST", "/v1/messages?beta=true")
    ]
    sent = fake_anthropic.requests[0]
    assert 10_000 < len(sent.body) < 1_000_000
    assert sent.json()["stream"] is True
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in sent.headers
    assert secret not in repr(sent.raw_headers)
    assert "claude-code-20250219" in sent.headers["anthropic-beta"]
    (ctx,) = contexts
    assert ctx.session_id is not None
    assert ctx.session_id == sent.headers["x-claude-code-session-id"]
    assert ctx.usage.final and ctx.usage.output_tokens > 0
    assert sink.hits == []


async def test_claude_recovers_from_a_mid_stream_error_without_streaming(
    aiohttp_server: AiohttpServer,
    fake_anthropic: FakeAnthropic,
    sink: ProxySink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Events 0-4: message_start, text block start, ping, two text deltas; then `error`.
    broken = Reply(text="one two three four five six seven eight nine", error_after=5)
    fake_anthropic.queue(broken, Reply(text="Recovered without streaming."))
    contexts: list[RequestContext] = []
    url = await _gateway(aiohttp_server, fake_anthropic, monkeypatch, contexts)

    result = await run_claude(
        "say hi",
        env={"ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": "tok-client"},
        sink=sink,
    )

    assert result.returncode == 0, result.stderr
    assert result.json is not None, result.stdout
    assert result.json["result"] == "Recovered without streaming."
    first, second = (r.json() for r in fake_anthropic.requests)
    assert first["stream"] is True
    assert not second.get("stream")
    assert json.dumps(second["messages"]) == json.dumps(first["messages"])
    assert [c.stream for c in contexts] == [True, False]
    assert contexts[1].usage.final
    assert sink.hits == []
