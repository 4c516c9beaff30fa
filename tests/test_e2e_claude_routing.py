"""The real Claude Code CLI, asking for a gateway alias, completes through a failover."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pytest_aiohttp import AiohttpServer

from llmgw.app import make_app
from tests._routing_helpers import routed_config
from tests.claude_cli import ProxySink, require_claude, run_claude
from tests.fakes.anthropic import FakeAnthropic, Reply

pytestmark = pytest.mark.e2e

SONNET = "claude-sonnet-4-6"


@pytest.fixture
async def sink() -> AsyncIterator[ProxySink]:
    require_claude()
    async with ProxySink() as proxy:
        yield proxy


async def test_cli_with_a_model_alias_completes_through_failover(
    aiohttp_server: AiohttpServer, sink: ProxySink
) -> None:
    overloaded = FakeAnthropic(responder=lambda _r: Reply.overloaded())
    healthy = FakeAnthropic(responder=lambda _r: Reply(text="Served by the second deployment."))
    for fake in (overloaded, healthy):
        await fake.start(aiohttp_server)
    routes = [
        {
            "model": "claude-team-sonnet",
            "display_name": "Team Sonnet",
            "deployments": [
                {"provider": "overloaded", "model": SONNET, "weight": 1},
                {"provider": "healthy", "model": SONNET, "weight": 0},
            ],
        },
        # Claude Code's own background ids (PROTOCOLS.md §1.8) go to the healthy upstream.
        {"model": "claude-*", "deployments": [{"provider": "healthy"}]},
    ]
    cfg = routed_config(
        {"overloaded": str(overloaded.url), "healthy": str(healthy.url)},
        routes,
        routing={"failure_threshold": 100},  # keep the overloaded one first for every call
    )
    gateway = await aiohttp_server(make_app(cfg))

    result = await run_claude(
        "say hi",
        env={
            "ANTHROPIC_BASE_URL": str(gateway.make_url("")),
            "ANTHROPIC_AUTH_TOKEN": "tok-test",
            "ANTHROPIC_MODEL": "claude-team-sonnet",
        },
        sink=sink,
    )

    assert result.returncode == 0, result.stderr
    assert result.json is not None, result.stdout
    assert result.json["result"] == "Served by the second deployment."
    main_calls = [r for r in healthy.requests if r.json().get("model") == SONNET]
    assert main_calls, [r.json().get("model") for r in healthy.requests]
    assert len(overloaded.requests) >= len(main_calls)
    assert {r.json()["model"] for r in overloaded.requests} == {SONNET}
    assert main_calls[0].headers["anthropic-version"] == "2023-06-01"
    assert "tok-test" not in main_calls[0].headers.get("authorization", "")
    assert sink.hits == []
