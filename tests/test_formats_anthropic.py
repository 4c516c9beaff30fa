"""The Anthropic Messages surface: bad input, endpoints, prefixes and the sub-application."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from anthropic import AsyncAnthropic
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.app import client_session_ctx, make_app
from llmgw.config import DeploymentConfig, RouteConfig, ServerConfig, StorageConfig
from llmgw.formats.anthropic import anthropic_app
from llmgw.keys import CONFIG, ROUTES
from tests.conftest import GatewayClient, GatewayFactory, gateway_config
from tests.fakes.anthropic import FakeAnthropic, Reply

MODEL = "claude-sonnet-4-6"
BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}
HEADERS = {"anthropic-version": "2023-06-01", "content-type": "application/json"}


async def _error(resp: Any, status: int, error_type: str) -> str:
    assert resp.status == status, await resp.text()
    assert resp.headers["content-type"].startswith("application/json")
    body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    message: str = body["error"]["message"]
    return message


# --- bad input never reaches the upstream -----------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize(
    ("raw", "mentions"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"model": "m",}', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"model": "m", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b"[1, 2]", "JSON object"),
        (b'"just a string"', "JSON object"),
        (b"null", "JSON object"),
        (b"", "empty"),
        (b"{}", "model"),
        (b'{"model": 42}', "model"),
        (b'{"model": null}', "model"),
        (b'{"model": ""}', "model"),
        (b'{"model": ["claude"]}', "model"),
    ],
)
async def test_bad_body_is_a_400_that_never_reaches_the_upstream(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, path: str, raw: bytes, mentions: str
) -> None:
    client = await gateway()

    resp = await client.post(path, data=raw, headers=HEADERS)

    assert mentions in await _error(resp, 400, "invalid_request_error")
    assert fake_anthropic.requests == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_the_cap_is_a_413_that_never_reaches_the_upstream(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, chunked: bool
) -> None:
    cfg = gateway_config(str(fake_anthropic.url), server=ServerConfig(client_max_size=1000))
    client = await gateway(cfg)
    big = json.dumps(BODY | {"system": "x" * 2000}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 256):
            yield big[i : i + 256]

    data: Any = chunks() if chunked else big
    resp = await client.post("/v1/messages", data=data, headers=HEADERS)

    assert "1000" in await _error(resp, 413, "request_too_large")
    assert fake_anthropic.requests == []


async def test_body_just_under_the_cap_goes_through(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    raw = json.dumps(BODY).encode()
    cfg = gateway_config(str(fake_anthropic.url), server=ServerConfig(client_max_size=len(raw)))
    client = await gateway(cfg)

    resp = await client.post("/v1/messages", data=raw, headers=HEADERS)

    assert resp.status == 200
    assert fake_anthropic.requests[0].body == raw  # the client's bytes, as sent


async def test_default_body_cap_admits_a_prompt_with_images(
    aiohttp_server: AiohttpServer, gateway: GatewayFactory
) -> None:
    received: list[bytes] = []

    async def upstream(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({"type": "message"})

    big_upstream = web.Application(client_max_size=64 << 20)  # the fake stops at 1 MiB
    big_upstream.router.add_post("/v1/messages", upstream)
    server = await aiohttp_server(big_upstream)
    client = await gateway(gateway_config(str(server.make_url(""))))
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "A" * (5 << 20)},
    }
    raw = json.dumps(BODY | {"messages": [{"role": "user", "content": [image]}]}).encode()

    resp = await client.post("/v1/messages", data=io.BytesIO(raw), headers=HEADERS)

    assert resp.status == 200
    assert received == [raw]


async def test_unrouted_model_is_a_404_that_never_reaches_the_upstream(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    routes = (RouteConfig(model=MODEL, deployments=(DeploymentConfig(provider="anthropic"),)),)
    client = await gateway(gateway_config(str(fake_anthropic.url), routes=routes))

    resp = await client.post("/v1/messages", json=BODY | {"model": "gpt-4"}, headers=HEADERS)

    assert "gpt-4" in await _error(resp, 404, "not_found_error")
    assert fake_anthropic.requests == []


async def test_model_mapped_by_a_route_is_rewritten_for_the_upstream(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    deployment = DeploymentConfig(provider="anthropic", model="claude-sonnet-4-6-20260101")
    routes = (RouteConfig(model="sonnet", deployments=(deployment,)),)
    client = await gateway(gateway_config(str(fake_anthropic.url), routes=routes))

    resp = await client.post("/v1/messages", json=BODY | {"model": "sonnet"}, headers=HEADERS)

    assert resp.status == 200
    sent = fake_anthropic.requests[0].json()
    assert sent == BODY | {"model": "claude-sonnet-4-6-20260101"}


# --- the surface --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("POST", "/v1/complete"),
        ("GET", "/v1/messages/batches"),
        ("DELETE", "/v1/models"),
    ],
)
async def test_unknown_endpoint_is_a_404_envelope(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, method: str, path: str
) -> None:
    client = await gateway()

    resp = await client.request(method, path, headers=HEADERS)

    assert path in await _error(resp, 404, "not_found_error")
    assert fake_anthropic.requests == []


@pytest.mark.parametrize("method", ["HEAD", "GET"])
async def test_api_hello_is_answered_without_the_upstream(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, method: str
) -> None:
    client = await gateway()

    resp = await client.request(method, "/api/hello")

    assert resp.status == 200
    assert fake_anthropic.requests == []


async def test_models_list_pages_by_after_id_and_limit(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    deployments = (DeploymentConfig(provider="anthropic"),)
    routes = tuple(RouteConfig(model=f"m{i}", deployments=deployments) for i in range(5))
    client = await gateway(gateway_config(str(fake_anthropic.url), routes=routes))

    first = await (await client.get("/v1/models?limit=2")).json()
    rest = await (await client.get("/v1/models?after_id=m1")).json()
    bad = await client.get("/v1/models?limit=lots")

    assert [m["id"] for m in first["data"]] == ["m0", "m1"]
    assert (first["has_more"], first["first_id"], first["last_id"]) == (True, "m0", "m1")
    assert [m["id"] for m in rest["data"]] == ["m2", "m3", "m4"]
    assert rest["has_more"] is False
    assert all(m["type"] == "model" and m["created_at"] for m in rest["data"])
    await _error(bad, 400, "invalid_request_error")


async def _exercise_surface(
    client: GatewayClient | TestClient[Any, Any], prefix: str, fake: FakeAnthropic
) -> None:
    """Every endpoint once, under ``prefix``; the upstream always sees the unprefixed path."""
    streamed = await client.post(
        f"{prefix}/v1/messages?beta=true", json=BODY | {"stream": True}, headers=HEADERS
    )
    assert streamed.status == 200
    assert (await streamed.read()).rstrip().endswith(b'data: {"type":"message_stop"}')
    plain = await client.post(f"{prefix}/v1/messages", json=BODY, headers=HEADERS)
    assert (await plain.json())["type"] == "message"
    counted = await client.post(f"{prefix}/v1/messages/count_tokens", json=BODY, headers=HEADERS)
    assert (await counted.json())["input_tokens"] > 0
    models = await client.get(f"{prefix}/v1/models")
    assert models.status == 200
    hello = await client.head(f"{prefix}/api/hello")
    assert hello.status == 200
    bad = await client.post(f"{prefix}/v1/messages", data=b"[]", headers=HEADERS)
    await _error(bad, 400, "invalid_request_error")
    assert [r.path_qs for r in fake.requests] == [
        "/v1/messages?beta=true",
        "/v1/messages",
        "/v1/messages/count_tokens",
    ]
    sdk = AsyncAnthropic(base_url=str(client.make_url(prefix)), api_key="k", max_retries=0)
    async with sdk:
        message = await sdk.messages.create(model=MODEL, max_tokens=10, messages=BODY["messages"])
    assert message.content[0].type == "text"


async def test_whole_surface_works_under_a_configured_prefix(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    server = ServerConfig(anthropic_prefixes=("/anthropic/",))
    client = await gateway(gateway_config(str(fake_anthropic.url), server=server))

    await _exercise_surface(client, "/anthropic", fake_anthropic)


async def test_whole_surface_works_at_the_root_too(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    await _exercise_surface(await gateway(), "", fake_anthropic)


async def test_anthropic_app_mounts_as_a_sub_application(
    aiohttp_client: AiohttpClient, fake_anthropic: FakeAnthropic
) -> None:
    cfg = gateway_config(str(fake_anthropic.url), storage=StorageConfig(url="sqlite://:memory:"))
    parent = web.Application()
    parent[CONFIG] = cfg
    parent[ROUTES] = make_app(cfg)[ROUTES]  # whatever make_app stores, so this tracks it
    parent.cleanup_ctx.append(client_session_ctx)

    async def own(request: web.Request) -> web.Response:
        return web.Response(text="the host application's own route")

    parent.router.add_get("/", own)
    parent.add_subapp("/anthropic", anthropic_app())
    client = await aiohttp_client(parent)

    await _exercise_surface(client, "/anthropic", fake_anthropic)
    assert await (await client.get("/")).text() == "the host application's own route"


async def test_every_answer_carries_the_gateway_request_id(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply(), Reply(), Reply.error(429, "rate_limit_error", "slow down"))
    client = await gateway()
    answers = [
        await client.post("/v1/messages", json=BODY | {"stream": True}, headers=HEADERS),
        await client.post("/v1/messages", json=BODY, headers=HEADERS),
        await client.post("/v1/messages", json=BODY, headers=HEADERS),  # the upstream's 429
        await client.post("/v1/messages", data=b"{not json", headers=HEADERS),
        await client.get("/v1/models", headers=HEADERS),
        await client.head("/api/hello"),
        await client.get("/no/such/path"),
    ]
    assert [a.status for a in answers] == [200, 200, 429, 400, 200, 200, 404]
    ids = [a.headers["x-llmgw-request-id"] for a in answers]
    assert all(i.startswith("req_gw_") for i in ids) and len(set(ids)) == len(ids)
