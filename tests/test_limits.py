"""Limit policy, period math, worst-case estimates and the counter backends' contract."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from llmgw.errors import ConfigError
from llmgw.limits import Counter, CounterBackend, CounterKind, MemoryCounters, Period
from llmgw.limits.estimate import (
    IMAGE_TOKEN_BOUND,
    WorstCase,
    estimate_request,
    input_token_bound,
)
from llmgw.limits.plan import WindowClock
from llmgw.limits.policy import SLIDING_BUCKETS, Tier, parse_limit_set, parse_limit_sets
from llmgw.limits.redis import RedisCounters
from llmgw.pricing import PriceTable

REDIS_URL = "redis://127.0.0.1:6379/0"


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- periods ---------------------------------------------------------------------------


def test_daily_window_runs_from_utc_midnight_to_the_next() -> None:
    w = Period.parse("daily").window(ts("2026-03-14T17:45:00"))
    assert w.bucket == int(ts("2026-03-14T00:00:00"))
    assert w.reset_at == ts("2026-03-15T00:00:00")


def test_weekly_window_starts_on_monday() -> None:
    w = Period.parse("weekly").window(ts("2026-03-14T17:45:00"))  # a Saturday
    assert w.bucket == int(ts("2026-03-09T00:00:00"))
    assert w.reset_at == ts("2026-03-16T00:00:00")


def test_monthly_window_rolls_over_the_year_end() -> None:
    w = Period.parse("monthly").window(ts("2026-12-31T23:59:59"))
    assert w.bucket == int(ts("2026-12-01T00:00:00"))
    assert w.reset_at == ts("2027-01-01T00:00:00")


def test_rolling_period_is_a_sliding_window_of_its_duration() -> None:
    period = Period.parse("5h")
    assert period.seconds == 5 * 3600
    assert period.label == "rolling 5h"
    w = period.window(1_000_000.0)
    assert w.reset_at is None
    assert w.bucket - w.oldest == SLIDING_BUCKETS - 1
    assert w.width * SLIDING_BUCKETS == 5 * 3600
    assert Period.parse(period.spec) == period


@pytest.mark.parametrize("text", ["yearly", "5x", "0h", "-1d", ""])
def test_period_rejects_unknown_spellings(text: str) -> None:
    with pytest.raises(ValueError):
        Period.parse(text)


def test_limit_set_round_trips_through_json() -> None:
    raw = {
        "rpm": 60,
        "tpm": 100_000,
        "concurrent": 3,
        "budgets": [
            {"usd": 12.5, "period": "daily", "warn_at": 0.8},
            {"usd": 100, "period": "7d"},
        ],
    }
    ls = parse_limit_set(raw, "x")
    assert ls.budgets[0].micros == 12_500_000
    assert ls.budgets[0].soft_micros == 10_000_000
    assert ls.budgets[1].period.kind == "rolling"
    assert parse_limit_set(json.loads(json.dumps(ls.to_json())), "x") == ls


def test_limit_set_accepts_the_key_stores_max_concurrency_spelling() -> None:
    assert parse_limit_set({"max_concurrency": 2}, "k").concurrent == 2


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"rpm": -1}, "limits.defaults.team.rpm"),
        ({"rpm": True}, "limits.defaults.team.rpm"),
        ({"burst": 1}, "limits.defaults.team.burst"),
        ({"budgets": [{"usd": "5"}]}, "limits.defaults.team.budgets[0].usd"),
        ({"budgets": [{"usd": 5, "period": "yearly"}]}, "limits.defaults.team.budgets[0].period"),
        ({"budgets": [{"usd": 5, "warn_at": 1.5}]}, "limits.defaults.team.budgets[0].warn_at"),
        ({"budgets": [{"usd": 1}, {"usd": 2}]}, "limits.defaults.team.budgets"),
    ],
)
def test_limit_set_errors_name_the_key_path(raw: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(where) + ": "):
        parse_limit_sets({"team": raw}, "limits.defaults")


def test_unknown_tier_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^limits.defaults.org: unknown tier"):
        parse_limit_sets({"org": {}}, "limits.defaults")
    assert set(parse_limit_sets({"session": {"rpm": 1}}, "d")) == {Tier.SESSION}


# -- estimates -------------------------------------------------------------------------


def _body(**fields: object) -> tuple[dict[str, object], bytes]:
    body: dict[str, object] = {"model": "claude-haiku-4-5", "max_tokens": 1000, **fields}
    return body, json.dumps(body).encode()


def test_text_input_is_bounded_by_body_bytes() -> None:
    text = "naïve café " * 500
    body, raw = _body(messages=[{"role": "user", "content": text}])
    bound = input_token_bound(body, raw)
    assert bound >= len(text.encode())  # at least one byte per token, for any tokenizer
    assert bound <= len(raw) + 1


def test_base64_images_count_a_bounded_number_of_tokens_not_their_bytes() -> None:
    image = {"type": "base64", "media_type": "image/png", "data": "A" * 2_000_000}
    content = [{"type": "text", "text": "what is this?"}, {"type": "image", "source": image}]
    result = {
        "type": "tool_result",
        "tool_use_id": "t",
        "content": [{"type": "image", "source": image}],
    }
    body, raw = _body(messages=[{"role": "user", "content": [*content, result]}])
    bound = input_token_bound(body, raw)
    assert 2 * IMAGE_TOKEN_BOUND < bound < 2 * IMAGE_TOKEN_BOUND + 1000


def test_worst_case_prices_every_input_token_as_a_1h_cache_write_plus_max_tokens() -> None:
    body, raw = _body(messages=[{"role": "user", "content": "hi"}], max_tokens=2000)
    prices = PriceTable()
    est = estimate_request(body, raw, ["claude-haiku-4-5"], prices)
    # Haiku 4.5: $1/MTok input, 2x for a 1h cache write, $5/MTok output.
    assert est.micros == est.input_tokens * 2 + 2000 * 5
    assert est.tokens == est.input_tokens + 2000


def test_worst_case_takes_the_dearest_candidate_model() -> None:
    body, raw = _body(messages=[{"role": "user", "content": "hi"}])
    prices = PriceTable()
    cheap = estimate_request(body, raw, ["claude-haiku-4-5"], prices)
    both = estimate_request(body, raw, ["claude-haiku-4-5", "claude-opus-4-1"], prices)
    assert both.micros == prices.worst_case_micros("claude-opus-4-1", both.input_tokens, 1000)
    assert both.micros > cheap.micros


@pytest.mark.parametrize(
    "model",
    [
        "claude-haiku-4-5",
        "claude-3-5-haiku",  # $0.80/MTok: fractional rates
        "claude-sonnet-4-5",  # a long-context tier above 200k input tokens
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "claude-opus-4-1@20250805",
        "some-unknown-model",
    ],
)
@pytest.mark.parametrize("input_tokens", [0, 1, 999, 200_000, 200_001, 3_333_333])
def test_cached_integer_worst_case_equals_the_price_tables(model: str, input_tokens: int) -> None:
    prices = PriceTable()
    cached = WorstCase(prices)
    for max_tokens in (0, 7, 64_000):
        expected = prices.worst_case_micros(model, input_tokens, max_tokens)
        assert cached.micros(model, input_tokens, max_tokens) == expected
        assert cached.micros(model, input_tokens, max_tokens) == expected  # from the cache


def test_window_clock_moves_on_at_each_bucket_and_at_midnight() -> None:
    minute = WindowClock(None)
    now = 1_000_000.5  # buckets of 3 s: this one is [999999, 1000002)
    first = minute.at(now)
    assert minute.at(now + 1.4) is first  # same bucket: nothing recomputed
    assert minute.at(now + 1.5).bucket == first.bucket + 1
    assert minute.at(now - 3).bucket == first.bucket - 1  # a clock stepping back too

    daily = WindowClock(Period.parse("daily"))
    evening = daily.at(ts("2025-03-09T23:59:59"))
    assert evening.reset_at == ts("2025-03-10T00:00:00")
    assert daily.at(ts("2025-03-10T00:00:00")).bucket == int(ts("2025-03-10T00:00:00"))


# -- backends --------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[CounterBackend, str]]:
    prefix = f"llmgw:test:{secrets.token_hex(6)}:"
    if request.param == "memory":
        mem = MemoryCounters()
        yield mem, prefix
        await mem.close()
        return

    store = RedisCounters(REDIS_URL, timeout=1.0)
    yield store, prefix
    await _drop_keys(prefix)
    await store.close()


async def _drop_keys(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def window(key: str, limit: int, amount: int, bucket: int = 100, ttl: float = 60) -> Counter:
    return Counter(
        key=key,
        kind=CounterKind.WINDOW,
        limit=limit,
        amount=amount,
        bucket=bucket,
        oldest=bucket - SLIDING_BUCKETS + 1,
        ttl=ttl,
    )


def lease(key: str, limit: int, ttl: float = 60) -> Counter:
    return Counter(key=key, kind=CounterKind.LEASE, limit=limit, amount=1, ttl=ttl)


async def test_reserve_charges_nothing_when_any_counter_is_full(
    backend: tuple[CounterBackend, str],
) -> None:
    store, p = backend
    now = 1000.0
    assert (await store.reserve([window(p + "b", 10, 10)], "t0", now)).refused is None
    both = [window(p + "a", 100, 5), window(p + "b", 10, 1)]
    seen = await store.reserve(both, "t1", now)
    assert seen.refused == 1
    assert seen.used == (0, 10)
    again = await store.reserve([window(p + "a", 100, 5)], "t2", now)
    assert again.used == (5,)  # "a" was not charged by the refused reservation


async def test_parallel_reservations_never_exceed_the_limit(
    backend: tuple[CounterBackend, str],
) -> None:
    store, p = backend
    counters = [window(p + "usd", 700, 100), window(p + "rpm", 1000, 1)]
    results = await asyncio.gather(*(store.reserve(counters, f"t{i}", 1000.0) for i in range(60)))
    granted = [r for r in results if r.refused is None]
    assert len(granted) == 7
    assert sorted(r.used[0] for r in granted) == [100 * i for i in range(1, 8)]


async def test_counts_of_fifteen_digits_and_more_stay_exact(
    backend: tuple[CounterBackend, str],
) -> None:
    # A $1e9 budget is 1e15 micro-dollars; Lua prints such numbers as "1e+15" unless told.
    store, p = backend
    c = [window(p + "usd", 10**15, 123_456_789_012_345)]
    assert (await store.reserve(c, "a", 1000.0)).used == (123_456_789_012_345,)
    assert (await store.reserve(c, "b", 1000.0)).used == (246_913_578_024_690,)


async def test_settle_corrects_to_actual_and_frees_the_rest(
    backend: tuple[CounterBackend, str],
) -> None:
    store, p = backend
    c = [window(p + "usd", 1000, 600), lease(p + "streams", 1)]
    assert (await store.reserve(c, "t1", 1000.0)).refused is None
    assert (await store.reserve(c, "t2", 1000.0)).refused == 0
    await store.settle(c, [-500, 0], "t1")  # cost 100 of the 600 reserved
    seen = await store.reserve(c, "t3", 1000.0)
    assert seen.refused is None
    assert seen.used == (700, 1)


@pytest.fixture
async def redis_store() -> AsyncIterator[tuple[RedisCounters, str]]:
    """A Redis backend whose lone settles wait a minute: only a reservation or ``close()``
    can apply them in a test's time."""
    prefix = f"llmgw:test:{secrets.token_hex(6)}:"
    store = RedisCounters(REDIS_URL, timeout=1.0, settle_delay=60.0)
    yield store, prefix
    await store.close()
    await _drop_keys(prefix)


@pytest.mark.redis
@pytest.mark.parametrize("awaited", [True, False], ids=["awaited", "nowait"])
async def test_a_settle_rides_on_the_next_reservation_and_applies_first(
    redis_store: tuple[RedisCounters, str], awaited: bool
) -> None:
    store, p = redis_store
    c = [window(p + "tpm", 1000, 600), lease(p + "streams", 1)]
    assert (await store.reserve(c, "t1", 1000.0)).refused is None
    settling = None
    if awaited:
        settling = asyncio.ensure_future(store.settle(c, [-500, 0], "t1"))
        await asyncio.sleep(0)  # queued, waiting for a carrier
        assert not settling.done()
    else:
        store.settle_nowait(c, [-500, 0], "t1")  # no task, no future: queued

    # The only stream slot is t1's until its settle runs: it must run first, in this call.
    seen = await store.reserve(c, "t2", 1000.0)

    assert seen.refused is None
    assert seen.used == (700, 1)
    if settling is not None:
        await asyncio.wait_for(settling, 1)  # applied with the reservation, not after 60 s


@pytest.mark.redis
async def test_lone_settles_go_together_after_the_delay_or_at_close(
    redis_store: tuple[RedisCounters, str],
) -> None:
    store, p = redis_store
    c = [window(p + "tpm", 1000, 100), lease(p + "streams", 5)]
    for token in ("a", "b", "c"):
        assert (await store.reserve(c, token, 1000.0)).refused is None
    store.settle_delay = 0.01
    await asyncio.wait_for(
        asyncio.gather(store.settle(c, [-60, 0], "a"), store.settle(c, [-70, 0], "b")), 1
    )
    store.settle_delay = 60.0
    last = asyncio.ensure_future(store.settle(c, [-80, 0], "c"))
    await asyncio.sleep(0)
    await store.close()  # flushes what no reservation carried
    await asyncio.wait_for(last, 1)

    fresh = RedisCounters(REDIS_URL, timeout=1.0)
    try:
        seen = await fresh.reserve(c, "d", 1000.0)
    finally:
        await fresh.close()
    assert seen.used == (300 - 60 - 70 - 80 + 100, 1)  # every lease released, d's taken


async def test_a_settle_nobody_waits_for_that_cannot_be_applied_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def reserve_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the reservation's EVALSHA
        writer.write(b"$8\r\n0;1;-1;0\r\n")  # nothing refused, 1 lease open, no allowance
        await writer.drain()
        writer.close()  # then Redis is gone

    server = await asyncio.start_server(reserve_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisCounters(f"redis://127.0.0.1:{port}/0", timeout=0.3, settle_delay=0.01)
    c = [lease("streams", 5)]
    try:
        assert (await store.reserve(c, "t1", 1000.0)).refused is None
        server.close()
        await server.wait_closed()
        with caplog.at_level("ERROR", logger="llmgw.limits"):
            store.settle_nowait(c, [0], "t1")
            for _ in range(100):  # the flush runs after settle_delay
                await asyncio.sleep(0.02)
                if caplog.records:
                    break
    finally:
        await store.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "could not settle 1 requests" in messages[0]


async def test_a_window_forgets_charges_older_than_its_buckets(
    backend: tuple[CounterBackend, str],
) -> None:
    store, p = backend
    assert (await store.reserve([window(p + "rpm", 2, 2, bucket=100)], "a", 0)).refused is None
    assert (await store.reserve([window(p + "rpm", 2, 1, bucket=119)], "b", 0)).refused == 0
    seen = await store.reserve([window(p + "rpm", 2, 1, bucket=120)], "c", 0)
    assert seen.refused is None
    assert seen.used == (1,)


async def test_a_counter_at_its_limit_refuses_even_a_free_request(
    backend: tuple[CounterBackend, str],
) -> None:
    store, p = backend
    assert (await store.reserve([window(p + "usd", 5, 5)], "a", 0)).refused is None
    assert (await store.reserve([window(p + "usd", 5, 0)], "b", 0)).refused == 0


async def test_leases_expire_so_a_dead_gateway_frees_its_streams(
    backend: tuple[CounterBackend, str],
) -> None:
    store, p = backend
    c = [lease(p + "streams", 1, ttl=30)]
    assert (await store.reserve(c, "a", 1000.0)).refused is None
    refused = await store.reserve(c, "b", 1010.0)
    assert refused.refused == 0
    assert refused.first == (1_030_000,)  # the lease's expiry, in ms
    assert (await store.reserve(c, "c", 1031.0)).refused is None
