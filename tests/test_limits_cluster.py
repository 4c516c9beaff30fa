"""Limits that hold across gateway processes sharing Redis, and when Redis goes away.

Two real ``llmgw serve`` processes sit in front of one fake upstream; the test counts what
the upstream received. The outage tests start their own ``redis-server`` and stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from pytest_aiohttp import AiohttpClient

from llmgw.app import make_app
from llmgw.config import LimitsConfig, StorageConfig
from llmgw.limits import parse_limit_sets
from llmgw.limits.estimate import estimate_request
from llmgw.pricing import PriceTable
from tests.conftest import gateway_config
from tests.fakes.anthropic import FakeAnthropic, Recorded, Reply

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"
REPO = Path(__file__).resolve().parents[1]
MODEL = "claude-haiku-4-5"
HEADERS = {"anthropic-version": "2023-06-01"}
BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1000,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}
WORST = estimate_request(BODY, json.dumps(BODY).encode(), [MODEL], PriceTable())
K = 5
N = 200


def _toml(value: Any) -> str:
    return json.dumps(value)  # JSON strings and numbers are valid TOML


async def start_gateway(config: Path, log: Path) -> tuple[asyncio.subprocess.Process, str]:
    """``python -m llmgw serve -c config --port 0``; returns the process and its base URL."""
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmgw",
            "serve",
            "-c",
            str(config),
            "--port",
            "0",
            cwd=config.parent,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"gateway exited, see {log}")
            if line.startswith("llmgw listening on "):
                return proc, line.split()[-1]


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"llmgw:test:{secrets.token_hex(6)}:"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


Pair = Callable[..., Awaitable[list[str]]]


@pytest.fixture
async def gateway_pair(
    fake_anthropic: FakeAnthropic, tmp_path: Path, prefix: str
) -> AsyncIterator[Pair]:
    """``await pair(global_limits, **limits_options)`` → the base URLs of two gateways
    sharing Redis."""
    procs: list[asyncio.subprocess.Process] = []

    async def pair(global_limits: dict[str, Any], **options: Any) -> list[str]:
        config = tmp_path / "llmgw.toml"
        lines = [
            "[storage]",
            'url = "sqlite://:memory:"',
            f"redis_url = {_toml(REDIS_URL)}",
            "[metering]",
            "enabled = false",
            "[providers.anthropic]",
            'kind = "anthropic"',
            f"base_url = {_toml(str(fake_anthropic.url))}",
            "[limits]",
            'backend = "redis"',
            f"key_prefix = {_toml(prefix)}",
            *(f"{k} = {_toml(v)}" for k, v in options.items()),
            "[limits.defaults.global]",
            *(f"{k} = {_toml(v)}" for k, v in global_limits.items() if k != "budgets"),
            *(
                f"budgets = [{{ usd = {b['usd']!r}, period = {_toml(b['period'])} }}]"
                for b in global_limits.get("budgets", [])[:1]
            ),
        ]
        config.write_text("\n".join(lines) + "\n")
        urls = []
        for i in range(2):
            proc, url = await start_gateway(config, tmp_path / f"gateway{i}.log")
            procs.append(proc)
            urls.append(url)
        return urls

    yield pair
    for proc in procs:
        await stop(proc)


async def fire(urls: list[str]) -> list[int]:
    """N concurrent streaming requests split across the gateways; their statuses."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(i: int) -> int:
            url = urls[i % len(urls)] + "/v1/messages"
            async with http.post(url, json=BODY, headers=HEADERS) as resp:
                await resp.read()
                return resp.status

        return list(await asyncio.gather(*(one(i) for i in range(N))))


def hold_streams(fake: FakeAnthropic) -> asyncio.Event:
    gate = asyncio.Event()

    def responder(_: Recorded) -> Reply:
        return Reply(gates={1: gate})

    fake.responder = responder
    return gate


async def release_when_refused(gate: asyncio.Event, fake: FakeAnthropic, firing: Any) -> None:
    """Open the gate once K requests are held upstream and nothing more is arriving."""
    async with asyncio.timeout(60):
        while len(fake.requests) < K:  # noqa: ASYNC110 - the fake offers no event for this
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # the refused ones are answered meanwhile; any extra would show
    gate.set()
    await firing


async def test_budget_across_two_gateways_forwards_at_most_k_worst_cases(
    gateway_pair: Pair, fake_anthropic: FakeAnthropic, prefix: str
) -> None:
    budget_usd = K * WORST.micros / 1_000_000
    urls = await gateway_pair({"budgets": [{"usd": budget_usd, "period": "daily"}]})
    gate = hold_streams(fake_anthropic)
    firing = asyncio.ensure_future(fire(urls))
    await release_when_refused(gate, fake_anthropic, firing)
    statuses = firing.result()

    assert len(fake_anthropic.requests) <= K
    assert statuses.count(200) == len(fake_anthropic.requests) == K
    assert statuses.count(400) == N - K
    expected = K * (12 * 1 + 8 * 5)  # settled to the fake's usage: 12 in, 8 out
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        # Settles run after each response has gone out: give the last ones a moment.
        for _ in range(100):
            spend = await client.hgetall(f"{prefix}global:*:usd:daily")
            recorded = sum(int(v) for v in spend.values())
            if recorded == expected:
                break
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()
    assert 0 < recorded <= K * WORST.micros
    assert recorded == expected


async def test_rpm_across_two_gateways_forwards_exactly_the_limit(
    gateway_pair: Pair, fake_anthropic: FakeAnthropic
) -> None:
    urls = await gateway_pair({"rpm": K})
    statuses = await fire(urls)
    assert len(fake_anthropic.requests) == K
    assert statuses.count(200) == K
    assert statuses.count(429) == N - K


async def test_leasing_gateways_never_pass_the_rpm_and_give_back_what_they_did_not_use(
    gateway_pair: Pair, fake_anthropic: FakeAnthropic
) -> None:
    limit = 40
    urls = await gateway_pair({"rpm": limit}, lease_fraction=0.25, lease_hold=0.3)
    forwarded = []
    for _ in range(5):  # bursts, until the minute's capacity is all used
        statuses = await fire(urls)
        forwarded.append(len(fake_anthropic.requests))
        assert forwarded[-1] <= limit
        assert statuses.count(200) + statuses.count(429) == N
        if forwarded[-1] == limit:
            break
        await asyncio.sleep(0.6)  # an allowance left unused goes back within the hold
    # Allowances let each gateway serve most requests without Redis, yet together they
    # forwarded the limit, no more, and nothing stayed stranded in an allowance.
    assert forwarded[-1] == limit, forwarded


async def test_concurrent_streams_across_two_gateways_hold_at_the_limit(
    gateway_pair: Pair, fake_anthropic: FakeAnthropic, prefix: str
) -> None:
    urls = await gateway_pair({"concurrent": K})
    gate = hold_streams(fake_anthropic)
    firing = asyncio.ensure_future(fire(urls))
    await release_when_refused(gate, fake_anthropic, firing)
    statuses = firing.result()
    assert len(fake_anthropic.requests) == K
    assert statuses.count(200) == K
    assert statuses.count(429) == N - K
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        assert await client.zcard(f"{prefix}global:*:concurrent") == 0  # every slot released
    finally:
        await client.aclose()


# -- Redis going away ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "redis-server",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    client = aioredis.Redis(port=port)
    async with asyncio.timeout(10):
        while True:
            with contextlib.suppress(Exception):
                if await client.ping():
                    break
            await asyncio.sleep(0.05)
    await client.aclose()
    yield port, proc
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        await proc.wait()


@pytest.mark.parametrize("outage", ["killed", "frozen"])
async def test_redis_outage_fails_closed_or_open_as_configured_and_never_hangs(
    aiohttp_client: AiohttpClient,
    fake_anthropic: FakeAnthropic,
    own_redis: tuple[int, asyncio.subprocess.Process],
    outage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port, redis_proc = own_redis
    clients = {}
    for mode in ("fail_closed", "fail_open"):
        limits = LimitsConfig(
            enabled=True,
            backend="redis",
            failure_mode=mode,
            redis_timeout=0.2,
            defaults=parse_limit_sets({"global": {"rpm": 3}}, "d"),
        )
        storage = StorageConfig(url="sqlite://:memory:", redis_url=f"redis://127.0.0.1:{port}/0")
        cfg = gateway_config(str(fake_anthropic.url), limits=limits, storage=storage)
        clients[mode] = await aiohttp_client(make_app(cfg))

    async def status(mode: str) -> tuple[int, float, dict[str, Any]]:
        t0 = time.monotonic()
        async with clients[mode].post("/v1/messages", json=BODY, headers=HEADERS) as resp:
            body = await resp.json() if resp.status >= 400 else {}
            await resp.read()
            return resp.status, time.monotonic() - t0, body

    assert (await status("fail_closed"))[0] == 200
    assert (await status("fail_open"))[0] == 200  # Redis now counts 2 of 3

    if outage == "killed":
        redis_proc.kill()
        await redis_proc.wait()
    else:
        os.kill(redis_proc.pid, signal.SIGSTOP)  # accepts connections, never answers

    closed, elapsed, body = await status("fail_closed")
    assert closed == 503
    assert (
        body["error"]["message"] == "the gateway's limits store is unavailable; try again shortly"
    )
    assert elapsed < 2.0

    # Fail open: allowed, counted in this process (3 per minute here, from zero), logged.
    opened = [await status("fail_open") for _ in range(4)]
    assert [s for s, _, _ in opened] == [200, 200, 200, 429]
    assert max(t for _, t, _ in opened) < 2.0
    assert any("fail open" in r.getMessage() for r in caplog.records)
    assert len(fake_anthropic.requests) == 2 + 3


async def test_a_leasing_gateway_serves_its_allowance_then_fails_closed_when_redis_dies(
    aiohttp_client: AiohttpClient,
    fake_anthropic: FakeAnthropic,
    own_redis: tuple[int, asyncio.subprocess.Process],
) -> None:
    port, redis_proc = own_redis
    hold = 2.0
    limits = LimitsConfig(
        enabled=True,
        backend="redis",
        redis_timeout=0.2,
        lease_fraction=0.1,
        lease_hold=hold,
        defaults=parse_limit_sets({"global": {"rpm": 1000}}, "d"),
    )
    storage = StorageConfig(url="sqlite://:memory:", redis_url=f"redis://127.0.0.1:{port}/0")
    client = await aiohttp_client(
        make_app(gateway_config(str(fake_anthropic.url), limits=limits, storage=storage))
    )

    async def status() -> int:
        async with client.post("/v1/messages", json=BODY, headers=HEADERS) as resp:
            await resp.read()
            return resp.status

    assert await status() == 200  # charged in Redis, with an allowance of 100 requests
    redis_proc.kill()
    await redis_proc.wait()
    t0 = time.monotonic()
    # The allowance was charged while Redis was up: it is spent here until its time is up.
    assert [await status() for _ in range(5)] == [200] * 5
    await asyncio.sleep(max(0.0, t0 + hold + 0.1 - time.monotonic()))
    started = time.monotonic()
    assert await status() == 503  # nothing left here, and Redis cannot be asked
    assert time.monotonic() - started < 2.0
    assert len(fake_anthropic.requests) == 6
