"""Failover, retries, cooldown and per-route timeouts, before and after the first byte."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from pathlib import Path

from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.app import make_app
from llmgw.context import RequestContext
from llmgw.keys import ROUTING_HEALTH, USAGE_WRITER
from llmgw.usage import Outcome
from tests._routing_helpers import HEADERS, Dropper, body, routed_config
from tests.conftest import context_copies
from tests.fakes.anthropic import FakeAnthropic, Recorded, Reply

SONNET = "claude-sonnet-4-6"
FAST_BACKOFF = {"backoff_base": 0.001, "backoff_max": 0.005}


async def test_every_one_of_500_requests_survives_a_flaky_and_a_dead_upstream(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    chance = random.Random(529)

    def flaky_reply(_: Recorded) -> Reply:
        return Reply.overloaded() if chance.random() < 0.3 else Reply()

    flaky = FakeAnthropic(responder=flaky_reply)
    await flaky.start(aiohttp_server)
    audit_path = tmp_path / "audit.jsonl"
    contexts: list[RequestContext] = []
    async with Dropper().running() as dead:
        route = {
            "model": SONNET,
            "deployments": [{"provider": "flaky"}, {"provider": "dead"}],
            "retries": 12,  # 13 tries at 30 %: one request in ~6 million fails them all
        }
        cfg = routed_config(
            {"flaky": str(flaky.url), "dead": dead.url},
            [route],
            routing=FAST_BACKOFF | {"cooldown": 60},
            audit={"enabled": True, "sink": "jsonl", "path": str(audit_path), "fsync": "never"},
        )
        app = make_app(cfg, middlewares=(context_copies(contexts),))
        client = await aiohttp_client(app)
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> tuple[int, str]:
            async with gate:
                resp = await client.post(
                    "/v1/messages", json=body(SONNET, stream=i % 2 == 0), headers=HEADERS
                )
                text = await resp.text()
                assert resp.status == 200, text
                assert i % 2 or "message_stop" in text
                return resp.status, resp.headers["x-llmgw-request-id"]

        results = await asyncio.gather(*(one(i) for i in range(500)))
        writer = app[USAGE_WRITER]
        assert writer.store is not None
        deadline = time.monotonic() + 10
        records = []
        while time.monotonic() < deadline:
            # Metering checkpoints a record when the request starts; wait for the final ones.
            records = await writer.store.records(since=0, until=math.inf)
            if sum(r.outcome != "in_flight" for r in records) >= 500:
                break
            await asyncio.sleep(0.05)
        await client.close()

    assert [s for s, _ in results] == [200] * 500
    served = {c.request_id: c for c in contexts}
    assert len(served) == 500
    for ctx in served.values():
        assert ctx.deployment is not None and ctx.deployment.name == f"flaky/{SONNET}"
        assert ctx.attempts[-1].deployment == f"flaky/{SONNET}"
        assert ctx.attempts[-1].status == 200
        for failed in ctx.attempts[:-1]:
            assert failed.status == 529 or (failed.error or "").startswith(
                ("ServerDisconnectedError", "ClientOSError")
            ), failed
    retried = [c for c in served.values() if len(c.attempts) > 1]
    assert len(retried) > 100  # 30 % of first tries fail, plus the dead one's
    assert dead.connections >= 3  # tried until its breaker tripped...
    assert app[ROUTING_HEALTH].get(f"dead/{SONNET}").trips >= 1  # ...then kept out

    by_id = {r.request_id: r for r in records if r.outcome != "in_flight"}
    assert len(by_id) == 500
    for request_id, ctx in served.items():
        record = by_id[request_id]
        assert record.deployment == f"flaky/{SONNET}"
        assert [a["deployment"] for a in record.attempts] == [a.deployment for a in ctx.attempts]
        assert [a["status"] for a in record.attempts] == [a.status for a in ctx.attempts]

    audit = [json.loads(line) for line in audit_path.read_text().splitlines()]
    audited = {
        r["request_id"]: r for r in (e.get("record", e) for e in audit) if r.get("request_id")
    }
    assert set(served) <= set(audited)
    for request_id, ctx in served.items():
        entry = audited[request_id]
        assert entry["deployment"] == f"flaky/{SONNET}"
        assert [a["status"] for a in entry["attempts"]] == [a.status for a in ctx.attempts]


async def test_a_failing_deployment_is_cooled_down_then_probed_back(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    broken = True

    def sick_reply(_: Recorded) -> Reply:
        return Reply.error(503, "api_error", "down") if broken else Reply()

    sick, well = FakeAnthropic(responder=sick_reply), FakeAnthropic()
    for fake in (sick, well):
        await fake.start(aiohttp_server)
    route = {
        "model": SONNET,
        # The sick one is always tried first while it is in rotation.
        "deployments": [{"provider": "sick", "weight": 1}, {"provider": "well", "weight": 0}],
    }
    cfg = routed_config(
        {"sick": str(sick.url), "well": str(well.url)},
        [route],
        routing={"failure_threshold": 2, "cooldown": 0.3},
    )
    app = make_app(cfg)
    client = await aiohttp_client(app)

    async def ask() -> None:
        resp = await client.post("/v1/messages", json=body(SONNET), headers=HEADERS)
        assert resp.status == 200

    for _ in range(2):
        await ask()
    assert (len(sick.requests), len(well.requests)) == (2, 2)
    board = app[ROUTING_HEALTH]
    assert board.get(f"sick/{SONNET}").trips == 1

    for _ in range(5):
        await ask()
    assert (len(sick.requests), len(well.requests)) == (2, 7)  # out of rotation

    await asyncio.sleep(0.35)
    await ask()  # the probe: still failing, so it goes back out for another cooldown
    assert (len(sick.requests), len(well.requests)) == (3, 8)
    await ask()
    assert len(sick.requests) == 3

    broken = False
    await asyncio.sleep(0.35)
    await ask()  # the probe succeeds: back in rotation
    await ask()
    assert (len(sick.requests), len(well.requests)) == (5, 9)
    assert board.get(f"sick/{SONNET}").failures == 0


async def test_when_every_deployment_fails_the_last_error_is_relayed_unmodified(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    first = FakeAnthropic(responder=lambda _r: Reply.overloaded())
    last_body = {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}}
    last = FakeAnthropic(
        responder=lambda _r: Reply(
            status=429,
            body=last_body,
            headers={"retry-after": "37", "anthropic-ratelimit-requests-remaining": "0"},
        )
    )
    for fake in (first, last):
        await fake.start(aiohttp_server)
    route = {
        "model": SONNET,
        "deployments": [{"provider": "first", "weight": 1}, {"provider": "last", "weight": 0}],
    }
    contexts: list[RequestContext] = []
    cfg = routed_config({"first": str(first.url), "last": str(last.url)}, [route])
    client = await aiohttp_client(make_app(cfg, middlewares=(context_copies(contexts),)))

    resp = await client.post("/v1/messages", json=body(SONNET, stream=True), headers=HEADERS)

    assert resp.status == 429
    assert await resp.json() == last_body
    assert resp.headers["retry-after"] == "37"
    assert resp.headers["anthropic-ratelimit-requests-remaining"] == "0"
    (ctx,) = contexts
    assert [(a.deployment, a.status) for a in ctx.attempts] == [
        (f"first/{SONNET}", 529),
        (f"last/{SONNET}", 429),
    ]
    assert ctx.deployment is not None and ctx.deployment.name == f"last/{SONNET}"
    assert ctx.outcome is Outcome.UPSTREAM_ERROR and ctx.status == 429


async def test_retries_back_off_and_wait_out_a_short_retry_after(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    only = FakeAnthropic(Reply.rate_limited(retry_after=1), Reply.overloaded())
    await only.start(aiohttp_server)
    route = {"model": SONNET, "deployments": [{"provider": "only"}], "retries": 2}
    cfg = routed_config({"only": str(only.url)}, [route], routing=FAST_BACKOFF)
    contexts: list[RequestContext] = []
    client = await aiohttp_client(make_app(cfg, middlewares=(context_copies(contexts),)))

    started = time.monotonic()
    resp = await client.post("/v1/messages", json=body(SONNET), headers=HEADERS)
    elapsed = time.monotonic() - started

    assert resp.status == 200
    assert [a.status for a in contexts[0].attempts] == [429, 529, 200]
    assert 1.0 <= elapsed < 2.0  # retry-after: 1 honoured, the 529 retry only backed off


async def test_a_retry_after_beyond_the_limit_is_not_waited_but_returned(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    only = FakeAnthropic(Reply.rate_limited(retry_after=120))
    await only.start(aiohttp_server)
    route = {"model": SONNET, "deployments": [{"provider": "only"}], "retries": 3}
    cfg = routed_config({"only": str(only.url)}, [route], routing={"max_retry_after": 5})
    client = await aiohttp_client(make_app(cfg))

    resp = await client.post("/v1/messages", json=body(SONNET), headers=HEADERS)

    assert resp.status == 429 and resp.headers["retry-after"] == "120"
    assert len(only.requests) == 1


async def test_route_first_byte_timeout_fails_over_before_any_byte(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    slow = FakeAnthropic(responder=lambda _r: Reply(first_byte_delay=5))
    quick = FakeAnthropic()
    for fake in (slow, quick):
        await fake.start(aiohttp_server)
    route = {
        "model": SONNET,
        "deployments": [{"provider": "slow", "weight": 1}, {"provider": "quick", "weight": 0}],
        "timeouts": {"first_byte": 0.2, "connect": 1},
    }
    contexts: list[RequestContext] = []
    cfg = routed_config({"slow": str(slow.url), "quick": str(quick.url)}, [route])
    client = await aiohttp_client(make_app(cfg, middlewares=(context_copies(contexts),)))

    started = time.monotonic()
    resp = await client.post("/v1/messages", json=body(SONNET, stream=True), headers=HEADERS)

    assert resp.status == 200 and "message_stop" in await resp.text()
    assert time.monotonic() - started < 2
    attempts = contexts[0].attempts
    assert [a.deployment for a in attempts] == [f"slow/{SONNET}", f"quick/{SONNET}"]
    assert attempts[0].error == "timeout waiting for the upstream's response"
    assert 0.2 <= attempts[0].duration < 1


async def test_after_the_first_byte_there_is_no_retry_and_idle_timeout_is_per_route(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    stalls = FakeAnthropic(responder=lambda _r: Reply(delay=3))
    spare = FakeAnthropic()
    for fake in (stalls, spare):
        await fake.start(aiohttp_server)
    route = {
        "model": SONNET,
        "deployments": [{"provider": "stalls", "weight": 1}, {"provider": "spare", "weight": 0}],
        "timeouts": {"idle": 0.3},
        "retries": 2,
    }
    contexts: list[RequestContext] = []
    cfg = routed_config({"stalls": str(stalls.url), "spare": str(spare.url)}, [route])
    client = await aiohttp_client(make_app(cfg, middlewares=(context_copies(contexts),)))

    started = time.monotonic()
    resp = await client.post("/v1/messages", json=body(SONNET, stream=True), headers=HEADERS)
    text = await resp.text()

    assert resp.status == 200
    assert text.startswith("event: message_start")
    assert "event: error" in text and "message_stop" not in text
    assert time.monotonic() - started < 2
    assert spare.requests == []
    (ctx,) = contexts
    assert ctx.outcome is Outcome.TIMEOUT
    assert [a.deployment for a in ctx.attempts] == [f"stalls/{SONNET}"]
