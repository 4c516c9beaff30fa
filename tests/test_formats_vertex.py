"""The Vertex surface: any mount prefix, model ids from the raw path, hostile ids refused."""

from __future__ import annotations

import asyncio
import json

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.context import RequestContext
from llmgw.formats.vertex import vertex_model_id
from llmgw.typedefs import Operation
from tests.bedrock_vertex_gateway import Gateway, start_gateway, vertex_provider
from tests.fakes.anthropic import Reply
from tests.fakes.vertex import FakeVertex

BODY = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 8, "messages": []}
TAIL = "/projects/p/locations/us-east5/publishers/anthropic/models/"


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeVertex:
    fake = FakeVertex()
    await fake.start(aiohttp_server)
    return fake


@pytest.fixture
def contexts() -> list[RequestContext]:
    return []


@pytest.fixture
async def gw(
    aiohttp_client: AiohttpClient, fake: FakeVertex, contexts: list[RequestContext]
) -> Gateway:
    return await start_gateway(aiohttp_client, {"vertex": vertex_provider(fake)}, contexts=contexts)


@pytest.mark.parametrize("mount", ["", "/v1", "/vertex", "/vertex/v1", "/a/b/c/v1"])
async def test_served_under_any_mount_prefix(gw: Gateway, fake: FakeVertex, mount: str) -> None:
    resp = await gw.post(f"{mount}{TAIL}claude-sonnet-4-5@20250929:rawPredict", json=BODY)

    assert resp.status == 200
    # Same format, unmapped: Vertex's answer passes untouched (its own model id included).
    assert (await resp.json())["model"] == fake.reported_model
    assert fake.model_ids == ["claude-sonnet-4-5@20250929"]


def test_model_id_and_method_from_the_raw_path() -> None:
    assert vertex_model_id(f"/v1{TAIL}claude-sonnet-4-6:streamRawPredict?alt=sse") == (
        "claude-sonnet-4-6",
        "streamRawPredict",
    )
    assert vertex_model_id(f"{TAIL}claude-haiku-4-5%4020251001:rawPredict")[0] == (
        "claude-haiku-4-5@20251001"
    )


async def _raw_post(gw: Gateway, path: str) -> int:
    assert gw.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    payload = json.dumps(BODY).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    head = (await reader.read()).split(b"\r\n", 1)[0]
    writer.close()
    await writer.wait_closed()
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "model", ["..", "%2E%2E", "a%2Fb", "a%3Fb", "a%23b", "a%00b", "a%0Ab", "a%252F", "%20"]
)
async def test_hostile_model_ids_are_refused_before_any_upstream_call(
    gw: Gateway, fake: FakeVertex, model: str
) -> None:
    status = await _raw_post(gw, f"/v1{TAIL}{model}:rawPredict")

    assert status in (400, 404)  # 404 when the id's own "/" breaks the path shape
    assert fake.requests == []


async def test_hostile_ids_get_the_anthropic_400(gw: Gateway, fake: FakeVertex) -> None:
    resp = await gw.post(f"/v1{TAIL}a%3Fb:rawPredict", json=BODY)

    assert resp.status == 400
    assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert fake.requests == []


async def test_count_tokens_keeps_the_body_model_and_validates_it(
    gw: Gateway, fake: FakeVertex, contexts: list[RequestContext]
) -> None:
    ok = await gw.post(f"/v1{TAIL}count-tokens:rawPredict", json={**BODY, "model": "claude-x@1"})
    bad = await gw.post(f"/v1{TAIL}count-tokens:rawPredict", json={**BODY, "model": "a/../b"})
    missing = await gw.post(f"/v1{TAIL}count-tokens:rawPredict", json=BODY)

    assert ok.status == 200 and (await ok.json())["input_tokens"] > 0
    assert (bad.status, missing.status) == (400, 400)
    assert contexts[0].operation is Operation.COUNT_TOKENS
    assert contexts[0].requested_model == "claude-x@1"
    assert len(fake.requests) == 1


async def test_unknown_method_is_404(gw: Gateway, fake: FakeVertex) -> None:
    resp = await gw.post(f"/v1{TAIL}claude-x:predict", json=BODY)

    assert resp.status == 404
    assert fake.requests == []


async def test_google_error_envelope_reaches_vertex_clients_unchanged(
    gw: Gateway, fake: FakeVertex
) -> None:
    google = [{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}]
    fake.queue(Reply(status=429, body=google))
    resp = await gw.post(f"/v1{TAIL}claude-x:rawPredict", json=BODY)

    assert resp.status == 429
    assert await resp.json() == google
