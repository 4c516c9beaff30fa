"""Allowances leased from Redis: most reservations make no round trip, no set of instances
ever charges past a limit, and what an instance did not use goes back (real Redis)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from llmgw.config import LimitsConfig, StorageConfig, parse_config
from llmgw.errors import ConfigError
from llmgw.limits import Counter
from llmgw.limits.leased import LeasedCounters
from llmgw.limits.redis import RedisCounters
from llmgw.limits.setup import build_limiter
from tests.conftest import gateway_config
from tests.test_limits import REDIS_URL, _drop_keys, lease, window

pytestmark = pytest.mark.redis

NOW = 1000.0
HOLD = 0.3
STORAGE = {"url": "sqlite://:memory:", "redis_url": REDIS_URL}


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    p = f"llmgw:test:{secrets.token_hex(6)}:"
    yield p
    await _drop_keys(p)


@pytest.fixture
async def instances() -> AsyncIterator[list[LeasedCounters]]:
    """Two gateways' worth of leasing backends, each with its own Redis connection."""
    made = [
        LeasedCounters(RedisCounters(REDIS_URL, timeout=1.0), fraction=0.1, hold=HOLD)
        for _ in range(2)
    ]
    yield made
    for m in made:
        await m.close()


@pytest.fixture
async def steady() -> AsyncIterator[LeasedCounters]:
    """One instance whose allowances outlive the test: what Redis holds cannot change
    under an assertion because an allowance's time ran out on a slow machine."""
    store = LeasedCounters(RedisCounters(REDIS_URL, timeout=1.0), fraction=0.1, hold=60.0)
    yield store
    await store.close()


async def window_total(redis: aioredis.Redis, key: str) -> int:
    return sum(int(v) for v in (await redis.hgetall(key)).values())


async def eventually(read: Callable[[], Awaitable[int]], want: int, within: float = 5.0) -> bool:
    """Whether ``read()`` gives ``want`` within ``within`` seconds (give-backs are
    asynchronous: they ride the next script or a flush a few milliseconds later)."""
    deadline = asyncio.get_running_loop().time() + within
    while (got := await read()) != want:
        if asyncio.get_running_loop().time() > deadline:
            print(f"still {got}, not {want}")
            return False
        await asyncio.sleep(0.02)
    return True


async def test_reservations_within_an_allowance_are_charged_without_a_round_trip(
    steady: LeasedCounters, prefix: str, redis: aioredis.Redis
) -> None:
    store = steady
    counters = [window(prefix + "rpm", 1000, 1), lease(prefix + "streams", 100)]
    first = await store.reserve(counters, "t0", NOW)
    assert first.refused is None
    # One request plus an allowance of 10 % of the limit (at most 16 stream slots).
    assert await window_total(redis, prefix + "rpm") == 1 + 100
    assert await redis.zcard(prefix + "streams") == 1 + 10
    assert first.used == (1, 1)  # the allowance is not counted as spent in the headers

    seen = [await store.reserve(counters, f"t{i}", NOW) for i in range(1, 11)]
    assert all(s.refused is None for s in seen)
    # Redis saw none of them: its counters did not move.
    assert await window_total(redis, prefix + "rpm") == 101
    assert await redis.zcard(prefix + "streams") == 11
    assert [s.used for s in seen][-1] == (11, 11)

    # The eleventh stream finds no slot left here and goes to Redis for it.
    assert (await store.reserve(counters, "t11", NOW)).refused is None
    assert await redis.zcard(prefix + "streams") > 11


async def test_allowances_of_a_huge_limit_are_counted_exactly(
    steady: LeasedCounters, prefix: str, redis: aioredis.Redis
) -> None:
    usd = window(prefix + "usd", 10**15, 5_000_001)  # a $1e9 budget, in micro-dollars
    assert (await steady.reserve([usd], "a", NOW)).used == (5_000_001,)
    assert await window_total(redis, prefix + "usd") == 5_000_001 + 10**14


async def test_two_leasing_instances_together_never_pass_a_limit(
    instances: list[LeasedCounters], prefix: str, redis: aioredis.Redis
) -> None:
    rpm, streams = window(prefix + "rpm", 200, 1), lease(prefix + "streams", 30)
    tpm = window(prefix + "tpm", 10_000, 150)
    counters = [tpm, rpm, streams]

    async def one(i: int) -> str | None:
        seen = await instances[i % 2].reserve(counters, f"r{i}", NOW)
        return f"r{i}" if seen.refused is None else None

    admitted = [t for t in await asyncio.gather(*(one(i) for i in range(300))) if t]
    # Nothing was settled: the 30 stream slots are the limit (tpm allows 66, rpm 200).
    assert 0 < len(admitted) <= 30
    assert await redis.zcard(prefix + "streams") <= 30
    assert await window_total(redis, prefix + "tpm") <= 10_000

    # Every stream ends having used what it reserved: once the allowances are back,
    # Redis holds exactly the admitted requests' charges and no stream slot.
    for token in admitted:
        instances[int(token[1:]) % 2].settle_nowait(counters, [0, 0, 0], token)
    assert await eventually(lambda: redis.zcard(prefix + "streams"), 0)
    assert await eventually(lambda: window_total(redis, prefix + "tpm"), 150 * len(admitted))
    assert await eventually(lambda: window_total(redis, prefix + "rpm"), len(admitted))


async def test_settles_and_leftovers_go_back_so_redis_ends_at_the_real_usage(
    instances: list[LeasedCounters], prefix: str, redis: aioredis.Redis
) -> None:
    tpm, streams = window(prefix + "tpm", 100_000, 600), lease(prefix + "streams", 50)
    counters = [tpm, streams]
    tokens = []
    for i in range(12):
        token = f"s{i}"
        assert (await instances[i % 2].reserve(counters, token, NOW)).refused is None
        tokens.append(token)
    for i, token in enumerate(tokens):
        instances[i % 2].settle_nowait(counters, [-500, 0], token)  # used 100 of the 600

    # Allowances (and the refunds they took) go back within the hold and a settle delay.
    assert await eventually(lambda: window_total(redis, prefix + "tpm"), 12 * 100)
    assert await eventually(lambda: redis.zcard(prefix + "streams"), 0)


async def test_near_a_limit_no_allowance_is_granted(
    instances: list[LeasedCounters], prefix: str, redis: aioredis.Redis
) -> None:
    store = instances[0]
    usd = window(prefix + "usd", 10, 4)
    assert (await store.reserve([usd], "a", NOW)).refused is None
    # A quarter of the 6 left is less than a request: Redis holds the request alone.
    assert await window_total(redis, prefix + "usd") == 4
    assert (await store.reserve([usd], "b", NOW)).refused is None
    assert (await store.reserve([usd], "c", NOW)).refused == 0


async def test_an_allowance_serves_only_its_own_window_bucket(
    steady: LeasedCounters, prefix: str, redis: aioredis.Redis
) -> None:
    store = steady
    assert (
        await store.reserve([window(prefix + "rpm", 1000, 1, bucket=100)], "a", NOW)
    ).refused is None
    assert await redis.hget(prefix + "rpm", "100") == b"101"
    # The next bucket: a round trip, and the old bucket's leftover goes back with it.
    later = window(prefix + "rpm", 1000, 1, bucket=101)
    assert (await store.reserve([later], "b", NOW + 3)).refused is None
    assert await redis.hget(prefix + "rpm", "100") == b"1"
    assert await redis.hget(prefix + "rpm", "101") == b"101"


async def test_a_stream_slot_outliving_its_allowance_is_released_in_redis(
    prefix: str, redis: aioredis.Redis
) -> None:
    store = LeasedCounters(RedisCounters(REDIS_URL, timeout=1.0), fraction=0.1, hold=0.05)
    try:
        streams: list[Counter] = [lease(prefix + "streams", 100)]
        assert (await store.reserve(streams, "a", NOW)).refused is None
        assert (await store.reserve(streams, "b", NOW)).refused is None  # from the allowance
        await asyncio.sleep(0.2)  # the allowance's time is up: its free slots went back
        store.settle_nowait(streams, [0], "a")
        store.settle_nowait(streams, [0], "b")
        assert await eventually(lambda: redis.zcard(prefix + "streams"), 0)
    finally:
        await store.close()


def test_lease_fraction_builds_a_leasing_limiter_and_is_checked() -> None:
    storage = StorageConfig(url="sqlite://:memory:", redis_url=REDIS_URL)
    leased = LimitsConfig(enabled=True, backend="redis", lease_fraction=0.02, lease_hold=2.0)
    limiter = build_limiter(gateway_config("http://127.0.0.1:9", limits=leased, storage=storage))
    assert isinstance(limiter.counters, LeasedCounters)
    assert (limiter.counters.fraction, limiter.counters.hold) == (0.02, 2.0)
    plain = LimitsConfig(enabled=True, backend="redis")
    assert isinstance(
        build_limiter(gateway_config("http://127.0.0.1:9", limits=plain, storage=storage)).counters,
        RedisCounters,
    )
    with pytest.raises(ValueError, match="fraction"):
        LeasedCounters(RedisCounters(REDIS_URL), fraction=1.5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease_fraction": 1.5}, "limits.lease_fraction: must be between 0 and 1"),
        ({"lease_fraction": -0.1}, "limits.lease_fraction: must be between 0 and 1"),
        ({"lease_hold": 0}, "limits.lease_hold: must be positive"),
    ],
)
def test_lease_options_out_of_range_name_the_field(options: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({"limits": {"backend": "redis", **options}, "storage": STORAGE})


def test_lease_options_parse_from_the_config_file() -> None:
    cfg = parse_config(
        {
            "limits": {"backend": "redis", "lease_fraction": 0.05, "lease_hold": 0.5},
            "storage": STORAGE,
        }
    )
    assert (cfg.limits.lease_fraction, cfg.limits.lease_hold) == (0.05, 0.5)
    assert parse_config({"limits": {}}).limits.lease_fraction == 0  # off unless asked for
