"""The real Claude Code CLI, aimed straight at FakeAnthropic: proves the fake is realistic.

If these fail after a CLI upgrade, the fake (and CLIENT-TRAFFIC.md) need updating before any
gateway test that relies on the fake can be trusted.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from pytest_aiohttp import AiohttpServer

from llmgw.demo import DemoUsage
from tests.claude_cli import ProxySink, require_claude, run_claude
from tests.fakes import FakeAnthropic, Reply

pytestmark = pytest.mark.e2e


@pytest.fixture
async def sink() -> AsyncIterator[ProxySink]:
    require_claude()
    async with ProxySink() as proxy:
        yield proxy


async def test_cli_with_auth_token_completes_against_fake(
    aiohttp_server: AiohttpServer, sink: ProxySink
) -> None:
    usage = DemoUsage(input_tokens=7, output_tokens=11, cache_creation_5m=2048, cache_read=30000)
    fake = FakeAnthropic(
        Reply(text="Hello from the fake upstream.", thinking="Greet.", usage=usage)
    )
    url = await fake.start(aiohttp_server)

    result = await run_claude(
        "say hi",
        env={"ANTHROPIC_BASE_URL": str(url), "ANTHROPIC_AUTH_TOKEN": "tok-test"},
        sink=sink,
    )

    assert result.returncode == 0, result.stderr
    assert result.json is not None, result.stdout
    assert result.json["result"] == "Hello from the fake upstream."
    reported = result.json["usage"]
    assert reported["input_tokens"] == 7
    assert reported["output_tokens"] == 11
    assert reported["cache_creation_input_tokens"] == 2048
    assert reported["cache_read_input_tokens"] == 30000
    assert [(r.method, r.path_qs) for r in fake.requests] == [("POST", "/v1/messages?beta=true")]
    sent = fake.requests[0]
    assert sent.headers["Authorization"] == "Bearer tok-test"
    assert "x-api-key" not in sent.headers
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert len(sent.body) > 20_000
    assert sent.json()["stream"] is True
    assert sink.hits == []


async def test_cli_with_api_key_sends_x_api_key(
    aiohttp_server: AiohttpServer, sink: ProxySink
) -> None:
    fake = FakeAnthropic(api_key="sk-test")
    url = await fake.start(aiohttp_server)

    result = await run_claude(
        "say hi",
        env={"ANTHROPIC_BASE_URL": str(url), "ANTHROPIC_API_KEY": "sk-test"},
        sink=sink,
    )

    assert result.returncode == 0, result.stderr
    assert result.json is not None, result.stdout
    assert result.json["result"] == Reply().text
    assert [(r.method, r.path_qs) for r in fake.requests] == [("POST", "/v1/messages?beta=true")]
    sent = fake.requests[0]
    assert sent.headers["x-api-key"] == "sk-test"
    assert "Authorization" not in sent.headers
    assert sink.hits == []


async def test_cli_runs_a_tool_loop_and_sends_thinking_back(
    aiohttp_server: AiohttpServer, sink: ProxySink
) -> None:
    read = ("Read", {"file_path": "/nonexistent/llmgw-e2e.txt"})
    fake = FakeAnthropic(
        Reply(thinking="Read the file first.", text="Reading it.", tool_use=read),
        Reply(text="The file does not exist."),
    )
    url = await fake.start(aiohttp_server)

    result = await run_claude(
        "read the file",
        env={"ANTHROPIC_BASE_URL": str(url), "ANTHROPIC_AUTH_TOKEN": "tok-test"},
        sink=sink,
    )

    assert result.returncode == 0, result.stderr
    assert result.json is not None, result.stdout
    assert result.json["result"] == "The file does not exist."
    assert len(fake.requests) == 2
    history = fake.requests[1].json()["messages"]
    assistant = next(m for m in history if m["role"] == "assistant")
    by_type = {block["type"]: block for block in assistant["content"]}
    # Sent back only because the fake echoed the requested model string (CLIENT-TRAFFIC §5).
    assert by_type["thinking"]["thinking"] == "Read the file first."
    assert by_type["thinking"]["signature"]
    assert by_type["tool_use"]["input"] == read[1]
    tool_result = history[-1]["content"][0]
    assert tool_result["type"] == "tool_result"
    assert tool_result["tool_use_id"] == by_type["tool_use"]["id"]
    assert sink.hits == []


async def test_proxy_sink_records_and_refuses_other_hosts(sink: ProxySink) -> None:
    """Without this, `sink.hits == []` above could mean the sink was never consulted."""
    result = await run_claude(
        "say hi",
        env={
            "ANTHROPIC_BASE_URL": "https://api.example.invalid",
            "ANTHROPIC_AUTH_TOKEN": "tok-test",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        },
        sink=sink,
    )

    assert result.returncode != 0
    assert [(hit.method, hit.target) for hit in sink.hits] == [
        ("CONNECT", "api.example.invalid:443")
    ]


async def test_cli_falls_back_to_non_streaming_after_early_stream_error(
    aiohttp_server: AiohttpServer, sink: ProxySink
) -> None:
    # Events 0-4: message_start, text block start, ping, two text deltas; then `error`.
    broken = Reply(text="one two three four five six seven eight nine", error_after=5)
    fake = FakeAnthropic(broken, Reply(text="Recovered without streaming."))
    url = await fake.start(aiohttp_server)

    result = await run_claude(
        "say hi",
        env={"ANTHROPIC_BASE_URL": str(url), "ANTHROPIC_AUTH_TOKEN": "tok-test"},
        sink=sink,
    )

    assert result.returncode == 0, result.stderr
    assert result.json is not None, result.stdout
    assert result.json["result"] == "Recovered without streaming."
    assert len(fake.requests) == 2
    first, second = (r.json() for r in fake.requests)
    assert first["stream"] is True
    assert "stream" not in second or second["stream"] is False
    assert second["max_tokens"] == first["max_tokens"]
    assert json.dumps(second["messages"]) == json.dumps(first["messages"])
    assert sink.hits == []
