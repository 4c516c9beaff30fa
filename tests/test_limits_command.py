"""``llmgw limits set|get|list|delete`` against the store a gateway built from the same
config file enforces."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from llmgw.app import make_app
from llmgw.cli import main
from llmgw.config import load_config
from tests.fakes.anthropic import FakeAnthropic

MESSAGE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 5,
    "messages": [{"role": "user", "content": "hi"}],
}


def write_config(tmp_path: Path, upstream: str = "http://127.0.0.1:9") -> Path:
    path = tmp_path / "llmgw.toml"
    path.write_text(
        "\n".join(
            [
                "[storage]",
                f'url = "sqlite:///{tmp_path / "gw.db"}"',
                "[metering]",
                "enabled = false",
                "[providers.anthropic]",
                'kind = "anthropic"',
                f'base_url = "{upstream}"',
                "[limits]",
                "policy_ttl = 0.5",
                "[limits.defaults.session]",
                "rpm = 100",
            ]
        )
        + "\n"
    )
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(["limits", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_set_get_list_delete_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(write_config(tmp_path))
    code, shown, _ = cli(
        capsys,
        "set",
        "team",
        "core",
        "--rpm",
        "600",
        "--budget",
        "500:monthly:0.8",
        "--budget",
        "20:daily",
        "-c",
        cfg,
    )
    assert code == 0
    assert shown["limits"] == {
        "rpm": 600,
        "budgets": [
            {"usd": 500.0, "period": "monthly", "warn_at": 0.8},
            {"usd": 20.0, "period": "daily"},
        ],
    }
    raw = '{"tpm": 400000, "budgets": [{"usd": 25, "period": "7d"}]}'
    assert cli(capsys, "set", "user", "ada", "--json", raw, "-c", cfg)[0] == 0

    code, got, _ = cli(capsys, "get", "user", "ada", "-c", cfg)
    assert code == 0
    assert got["limits"] == {"tpm": 400000, "budgets": [{"usd": 25.0, "period": "7d"}]}
    code, listed, _ = cli(capsys, "list", "-c", cfg)
    assert [(p["tier"], p["name"]) for p in listed["data"]] == [("team", "core"), ("user", "ada")]
    code, listed, _ = cli(capsys, "list", "--tier", "team", "-c", cfg)
    assert [p["name"] for p in listed["data"]] == ["core"]

    assert cli(capsys, "delete", "team", "core", "-c", cfg)[0] == 0
    code, _, err = cli(capsys, "get", "team", "core", "-c", cfg)
    assert code == 1 and "no limits set for team 'core'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["set", "team", "core", "--rpm", "-1"], "limits.rpm: expected a non-negative integer"),
        (["set", "team", "core", "--budget", "5:yearly"], "limits.budgets[0].period:"),
        (["set", "org", "core", "--rpm", "1"], "tier: unknown tier 'org'"),
        (["set", "global", "all", "--rpm", "1"], "name: the global tier has one entry"),
        (["set", "team", "core", "--json", "{nope"], "--json: not valid JSON"),
        (["list", "--tier", "org"], "tier: unknown tier 'org'"),
    ],
)
def test_errors_name_the_field_and_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    cfg = str(write_config(tmp_path))
    code, _, err = cli(capsys, *argv, "-c", cfg)
    assert code == 1
    assert f"llmgw limits: {message}" in err
    assert cli(capsys, "list", "-c", cfg)[1] == {"data": []}


async def test_a_running_gateway_enforces_what_the_cli_set_within_its_ttl(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    fake_anthropic: FakeAnthropic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = write_config(tmp_path, str(fake_anthropic.url))
    client = await aiohttp_client(make_app(load_config(cfg)))

    async def send(session: str) -> int:
        headers = {"x-claude-code-session-id": session}
        async with client.post("/v1/messages", json=MESSAGE, headers=headers) as resp:
            await resp.read()
            return resp.status

    assert await send("s1") == 200  # the gateway has read the (empty) policy table
    # asyncio.run inside the CLI needs a thread of its own.
    args = ["limits", "set", "session", "s1", "--rpm", "2", "-c", str(cfg)]
    assert await asyncio.to_thread(main, args) == 0
    capsys.readouterr()
    await asyncio.sleep(0.6)  # limits.policy_ttl = 0.5
    assert [await send("s1") for _ in range(2)] == [200, 429]  # 3 requests in the minute
    assert await send("s2") == 200  # other sessions keep the default
