"""The real Claude Code CLI against an exhausted budget: it shows the message and stops."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from llmgw.app import make_app
from llmgw.config import LimitsConfig
from llmgw.demo import DemoUsage
from llmgw.limits import parse_limit_sets
from tests.claude_cli import ProxySink, require_claude, run_claude
from tests.conftest import gateway_config
from tests.fakes.anthropic import FakeAnthropic, Reply

pytestmark = pytest.mark.e2e


@pytest.fixture
async def sink() -> AsyncIterator[ProxySink]:
    require_claude()
    async with ProxySink() as proxy:
        yield proxy


async def test_cli_shows_the_budget_message_and_does_not_retry(
    aiohttp_client: AiohttpClient, fake_anthropic: FakeAnthropic, sink: ProxySink
) -> None:
    # Haiku output at $5/MTok: one answer of 300k output tokens spends $1.50 of $1.00.
    fake_anthropic.queue(Reply(usage=DemoUsage(output_tokens=300_000)))
    limits = LimitsConfig(
        enabled=True,
        defaults=parse_limit_sets({"global": {"budgets": [{"usd": 1.0, "period": "weekly"}]}}, "d"),
    )
    app = make_app(gateway_config(str(fake_anthropic.url), limits=limits))
    messages_seen: list[int] = []

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        if request.method == "POST" and request.path == "/v1/messages":
            messages_seen.append(response.status)

    app.on_response_prepare.append(count)
    client = await aiohttp_client(app)
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "x"}],
    }
    async with client.post(
        "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
    ) as r:
        assert r.status == 200
        await r.read()
    messages_seen.clear()

    result = await run_claude(
        "say hi",
        env={
            "ANTHROPIC_BASE_URL": str(client.make_url("")).rstrip("/"),
            "ANTHROPIC_AUTH_TOKEN": "tok-test",
            "ANTHROPIC_MODEL": "claude-haiku-4-5",
            "CLAUDE_CODE_MAX_RETRIES": "10",
        },
        sink=sink,
    )

    assert result.returncode != 0
    assert result.json is not None, result.stdout
    assert result.json["is_error"] is True
    shown = result.json["result"]
    assert "Budget exhausted: the gateway-wide weekly budget of $1.00" in shown
    assert "It resets at " in shown
    assert messages_seen == [400]  # shown once, not retried
    assert len(fake_anthropic.requests) == 1  # nothing reached the upstream after the budget
    assert sink.hits == []
