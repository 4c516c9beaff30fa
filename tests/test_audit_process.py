"""A real gateway process killed with SIGKILL: sync mode leaves a visible incomplete record,
batched mode loses nothing older than its flush interval."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmgw.audit import AuditQuery, SQLAuditSink, verify
from llmgw.storage.db import open_database
from tests.fakes.anthropic import FakeAnthropic, Reply
from tests.secret_scan import SecretRegistry

PROVIDER_KEY = "sk-ant-api03-process-audit-test-key-0123456789"
BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
}


class Gateway:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, db_url: str) -> None:
        self.proc, self.url, self.db_url = proc, url, db_url

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)


@pytest.fixture
async def start_gateway(
    tmp_path: Path, fake_anthropic: FakeAnthropic, secret_registry: SecretRegistry
) -> AsyncIterator[Any]:
    secret_registry.add(PROVIDER_KEY)
    procs: list[asyncio.subprocess.Process] = []

    async def start(mode: str) -> Gateway:
        db = tmp_path / "gw.db"
        cfg = tmp_path / "gw.toml"
        cfg.write_text(
            f'[storage]\nurl = "sqlite:///{db}"\n'
            f'[providers.anthropic]\nkind = "anthropic"\nbase_url = "{fake_anthropic.url}"\n'
            'api_key_env = "AUDIT_PROC_PROVIDER_KEY"\n'
            f'[audit]\nenabled = true\nmode = "{mode}"\nchain = "proc"\nflush_interval = 0.2\n'
        )
        log = (tmp_path / "gateway.log").open("wb")
        env = {**os.environ, "AUDIT_PROC_PROVIDER_KEY": PROVIDER_KEY, "LLMGW_LOG_LEVEL": "DEBUG"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmgw",
            "serve",
            "-c",
            str(cfg),
            "--port",
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=env,
        )
        log.close()
        procs.append(proc)
        assert proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, (tmp_path / "gateway.log").read_text()
            if line.startswith("llmgw listening on "):
                return Gateway(proc, line.split()[-1], f"sqlite:///{db}")

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def stored(db_url: str) -> Any:
    db = open_database(db_url)
    await db.open()
    try:
        sink = SQLAuditSink(db)
        records = [s.record async for s in sink.query(AuditQuery())]
        report = verify([e async for e in sink.entries()])
    finally:
        await db.close()
    return records, report


async def test_sigkill_mid_stream_in_sync_mode_leaves_an_incomplete_record(
    start_gateway: Any, fake_anthropic: FakeAnthropic
) -> None:
    gate = asyncio.Event()
    fake_anthropic.queue(Reply(), Reply(gates={2: gate}))
    gw: Gateway = await start_gateway("sync")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gw.url}/v1/messages", json=BODY) as done:
            assert done.status == 200
            await done.read()
        first = done.headers["x-llmgw-request-id"]
        await asyncio.sleep(0.1)  # the completed record is written after the answer
        async with session.post(f"{gw.url}/v1/messages", json={**BODY, "stream": True}) as resp:
            assert b"message_start" in await resp.content.readany()
            cut = resp.headers["x-llmgw-request-id"]
            gw.kill()
            await gw.proc.wait()
    gate.set()
    records, report = await stored(gw.db_url)
    kinds = [(r["kind"], r["request_id"]) for r in records]
    assert kinds == [
        ("request.start", first),
        ("request", first),
        ("request.start", cut),
    ]
    assert report.ok and report.incomplete == [cut]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgw",
        "audit",
        "verify",
        "--db",
        gw.db_url,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert f"incomplete: 1 request(s) started and never completed: {cut}" in out.decode()


async def test_sigkill_in_batched_mode_keeps_everything_older_than_the_flush_interval(
    start_gateway: Any,
) -> None:
    gw: Gateway = await start_gateway("batched")
    ids = []
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.post(f"{gw.url}/v1/messages", json=BODY) as resp:
                assert resp.status == 200
                await resp.read()
                ids.append(resp.headers["x-llmgw-request-id"])
    await asyncio.sleep(0.6)  # three flush intervals (0.2 s)
    gw.kill()
    await gw.proc.wait()
    records, report = await stored(gw.db_url)
    assert [r["request_id"] for r in records] == ids
    assert all(r["kind"] == "request" for r in records)
    assert report.ok and report.incomplete == []


async def test_serve_without_a_config_audits_into_its_database_and_verifies(
    tmp_path: Path,
) -> None:
    """The ready gateway audits by default: batched, into ``storage.url`` (``llmgw.db``
    in the working directory, here a tmp dir), flushed when the process stops."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "llmgw", "serve", "--port", "0"),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=tmp_path,
        )
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("llmgw listening on "):
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, (tmp_path / "gateway.log").read_text()
        url = line.split()[-1]
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/v1/messages", json=BODY) as resp,
        ):
            assert resp.status == 200
            await resp.read()
            request_id = resp.headers["x-llmgw-request-id"]
    finally:
        proc.terminate()
        assert await proc.wait() == 0
    records, report = await stored(f"sqlite:///{tmp_path / 'llmgw.db'}")
    assert [(r["kind"], r["request_id"], r["status"]) for r in records] == [
        ("request", request_id, 200)
    ]
    assert report.ok
    verify_proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "llmgw", "audit", "verify"),
        stdout=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    out, _ = await verify_proc.communicate()
    assert verify_proc.returncode == 0
    assert out.decode().endswith("ok: 1 records in 1 chain(s)\n")
