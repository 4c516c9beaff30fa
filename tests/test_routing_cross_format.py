"""One model name behind three upstream formats (Anthropic, Bedrock, Vertex): spread, failover."""

from __future__ import annotations

import asyncio

from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.app import make_app
from llmgw.config import (
    DeploymentConfig,
    GatewayConfig,
    RouteConfig,
    RoutingConfig,
    StorageConfig,
)
from llmgw.context import RequestContext
from llmgw.providers import Provider
from tests._routing_helpers import HEADERS, body
from tests.bedrock_vertex_gateway import anthropic_provider, bedrock_provider, vertex_provider
from tests.conftest import context_copies
from tests.fakes.anthropic import FakeAnthropic, Reply
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.vertex import FakeVertex

SONNET = "claude-sonnet-4-6"
UPSTREAM_IDS = {
    "anthropic": SONNET,
    "bedrock": "us.anthropic.claude-sonnet-4-6",
    "vertex": SONNET,
}


def config(
    weights: dict[str, float], *, strategy: str = "weighted", retries: int = 0
) -> GatewayConfig:
    deployments = tuple(
        DeploymentConfig(provider=name, model=UPSTREAM_IDS[name], weight=w)
        for name, w in weights.items()
    )
    return GatewayConfig(
        storage=StorageConfig(url="sqlite://:memory:"),
        routes=(RouteConfig(model=SONNET, deployments=deployments, strategy=strategy),),
        routing=RoutingConfig(retries=retries, backoff_base=0.001, backoff_max=0.005),
    )


async def three(
    aiohttp_server: AiohttpServer, *replies: Reply
) -> tuple[FakeAnthropic, FakeBedrock, FakeVertex, dict[str, Provider]]:
    anthropic, bedrock, vertex = (
        FakeAnthropic(*replies),
        FakeBedrock(*replies),
        FakeVertex(*replies),
    )
    for fake in (anthropic, bedrock, vertex):
        await fake.start(aiohttp_server)
    providers: dict[str, Provider] = {
        "anthropic": anthropic_provider(anthropic),
        "bedrock": bedrock_provider(bedrock),
        "vertex": vertex_provider(vertex),
    }
    return anthropic, bedrock, vertex, providers


async def test_weights_hold_across_three_formats_and_every_answer_is_anthropic_sse(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    anthropic, bedrock, vertex, providers = await three(aiohttp_server)
    weights = {"anthropic": 1.0, "bedrock": 3.0, "vertex": 6.0}
    client = await aiohttp_client(make_app(config(weights), providers=providers))
    n, gate = 300, asyncio.Semaphore(12)

    async def one() -> None:
        async with gate:
            resp = await client.post(
                "/v1/messages", json=body(SONNET, stream=True), headers=HEADERS
            )
            text = await resp.text()
            assert resp.status == 200, text
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert "event: message_stop" in text

    await asyncio.gather(*(one() for _ in range(n)))

    counts = {
        "anthropic": len(anthropic.requests),
        "bedrock": len(bedrock.requests),
        "vertex": len(vertex.requests),
    }
    assert sum(counts.values()) == n
    total = sum(weights.values())
    for name, w in weights.items():
        p = w / total
        sigma = (n * p * (1 - p)) ** 0.5
        assert abs(counts[name] - n * p) < 4.5 * sigma, counts
    assert set(bedrock.model_ids) == {"us.anthropic.claude-sonnet-4-6"}
    assert bedrock.auth_failures == []


async def test_least_inflight_spreads_streams_over_three_formats(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    release = asyncio.Event()
    held = [Reply(gates={1: release})] * 2
    anthropic, bedrock, vertex, providers = await three(aiohttp_server, *held)
    weights = {"anthropic": 1.0, "bedrock": 1.0, "vertex": 1.0}
    client = await aiohttp_client(
        make_app(config(weights, strategy="least_inflight"), providers=providers)
    )

    streams = await asyncio.gather(
        *(
            client.post("/v1/messages", json=body(SONNET, stream=True), headers=HEADERS)
            for _ in range(6)
        )
    )

    assert [len(f.requests) for f in (anthropic, bedrock, vertex)] == [2, 2, 2]
    release.set()
    texts = [await s.text() for s in streams]
    assert all("message_stop" in t for t in texts)


async def test_failover_crosses_formats_before_the_first_byte(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    anthropic, bedrock, _vertex, providers = await three(aiohttp_server)
    anthropic.responder = lambda _r: Reply.overloaded()
    bedrock.queue(*[Reply.error(503, "ServiceUnavailableException", "busy")] * 50)
    contexts: list[RequestContext] = []
    weights = {"anthropic": 100.0, "bedrock": 10.0, "vertex": 0.0}
    app = make_app(config(weights), providers=providers, middlewares=(context_copies(contexts),))
    client = await aiohttp_client(app)

    resp = await client.post("/v1/messages", json=body(SONNET, stream=True), headers=HEADERS)

    assert resp.status == 200 and "message_stop" in await resp.text()
    (ctx,) = contexts
    tried = [(a.deployment, a.status) for a in ctx.attempts]
    # Weighted random puts bedrock first one time in eleven; vertex (weight 0) is last.
    assert sorted(tried[:2]) == [
        (f"anthropic/{SONNET}", 529),
        ("bedrock/us.anthropic.claude-sonnet-4-6", 503),
    ]
    assert tried[2:] == [(f"vertex/{SONNET}", 200)]
    assert ctx.deployment is not None and ctx.deployment.provider.name == "vertex"
