"""limits_middleware in make_app (in front of the fake upstream) and alone in a bare app."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from llmgw.app import make_app
from llmgw.config import GatewayConfig, LimitsConfig, StorageConfig
from llmgw.context import Identity, get_context
from llmgw.demo import DemoUsage
from llmgw.limits import MemoryCounters, Tier, parse_limit_set, parse_limit_sets
from llmgw.limits.estimate import estimate_request
from llmgw.limits.limiter import Limiter
from llmgw.middlewares.limits import limits_middleware
from llmgw.pricing import PriceTable
from llmgw.typedefs import Handler
from llmgw.usage import Usage
from tests.conftest import GatewayClient, GatewayFactory, gateway_config
from tests.fakes.anthropic import FakeAnthropic, Recorded, Reply

MODEL = "claude-haiku-4-5"
HEADERS = {"anthropic-version": "2023-06-01"}
BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1000,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}
#: The worst case the gateway reserves for BODY, sent as aiohttp's json= sends it.
REDIS_URL = "redis://127.0.0.1:6379/0"
WORST = estimate_request(BODY, json.dumps(BODY).encode(), [MODEL], PriceTable())


def limits_cfg(fake: FakeAnthropic, defaults: dict[str, Any], **kw: Any) -> GatewayConfig:
    limits = LimitsConfig(enabled=True, defaults=parse_limit_sets(defaults, "d"), **kw)
    return gateway_config(str(fake.url), limits=limits)


def budget(micros: int, **extra: Any) -> dict[str, Any]:
    return {"budgets": [{"usd": micros / 1_000_000, "period": "daily", **extra}]}


async def post(
    client: GatewayClient, body: dict[str, Any] = BODY, *, session: str | None = None
) -> Any:
    headers = dict(HEADERS)
    if session is not None:
        headers["x-claude-code-session-id"] = session
    return await client.post("/v1/messages", json=body, headers=headers)


def gated(gate: asyncio.Event) -> Any:
    def responder(_: Recorded) -> Reply:
        return Reply(gates={1: gate})

    return responder


async def until(predicate: Any) -> None:
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - the fake offers no event for this
            await asyncio.sleep(0.01)


async def test_budget_forwards_only_the_requests_whose_worst_case_fits(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    gate = asyncio.Event()
    fake_anthropic.responder = gated(gate)
    client = await gateway(limits_cfg(fake_anthropic, {"global": budget(3 * WORST.micros)}))

    async def one() -> tuple[int, str]:
        async with await post(client) as resp:
            return resp.status, await resp.text()

    tasks = [asyncio.ensure_future(one()) for _ in range(12)]
    await until(lambda: sum(t.done() for t in tasks) == 9)
    gate.set()
    results = await asyncio.gather(*tasks)

    assert len(fake_anthropic.requests) == 3
    assert sorted(status for status, _ in results) == [200] * 3 + [400] * 9
    refused = json.loads(next(text for status, text in results if status == 400))
    assert refused["error"]["type"] == "invalid_request_error"
    message = refused["error"]["message"]
    assert message.startswith("Budget exhausted: the gateway-wide daily budget of $")
    assert "It resets at " in message and "T00:00:00Z" in message


async def test_settling_frees_what_a_completed_request_did_not_spend(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    spare = 5 * 100  # each request really costs 52 micro-dollars (12 in, 8 out on Haiku)
    client = await gateway(limits_cfg(fake_anthropic, {"global": budget(WORST.micros + spare)}))
    for _ in range(5):  # each reserves nearly the whole budget and settles to its cost
        async with await post(client) as resp:
            assert resp.status == 200
            await resp.read()
    assert len(fake_anthropic.requests) == 5


async def test_client_disconnect_settles_and_releases_the_stream_slot(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    gate = asyncio.Event()
    fake_anthropic.queue(Reply(gates={2: gate}))
    limits = {"global": {"concurrent": 1, **budget(WORST.micros + 1000)}}
    client = await gateway(limits_cfg(fake_anthropic, limits))

    resp = await post(client)
    assert resp.status == 200
    await resp.content.readany()  # message_start
    resp.close()
    await asyncio.wait_for(fake_anthropic.client_disconnected.wait(), 5)

    async def next_status() -> int:
        async with await post(client) as again:
            await again.read()
            status: int = again.status
            return status

    statuses: list[int] = []
    async with asyncio.timeout(5):
        while not statuses or statuses[-1] != 200:
            statuses.append(await next_status())
            await asyncio.sleep(0.05)
    assert set(statuses[:-1]) <= {400, 429}  # refused only until the relay noticed
    assert len(fake_anthropic.requests) == 2


async def test_upstream_errors_settle_and_release_the_reservation(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(
        Reply.error(400, "invalid_request_error", "prompt is too long"),
        Reply(drop_after=2),
        Reply(error_after=2),
    )
    client = await gateway(limits_cfg(fake_anthropic, {"global": budget(WORST.micros + 1000)}))
    for expected in (400, 200, 200, 200):
        async with await post(client) as resp:
            await resp.read()
            assert resp.status == expected
    assert len(fake_anthropic.requests) == 4


async def test_rpm_refusal_is_a_429_with_retry_after_and_ratelimit_headers(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway(limits_cfg(fake_anthropic, {"global": {"rpm": 2}}))
    remaining = []
    for _ in range(2):
        async with await post(client) as resp:
            assert resp.status == 200
            assert resp.headers["anthropic-ratelimit-requests-limit"] == "2"
            remaining.append(resp.headers["anthropic-ratelimit-requests-remaining"])
            await resp.read()
    assert remaining == ["1", "0"]

    async with await post(client) as resp:
        body = await resp.json()
        assert resp.status == 429
        assert body["error"]["type"] == "rate_limit_error"
        assert "2 requests per minute" in body["error"]["message"]
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert resp.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert resp.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert len(fake_anthropic.requests) == 2


async def test_tpm_counts_the_worst_case_tokens_before_forwarding(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway(limits_cfg(fake_anthropic, {"global": {"tpm": WORST.tokens - 1}}))
    async with await post(client) as resp:
        assert resp.status == 429
        assert resp.headers["anthropic-ratelimit-tokens-limit"] == str(WORST.tokens - 1)
    async with await post(client, {**BODY, "max_tokens": 900}) as resp:
        assert resp.status == 200
        await resp.read()
    assert len(fake_anthropic.requests) == 1


async def test_concurrent_streams_are_limited_per_claude_code_session(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    gate = asyncio.Event()
    fake_anthropic.responder = gated(gate)
    client = await gateway(limits_cfg(fake_anthropic, {"session": {"concurrent": 2}}))
    held = [await post(client, session="s-1") for _ in range(2)]
    assert [r.status for r in held] == [200, 200]

    async with await post(client, session="s-1") as resp:
        assert resp.status == 429
        assert "'s-1' limit of 2 concurrent requests" in (await resp.json())["error"]["message"]
    other = asyncio.ensure_future(post(client, session="s-2"))
    await until(lambda: len(fake_anthropic.requests) == 3)

    gate.set()
    for r in [*held, await other]:
        await r.read()
        r.close()
    async with await post(client, session="s-1") as resp:
        assert resp.status == 200
        await resp.read()


async def test_soft_threshold_adds_a_warning_header(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    # Haiku output is $5/MTok: 120k output tokens cost $0.60 of the $1.00 budget.
    fake_anthropic.responder = lambda _: Reply(usage=DemoUsage(output_tokens=120_000))
    client = await gateway(
        limits_cfg(fake_anthropic, {"team": {}, "global": budget(1_000_000, warn_at=0.5)})
    )
    async with await post(client) as first:
        await first.read()
        assert "x-llmgw-budget-warning" not in first.headers
    async with await post(client) as second:
        await second.read()
        warning = second.headers["x-llmgw-budget-warning"]
    assert warning == "the gateway-wide daily budget: $0.60 of $1.00 used"


async def test_count_tokens_and_model_listing_are_not_charged_to_budgets(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway(limits_cfg(fake_anthropic, {"global": budget(0)}))
    async with await post(client) as refused:
        assert refused.status == 400
    count = {k: v for k, v in BODY.items() if k not in ("max_tokens", "stream")}
    async with client.post("/v1/messages/count_tokens", json=count, headers=HEADERS) as resp:
        assert resp.status == 200
    async with client.get("/v1/models", headers=HEADERS) as resp:
        assert resp.status == 200


# -- alone, in a bare application --------------------------------------------------------


def bare_app(limiter: Limiter) -> web.Application:
    """An identity-setting middleware, the limiter, and a handler that reports usage."""

    @web.middleware
    async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
        limits = request.headers.get("x-key-limits")
        get_context(request).identity = Identity(
            key_id=request.headers["x-key"],
            team=request.headers.get("x-team"),
            metadata={"limits": json.loads(limits)} if limits else {},
        )
        return await handler(request)

    async def handler(request: web.Request) -> web.Response:
        get_context(request).usage = Usage(input_tokens=10, output_tokens=5, final=True)
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[identify, limits_middleware(limiter)])
    app.router.add_post("/v1/messages", handler)
    return app


async def test_limits_middleware_works_alone_with_key_team_and_per_key_limits(
    aiohttp_client: AiohttpClient,
) -> None:
    defaults = {
        Tier.KEY: parse_limit_set({"rpm": 2}, "k"),
        Tier.TEAM: parse_limit_set({"rpm": 3}, "t"),
    }
    client = await aiohttp_client(bare_app(Limiter(MemoryCounters(), defaults=defaults)))

    async def status(key: str, team: str | None = None, limits: str | None = None) -> int:
        headers = {"x-key": key, **({"x-team": team} if team else {})}
        if limits:
            headers["x-key-limits"] = limits
        async with client.post("/v1/messages", json=BODY, headers=headers) as resp:
            return resp.status

    assert [await status("a") for _ in range(3)] == [200, 200, 429]  # key default
    assert [await status("b", limits='{"rpm": 1}') for _ in range(2)] == [200, 429]  # own
    # Team "t" allows 3 across its keys, each key still 2.
    assert [await status(k, "t") for k in ("c", "c", "d", "d")] == [200, 200, 200, 429]


async def test_limits_middleware_alone_answers_refusals_in_the_anthropic_envelope(
    aiohttp_client: AiohttpClient,
) -> None:
    defaults = {Tier.GLOBAL: parse_limit_set(budget(1000), "g")}
    client = await aiohttp_client(bare_app(Limiter(MemoryCounters(), defaults=defaults)))
    async with client.post("/v1/messages", json=BODY, headers={"x-key": "a"}) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["message"].startswith("Budget exhausted: the gateway-wide daily")


async def test_official_sdk_sees_a_rate_limit_error(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    import anthropic

    client = await gateway(limits_cfg(fake_anthropic, {"global": {"rpm": 1}}))
    sdk = anthropic.AsyncAnthropic(base_url=str(client.make_url("")), api_key="k", max_retries=0)
    plain = {k: v for k, v in BODY.items() if k != "stream"}
    await sdk.messages.create(**plain)
    try:
        await sdk.messages.create(**plain)
    except anthropic.RateLimitError as exc:
        assert exc.response.headers["anthropic-ratelimit-requests-limit"] == "1"
    else:
        raise AssertionError("expected a RateLimitError")
    finally:
        await sdk.close()
    assert isinstance(aiohttp.__version__, str)


@pytest.mark.redis
async def test_redis_settles_run_after_the_response_and_are_drained_at_shutdown(
    aiohttp_client: AiohttpClient, fake_anthropic: FakeAnthropic
) -> None:
    import redis.asyncio as aioredis

    prefix = f"llmgw:test:{secrets.token_hex(6)}:"
    limits = LimitsConfig(
        enabled=True,
        backend="redis",
        key_prefix=prefix,
        defaults=parse_limit_sets({"global": {"concurrent": 5, "tpm": 1_000_000}}, "d"),
    )
    storage = StorageConfig(url="sqlite://:memory:", redis_url=REDIS_URL)
    app = make_app(gateway_config(str(fake_anthropic.url), limits=limits, storage=storage))
    client = await aiohttp_client(app)
    for _ in range(3):
        async with await post(client) as resp:
            assert resp.status == 200
            await resp.read()
    await client.close()  # cleanup: pending settles drained, then the Redis client closed

    redis = aioredis.Redis.from_url(REDIS_URL)
    keys: list[str] = []
    try:
        keys = [k.decode() async for k in redis.scan_iter(match=prefix + "*")]
        assert not [k for k in keys if "concurrent" in k]  # every stream lease released
        spent = 0
        for key in (k for k in keys if ":tpm" in k):
            spent += sum(int(v) for v in (await redis.hgetall(key)).values())
        assert spent == 3 * (12 + 8)  # settled to the fake's usage, not the worst case
    finally:
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
