"""Bodies that are JSON objects with a model but odd everywhere else (wrong types, huge
numbers, broken images) pass every feature of the ready gateway without a 5xx: the
upstream judges them, the gateway's limits, metering and audit only read them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from llmgw.config import load_config
from tests.conftest import GatewayFactory
from tests.fakes.anthropic import FakeAnthropic

MODEL = "claude-sonnet-4-6"
_IMAGE = base64.b64encode(b"x" * 5000).decode()
ODD: list[dict[str, Any]] = [
    {"max_tokens": "abc"},
    {"max_tokens": 1e308},
    {"max_tokens": -5},
    {"max_tokens": True},
    {"max_tokens": 10**40},
    {"max_tokens": [1]},
    {"stream": "yes"},
    {"messages": "a string"},
    {
        "messages": [
            1,
            None,
            {"content": 5},
            {
                "content": [
                    1,
                    {"type": 5},
                    {"type": "image", "source": 5},
                    {"type": "image", "source": {"type": "base64", "data": "!!not base64"}},
                    {"type": "tool_result", "content": [None, 3, {"type": "image"}]},
                ]
            },
        ]
    },
    {"system": 5, "tools": 5, "metadata": 3, "thinking": {"budget_tokens": "x"}},
    {"thinking": {"type": "enabled", "budget_tokens": 10**30}},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": {"data": _IMAGE}}]}]},
    {"model": MODEL + "\x00"},
    {"model": "m" * 100_000},
]
CONFIG = """
[storage]
url = "sqlite://:memory:"
[providers.anthropic]
kind = "anthropic"
base_url = "{upstream}"
[metering]
store = "memory"
journal = "off"
[audit]
mode = "sync"
[limits]
enabled = true
[limits.defaults.global]
rpm = 1_000_000
tpm = 1_000_000_000_000
concurrent = 1_000
budgets = [{{ usd = 1_000_000, period = "monthly" }}]
"""


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("odd", ODD, ids=lambda odd: ",".join(odd)[:30])
async def test_odd_body_gets_an_answer_never_a_gateway_failure(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
    path: str,
    odd: dict[str, Any],
) -> None:
    config = tmp_path / "llmgw.toml"
    config.write_text(CONFIG.format(upstream=fake_anthropic.url))
    client = await gateway(load_config(config))
    body = {"model": MODEL, "max_tokens": 10, "messages": []} | odd

    headers = {"anthropic-version": "2023-06-01"}
    resp = await client.post(path, data=json.dumps(body), headers=headers)

    assert resp.status < 500, await resp.text()
    if resp.status >= 400:
        assert (await resp.json())["type"] == "error"
