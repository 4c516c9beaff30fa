"""``llmgw keys`` against the same SQLite store a gateway serves from."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from llmgw.app import make_app
from llmgw.audit import AuditQuery, verify
from llmgw.audit.oneshot import cli_audit_log
from llmgw.audit.setup import open_reader
from llmgw.cli import main
from llmgw.config import GatewayConfig, load_config
from tests.fakes import FakeAnthropic
from tests.secret_scan import SecretRegistry
from tests.test_auth_store import drop_schema, pg_schema_dsn

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


async def test_cli_list_pages_with_limit_and_after(
    config_file: Path, capsys: pytest.CaptureFixture[str], secret_registry: SecretRegistry
) -> None:
    for name in ("a", "b", "c"):
        code, out = await _keys(capsys, "create", "-c", str(config_file), "--name", name, "--json")
        assert code == 0
        secret_registry.add(json.loads(out)["secret"])
    code, out = await _keys(capsys, "list", "-c", str(config_file), "--json")
    order = [k["id"] for k in json.loads(out)["data"]]
    assert len(order) == 3

    code = await asyncio.to_thread(main, ["keys", "list", "-c", str(config_file), "--limit", "2"])
    captured = capsys.readouterr()
    assert code == 0
    assert [line.split()[0] for line in captured.out.splitlines()] == order[:2]
    assert f"llmgw keys list --after {order[1]}" in captured.err

    code, out = await _keys(
        capsys, "list", "-c", str(config_file), "--after", order[1], "--limit", "2", "--json"
    )
    page = json.loads(out)
    assert [k["id"] for k in page["data"]] == order[2:]
    assert (page["has_more"], page["last_id"]) == (False, order[2])


AUDIT_KEY = "cli-audit-hmac-key-0123456789abcdef"


def _with_audit(config_file: Path, sink: str, url: str | None = None) -> None:
    where = (
        f'sink = "jsonl"\npath = "{config_file.parent / "audit.jsonl"}"'
        if sink == "jsonl"
        else 'sink = "database"' + (f'\nurl = "{url}"' if url else "")
    )
    config_file.write_text(
        config_file.read_text() + f'\n[audit]\nenabled = true\nmode = "sync"\nchain = "gw"\n'
        f'hmac_key_env = "LLMGW_AUDIT_KEY"\n{where}\n'
    )


@pytest.mark.parametrize("sink", ["database", "jsonl"])
async def test_cli_key_changes_are_audit_events_on_their_own_verified_chain(
    config_file: Path,
    aiohttp_client: AiohttpClient,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
    sink: str,
) -> None:
    monkeypatch.setenv("LLMGW_AUDIT_KEY", AUDIT_KEY)
    secret_registry.add(AUDIT_KEY)
    _with_audit(config_file, sink)
    config = load_config(config_file)
    # A gateway is running and auditing on chain "gw" while the CLI makes its changes.
    client = await aiohttp_client(make_app(config))

    code, out = await _keys(capsys, "create", "-c", str(config_file), "--json", "--team", "ops")
    assert code == 0
    created = json.loads(out)
    secret, key_id = created["secret"], created["key"]["id"]
    secret_registry.add(secret)
    headers = {"x-api-key": secret}
    assert (await client.post("/v1/messages", json=MESSAGE, headers=headers)).status == 200
    code, out = await _keys(capsys, "rotate", "-c", str(config_file), key_id, "--json")
    assert code == 0
    secret_registry.add(json.loads(out)["secret"])
    for _ in range(2):  # the second revoke changes nothing and is not an event
        code, _out = await _keys(capsys, "revoke", "-c", str(config_file), key_id)
        assert code == 0
    assert (await client.post("/v1/messages", json=MESSAGE, headers=headers)).status == 401
    await client.close()

    code = await asyncio.to_thread(main, ["audit", "verify", "-c", str(config_file)])
    report = capsys.readouterr().out
    assert code == 0, report
    assert "chain 'gw.cli': 3 records, last seq 3: ok" in report
    assert "chain 'gw': " in report and "(signatures checked)" in report

    reader, close = await open_reader(config)
    try:
        admin = [s async for s in reader.query(AuditQuery(kind="admin"))]
    finally:
        await close()
    assert [(s.chain, s.record["action"]) for s in admin] == [
        ("gw.cli", "key.create"),
        ("gw.cli", "key.rotate"),
        ("gw.cli", "key.revoke"),
    ]
    assert all(s.record["actor"] == "cli" and s.record["target"] == key_id for s in admin)
    assert admin[0].record["details"]["team"] == "ops"
    assert admin[0].record["details"]["via"] == "llmgw keys"
    assert admin[1].record["details"]["grace_seconds"] == 3600.0


async def test_cli_change_is_not_made_when_the_audit_log_cannot_be_written(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_audit(config_file, "database")
    monkeypatch.delenv("LLMGW_AUDIT_KEY", raising=False)  # the signing key is missing
    code = await asyncio.to_thread(main, ["keys", "create", "-c", str(config_file)])
    assert code == 2
    assert "LLMGW_AUDIT_KEY" in capsys.readouterr().err
    code, out = await _keys(capsys, "list", "-c", str(config_file), "--all", "--json")
    assert code == 0 and json.loads(out)["data"] == []


@pytest.mark.parametrize(
    "sink", ["database", "jsonl", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_concurrent_cli_writers_keep_one_unbroken_chain(
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
    sink: str,
) -> None:
    monkeypatch.setenv("LLMGW_AUDIT_KEY", AUDIT_KEY)
    secret_registry.add(AUDIT_KEY)
    schema = None
    if sink == "postgres":
        schema, dsn = await pg_schema_dsn()
        _with_audit(config_file, "database", dsn)
    else:
        _with_audit(config_file, sink)
    config = load_config(config_file)
    try:
        await _six_writers(config)
    finally:
        if schema is not None:
            await drop_schema(schema)


async def _six_writers(config: GatewayConfig) -> None:

    async def one_process(i: int) -> int:
        log = cli_audit_log(config)
        assert log is not None
        async with log:
            return (await log.record(action="key.revoke", target=f"key_{i}")).seq

    seqs = await asyncio.gather(*(one_process(i) for i in range(6)))
    assert sorted(seqs) == [1, 2, 3, 4, 5, 6]
    reader, close = await open_reader(config)
    try:
        report = verify([e async for e in reader.entries()], key=AUDIT_KEY.encode())
    finally:
        await close()
    assert report.ok and report.chains["gw.cli"].records == 6
