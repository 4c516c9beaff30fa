"""``llmgw keys`` against the same SQLite store a gateway serves from."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from llmgw.app import make_app
from llmgw.cli import main
from llmgw.config import load_config
from tests.fakes import FakeAnthropic
from tests.secret_scan import SecretRegistry

MESSAGE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 5,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture
def config_file(
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> Path:
    monkeypatch.setenv("LLMGW_KEY_SECRET", "cli-test-server-secret-0123456789")
    secret_registry.add("cli-test-server-secret-0123456789")
    path = tmp_path / "gw.toml"
    path.write_text(
        f"""
[storage]
url = "sqlite:///{tmp_path / "gw.db"}"

[auth]
enabled = true
cache_ttl = 0

[providers.anthropic]
base_url = "{fake_anthropic.url}"
"""
    )
    return path


async def _keys(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    # The CLI runs its own event loop (asyncio.run), as it does from a shell.
    code = await asyncio.to_thread(main, ["keys", *argv])
    return code, capsys.readouterr().out


async def test_cli_created_key_works_on_the_gateway_until_revoked(
    config_file: Path,
    aiohttp_client: AiohttpClient,
    capsys: pytest.CaptureFixture[str],
    secret_registry: SecretRegistry,
) -> None:
    code, out = await _keys(
        capsys,
        "create",
        "-c",
        str(config_file),
        "--json",
        "--team",
        "core",
        "--model",
        "claude-haiku-*",
        "--limit",
        "rpm=60",
        "--expires-in",
        "30d",
    )
    assert code == 0
    created = json.loads(out)
    secret, key_id = created["secret"], created["key"]["id"]
    secret_registry.add(secret)
    assert created["key"]["limits"] == {"rpm": 60}
    assert created["key"]["allowed_models"] == ["claude-haiku-*"]

    client = await aiohttp_client(make_app(load_config(config_file)))
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await client.post("/v1/messages", json=MESSAGE, headers=headers)).status == 200

    code, out = await _keys(capsys, "list", "-c", str(config_file))
    assert code == 0 and key_id in out and "active" in out
    assert secret not in out and secret[9:] not in out

    code, out = await _keys(capsys, "rotate", "-c", str(config_file), key_id, "--grace", "1h")
    assert code == 0
    new_secret = next(
        line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("secret: ")
    )
    secret_registry.add(new_secret)
    for key in (secret, new_secret):
        resp = await client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": key})
        assert resp.status == 200

    code, out = await _keys(capsys, "revoke", "-c", str(config_file), key_id)
    assert code == 0 and "revoked" in out
    for key in (secret, new_secret):  # cache_ttl = 0: the next request sees the revoke
        resp = await client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": key})
        assert resp.status == 401

    code, out = await _keys(capsys, "list", "-c", str(config_file))
    assert key_id not in out
    code, out = await _keys(capsys, "list", "-c", str(config_file), "--all", "--json")
    assert json.loads(out)["data"][0]["revoked_at"] is not None


def test_cli_errors_are_messages_not_tracebacks(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["keys", "revoke", "-c", str(config_file), "key_missing"]) == 1
    assert "key 'key_missing' not found" in capsys.readouterr().err
    monkeypatch.delenv("LLMGW_KEY_SECRET")
    assert main(["keys", "list", "-c", str(config_file)]) == 2
    assert "LLMGW_KEY_SECRET is not set" in capsys.readouterr().err
