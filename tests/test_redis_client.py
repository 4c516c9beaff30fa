"""The limiter's pipelined Redis connection, against the real Redis and broken servers."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest

from llmgw.limits._redis_client import RedisClient, RedisScript
from llmgw.wire.resp import RespError

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def client() -> AsyncIterator[RedisClient]:
    redis = RedisClient(REDIS_URL, timeout=2.0)
    yield redis
    await redis.close()


async def test_concurrent_calls_each_get_their_own_reply(client: RedisClient) -> None:
    values = [secrets.token_hex(8) for _ in range(300)]
    replies = await asyncio.gather(*(client.call("ECHO", v) for v in values))
    assert replies == [v.encode() for v in values]


async def test_a_cancelled_call_does_not_shift_the_replies_of_the_others(
    client: RedisClient,
) -> None:
    await client.call("PING")  # connected
    values = [str(i) for i in range(100)]
    tasks = [asyncio.create_task(client.call("ECHO", v)) for v in values]
    await asyncio.sleep(0)  # every command written
    for task in tasks[::2]:
        task.cancel()
    done = await asyncio.gather(*tasks[1::2])
    assert done == [v.encode() for v in values[1::2]]
    assert await client.call("ECHO", "after") == b"after"


async def test_a_script_unknown_to_the_server_is_loaded_and_run(client: RedisClient) -> None:
    script = RedisScript(client, f"return ARGV[1] .. '{secrets.token_hex(4)}' .. #KEYS")
    await client.call("SCRIPT", "FLUSH")
    first = await script(["a", "b"], ["x"])
    assert first == await script(["a", "b"], ["x"])  # now by its SHA1
    assert isinstance(first, bytes) and first.startswith(b"x") and first.endswith(b"2")


async def test_error_replies_raise_with_the_servers_words(client: RedisClient) -> None:
    with pytest.raises(RespError, match="unknown command"):
        await client.call("NOSUCHCOMMAND")
    assert await client.call("PING") == "PONG"  # the connection is still in step


async def test_the_database_in_the_url_is_selected() -> None:
    key = f"llmgw:test:{secrets.token_hex(6)}"
    db5 = RedisClient("redis://127.0.0.1:6379/5")
    db0 = RedisClient(REDIS_URL)
    try:
        await db5.call("SET", key, "5", "EX", 60)
        assert await db5.call("GET", key) == b"5"
        assert await db0.call("GET", key) is None
    finally:
        await db5.call("DEL", key)
        await db5.close()
        await db0.close()


async def test_a_refused_auth_fails_the_call_as_a_connection_error() -> None:
    redis = RedisClient("redis://:wrong-password@127.0.0.1:6379/0")
    try:
        with pytest.raises(ConnectionError, match="AUTH refused"):
            await redis.call("PING")
    finally:
        await redis.close()


async def _server(handler: object) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    return server, server.sockets[0].getsockname()[1]


async def test_a_server_that_never_answers_fails_every_waiting_call_after_the_timeout() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # reads nothing, answers nothing

    server, port = await _server(silent)
    redis = RedisClient(f"redis://127.0.0.1:{port}/0", timeout=0.3)
    try:
        start = time.monotonic()
        results = await asyncio.gather(
            *(redis.call("PING") for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, TimeoutError) for r in results)
        assert 0.25 <= time.monotonic() - start < 2
    finally:
        await redis.close()
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


async def test_a_dropped_connection_fails_its_calls_and_the_next_call_reconnects() -> None:
    connections = 0

    async def pong_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"PING\r\n")
        if connections == 1:
            writer.close()  # the first connection dies without an answer
            return
        writer.write(b"+PONG\r\n")
        await writer.drain()
        writer.close()

    server, port = await _server(pong_once)
    redis = RedisClient(f"redis://127.0.0.1:{port}/0", timeout=5)
    try:
        with pytest.raises(ConnectionError):
            await redis.call("PING")
        assert await redis.call("PING") == "PONG"
        assert connections == 2
    finally:
        await redis.close()
        server.close()
        await server.wait_closed()
