"""Model routing through the ready gateway: names, aliases, patterns, spread, caps, listing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.app import make_app
from llmgw.context import Identity, RequestContext, get_context, routed
from llmgw.keys import ROUTING_HEALTH
from llmgw.middlewares.routing import routing_middleware
from llmgw.providers import AnthropicProvider
from llmgw.routes import Deployment, Route, RoutePolicy, RouteTable
from llmgw.typedefs import Handler, Middleware
from tests._routing_helpers import HEADERS, body, routed_config
from tests.conftest import context_copies
from tests.fakes.anthropic import FakeAnthropic, Reply

SONNET = "claude-sonnet-4-6"


async def fakes(aiohttp_server: AiohttpServer, n: int) -> list[FakeAnthropic]:
    started = [FakeAnthropic() for _ in range(n)]
    for fake in started:
        await fake.start(aiohttp_server)
    return started


def as_identity(identity: Identity) -> Middleware:
    @web.middleware
    async def _identity(request: web.Request, handler: Handler) -> web.StreamResponse:
        get_context(request).identity = identity
        return await handler(request)

    return _identity


async def test_alias_is_sent_upstream_as_the_deployment_model_id(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    (fake,) = await fakes(aiohttp_server, 1)
    route = {
        "model": SONNET,
        "aliases": ["sonnet", "us.anthropic.claude-sonnet-4-6"],
        "deployments": [{"provider": "a", "model": "claude-sonnet-4-6-20990101"}],
    }
    contexts: list[RequestContext] = []
    client = await aiohttp_client(
        make_app(
            routed_config({"a": str(fake.url)}, [route]), middlewares=(context_copies(contexts),)
        )
    )

    for name in ("sonnet", SONNET, "us.anthropic.claude-sonnet-4-6"):
        resp = await client.post("/v1/messages", json=body(name), headers=HEADERS)
        assert resp.status == 200, await resp.text()

    assert [r.json()["model"] for r in fake.requests] == ["claude-sonnet-4-6-20990101"] * 3
    assert [c.requested_model for c in contexts] == [
        "sonnet",
        SONNET,
        "us.anthropic.claude-sonnet-4-6",
    ]
    assert {c.route.model for c in contexts if c.route} == {SONNET}
    assert contexts[0].deployment is not None
    assert contexts[0].deployment.name == "a/claude-sonnet-4-6-20990101"


async def test_patterns_route_claude_code_background_ids_and_unrouted_is_404_naming_it(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    fast, rest = await fakes(aiohttp_server, 2)
    routes = [
        {"model": "claude-haiku-4-5-20251001", "deployments": [{"provider": "fast"}]},
        {"model": "claude-*", "deployments": [{"provider": "rest"}]},
    ]
    cfg = routed_config({"fast": str(fast.url), "rest": str(rest.url)}, routes)
    client = await aiohttp_client(make_app(cfg))

    haiku = await client.post(
        "/v1/messages", json=body("claude-haiku-4-5-20251001"), headers=HEADERS
    )
    opus = await client.post("/v1/messages", json=body("claude-opus-4-6"), headers=HEADERS)
    counted = await client.post(
        "/v1/messages/count_tokens", json=body("claude-opus-4-6"), headers=HEADERS
    )
    missing = await client.post("/v1/messages", json=body("gpt-4o"), headers=HEADERS)
    bedrock = await client.post("/model/us.anthropic.nothing-v1:0/invoke", json={}, headers=HEADERS)

    assert (haiku.status, opus.status, counted.status) == (200, 200, 200)
    assert [r.json()["model"] for r in fast.requests] == ["claude-haiku-4-5-20251001"]
    assert [r.path for r in rest.requests] == ["/v1/messages", "/v1/messages/count_tokens"]
    assert missing.status == 404
    assert await missing.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: gpt-4o"},
    }
    assert bedrock.status == 404
    assert (await bedrock.json())["error"]["message"] == "model: us.anthropic.nothing-v1:0"


async def test_routing_middleware_alone_plans_candidates_in_a_plain_app(
    aiohttp_client: AiohttpClient,
) -> None:
    deps = tuple(
        Deployment(name=n, provider=AnthropicProvider(name=n), weight=w)
        for n, w in (("x", 1.0), ("y", 0.0))
    )
    table = RouteTable([Route(model="m", deployments=deps, policy=RoutePolicy(retries=1))])

    async def handler(request: web.Request) -> web.Response:
        ctx = await routed(request)  # routing runs on first need, here
        names = [d.name for d in ctx.candidates]
        return web.json_response({"model": ctx.requested_model, "candidates": names})

    app = web.Application(middlewares=[routing_middleware(table)])
    app.router.add_post("/v1/messages", handler)
    app.router.add_get("/v1/models", handler)
    client = await aiohttp_client(app)

    resp = await client.post("/v1/messages", json={"model": "m"})
    missing = await client.post("/v1/messages", json={"model": "z"})

    assert await resp.json() == {"model": "m", "candidates": ["x", "y", "x", "y"]}
    assert missing.status == 404
    assert (await missing.json())["error"]["type"] == "not_found_error"


async def test_weights_are_honoured_within_statistical_tolerance(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    ups = await fakes(aiohttp_server, 3)
    weights = (1, 2, 7)
    route = {
        "model": SONNET,
        "deployments": [{"provider": f"p{i}", "weight": w} for i, w in enumerate(weights)],
    }
    cfg = routed_config({f"p{i}": str(f.url) for i, f in enumerate(ups)}, [route])
    client = await aiohttp_client(make_app(cfg))
    n, gate = 400, asyncio.Semaphore(16)

    async def one() -> None:
        async with gate:
            resp = await client.post("/v1/messages", json=body(SONNET), headers=HEADERS)
            assert resp.status == 200
            await resp.read()

    await asyncio.gather(*(one() for _ in range(n)))

    for fake, w in zip(ups, weights, strict=True):
        p = w / sum(weights)
        sigma = (n * p * (1 - p)) ** 0.5
        assert abs(len(fake.requests) - n * p) < 4.5 * sigma, [len(f.requests) for f in ups]


async def test_least_inflight_spreads_concurrent_streams_evenly(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    release = asyncio.Event()
    ups = await fakes(aiohttp_server, 3)
    for fake in ups:
        fake.responder = lambda _r: Reply(gates={1: release})
    route = {
        "model": SONNET,
        "strategy": "least_inflight",
        "deployments": [{"provider": f"p{i}"} for i in range(3)],
    }
    app = make_app(routed_config({f"p{i}": str(f.url) for i, f in enumerate(ups)}, [route]))
    client = await aiohttp_client(app)

    streams = await asyncio.gather(
        *(
            client.post("/v1/messages", json=body(SONNET, stream=True), headers=HEADERS)
            for _ in range(9)
        )
    )

    assert [f.open_streams for f in ups] == [3, 3, 3]
    board = app[ROUTING_HEALTH]
    assert [board.get(f"p{i}/{SONNET}").in_flight for i in range(3)] == [3, 3, 3]
    release.set()
    texts = [await s.text() for s in streams]
    assert all("message_stop" in t for t in texts)
    assert [board.get(f"p{i}/{SONNET}").in_flight for i in range(3)] == [0, 0, 0]


async def test_concurrency_cap_turns_excess_streams_into_529_overloaded(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    release = asyncio.Event()
    (fake,) = await fakes(aiohttp_server, 1)
    fake.responder = lambda _r: Reply(gates={1: release})
    route = {"model": SONNET, "deployments": [{"provider": "a", "max_concurrency": 2}]}
    client = await aiohttp_client(make_app(routed_config({"a": str(fake.url)}, [route])))

    held = [
        await client.post("/v1/messages", json=body(SONNET, stream=True), headers=HEADERS)
        for _ in range(2)
    ]
    refused = await client.post("/v1/messages", json=body(SONNET, stream=True), headers=HEADERS)

    assert refused.status == 529
    assert (await refused.json())["error"]["type"] == "overloaded_error"
    assert len(fake.requests) == 2
    release.set()
    for resp in held:
        assert "message_stop" in await resp.text()
    again = await client.post("/v1/messages", json=body(SONNET), headers=HEADERS)
    assert again.status == 200


async def test_models_list_shows_names_aliases_display_names_filtered_by_identity(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    (fake,) = await fakes(aiohttp_server, 1)
    routes = [
        {
            "model": SONNET,
            "display_name": "Claude Sonnet 4.6",
            "aliases": ["us.anthropic.claude-sonnet-4-6"],
            "deployments": [{"provider": "a"}],
        },
        {"model": "claude-opus-4-6", "deployments": [{"provider": "a"}]},
        {"model": "claude-*", "deployments": [{"provider": "a"}]},
    ]
    cfg = routed_config({"a": str(fake.url)}, routes)
    everyone = await aiohttp_client(make_app(cfg))
    limited = await aiohttp_client(
        make_app(
            cfg,
            middlewares=(as_identity(Identity(key_id="k", allowed_models=("claude-sonnet-*",))),),
        )
    )

    listed: dict[str, Any] = await (await everyone.get("/v1/models?limit=1000")).json()
    narrow: dict[str, Any] = await (await limited.get("/v1/models")).json()

    assert [(m["id"], m["display_name"]) for m in listed["data"]] == [
        (SONNET, "Claude Sonnet 4.6"),
        ("us.anthropic.claude-sonnet-4-6", "us.anthropic.claude-sonnet-4-6"),
        ("claude-opus-4-6", "claude-opus-4-6"),
    ]
    # What Claude Code's gateway model discovery keeps (PROTOCOLS.md §1.12).
    kept = [m["id"] for m in listed["data"] if "claude" in m["id"] or "anthropic" in m["id"]]
    assert kept == [m["id"] for m in listed["data"]]
    assert [m["id"] for m in narrow["data"]] == [SONNET]
    assert fake.requests == []
    assert json.dumps(listed).count("base_url") == 0


def test_pattern_lookups_keep_configured_order_when_remembered() -> None:
    provider = AnthropicProvider(name="anthropic")

    def route(model: str) -> Route:
        return Route(model=model, deployments=(Deployment(name=model, provider=provider),))

    table = RouteTable([route("claude-haiku-*"), route("claude-*"), route("exact")])
    for _ in range(2):  # the second round answers from what the first remembered
        assert table.resolve("claude-haiku-4-5").model == "claude-haiku-*"  # type: ignore[union-attr]
        assert table.resolve("claude-sonnet-4-6").model == "claude-*"  # type: ignore[union-attr]
        assert table.resolve("gpt-4o") is None
        assert table.resolve("exact").model == "exact"  # type: ignore[union-attr]
    # More distinct names than it remembers: answers stay right.
    names = [f"claude-x-{i}" for i in range(10_000)] + ["claude-haiku-9", "nope"]
    got = [table.resolve(n) for n in names]
    assert all(r is not None and r.model == "claude-*" for r in got[:10_000])
    assert got[-2] is not None and got[-2].model == "claude-haiku-*"
    assert got[-1] is None
