"""A gateway process killed mid-stream (SIGKILL: no cleanup runs) leaves a usage record that
the next start finds and marks incomplete; never a missing record."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from llmgw.demo import DemoUsage
from tests.fakes.anthropic import FakeAnthropic, Reply

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 100,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}
HEADERS = {"anthropic-version": "2023-06-01", "x-claude-code-session-id": "sess-crash"}


async def start_gateway(config: Path) -> tuple[asyncio.subprocess.Process, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgw",
        "--log-level",
        "WARNING",
        "serve",
        "-c",
        str(config),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=config.parent,
        env=env,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError("the gateway exited before listening")
            if line.startswith("llmgw listening on "):
                return proc, line.removeprefix("llmgw listening on ").strip()


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if proc.returncode is None:
        proc.send_signal(sig)
        await asyncio.wait_for(proc.wait(), 20)


@pytest.fixture
async def fake(aiohttp_server: object) -> AsyncIterator[FakeAnthropic]:
    upstream = FakeAnthropic()
    await upstream.start(aiohttp_server)  # type: ignore[arg-type]
    yield upstream


def rows(db: Path) -> list[tuple[str, str, int, str | None, str | None]]:
    with sqlite3.connect(db) as conn:
        return list(
            conn.execute(
                "SELECT request_id, outcome, input_tokens, session_id, requested_model "
                "FROM llmgw_usage"
            )
        )


@pytest.mark.timeout(60)
async def test_sigkill_mid_stream_leaves_a_record_the_restart_marks_incomplete(
    tmp_path: Path, fake: FakeAnthropic
) -> None:
    db = tmp_path / "gw.db"
    config = tmp_path / "llmgw.toml"
    config.write_text(
        f'[storage]\nurl = "sqlite:///{db}"\n'
        f'[providers.anthropic]\nkind = "anthropic"\nbase_url = "{fake.url}"\n'
    )
    hold = asyncio.Event()  # never set: the stream stalls after its first two events
    fake.queue(Reply(usage=DemoUsage(input_tokens=4321), gates={2: hold}))
    proc, url = await start_gateway(config)
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(f"{url}/v1/messages", json=BODY, headers=HEADERS)
            request_id = resp.headers["x-llmgw-request-id"]
            first = await resp.content.readuntil(b"\n\n")
            assert first.startswith(b"event: message_start")
            proc.send_signal(signal.SIGKILL)  # mid-stream, no cleanup
            await asyncio.wait_for(proc.wait(), 10)
            resp.close()
    finally:
        await stop(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL

    restarted, _ = await start_gateway(config)
    try:
        recorded = {r[0]: r for r in rows(db)}
        assert request_id in recorded
        _, outcome, _, session_id, _ = recorded[request_id]
        assert (outcome, session_id) == ("incomplete", "sess-crash")
    finally:
        await stop(restarted)
    # A clean stop leaves no journal backlog behind.
    assert (tmp_path / "gw.db.usage-journal").read_bytes() == b""


@pytest.mark.timeout(60)
async def test_clean_shutdown_flushes_completed_records(
    tmp_path: Path, fake: FakeAnthropic
) -> None:
    db = tmp_path / "gw.db"
    config = tmp_path / "llmgw.toml"
    config.write_text(
        f'[storage]\nurl = "sqlite:///{db}"\n[metering]\nflush_interval = 30.0\n'
        f'[providers.anthropic]\nkind = "anthropic"\nbase_url = "{fake.url}"\n'
    )
    fake.queue(Reply(usage=DemoUsage(input_tokens=55, output_tokens=66)))
    proc, url = await start_gateway(config)
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(f"{url}/v1/messages", json=BODY, headers=HEADERS)
            await resp.read()
            request_id = resp.headers["x-llmgw-request-id"]
    finally:
        await stop(proc)
    assert [r for r in rows(db) if r[0] == request_id] == [
        (request_id, "complete", 55, "sess-crash", "claude-sonnet-4-6")
    ]
