"""The Bedrock surface: model ids from the raw path, hostile ids refused before any upstream
call, the inference-profile lookups, and errors in the client's envelope."""

from __future__ import annotations

import asyncio
import json

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.context import RequestContext
from llmgw.errors import InvalidRequestError
from llmgw.formats.bedrock import bedrock_app, bedrock_model_id, is_bedrock_model_id
from llmgw.wire import EventStreamDecoder, decode_bedrock_chunk
from tests.bedrock_vertex_gateway import Gateway, bedrock_provider, route, start_gateway
from tests.fakes.anthropic import Reply
from tests.fakes.bedrock import FakeBedrock

BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 8, "messages": []}
ARN = "arn:aws:bedrock:us-east-2:123456789012:application-inference-profile/abc123"


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeBedrock:
    fake = FakeBedrock()
    await fake.start(aiohttp_server)
    return fake


@pytest.fixture
async def gw(aiohttp_client: AiohttpClient, fake: FakeBedrock) -> Gateway:
    return await start_gateway(
        aiohttp_client,
        {"bedrock": bedrock_provider(fake)},
        routes=[
            route("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock"),
            route("claude-sonnet-4-6", "bedrock", "us.anthropic.claude-sonnet-4-6"),
            route("*", "bedrock"),
        ],
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ),
        (
            "/bedrock/model/us.anthropic.claude-x-v1%3A0/invoke-with-response-stream?x=1",
            "us.anthropic.claude-x-v1:0",
        ),
        (
            "/model/arn:aws:bedrock:us-east-2:123456789012:application-inference-profile%2Fabc123/invoke",
            ARN,
        ),
    ],
)
def test_model_id_is_cut_from_the_raw_path_and_decoded_once(raw: str, expected: str) -> None:
    assert bedrock_model_id(raw)[0] == expected


@pytest.mark.parametrize(
    "raw_id",
    [
        "..",
        "%2E%2E",
        "..%2F..%2Fv1%2Fmessages",
        "a%2Fb",  # a slash that is not an ARN
        "a%3Fb",  # query
        "a%23b",  # fragment
        "a%00b",  # control
        "a%0Ab",
        "a%252Fb",  # double encoding
        "a%20b",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile%2F..",
        "x" * 2049,
        "%FF",
    ],
)
async def test_hostile_model_ids_are_refused_before_any_upstream_call(
    gw: Gateway, fake: FakeBedrock, raw_id: str
) -> None:
    status, body = await raw_post(gw, f"/bedrock/model/{raw_id}/invoke")

    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert fake.requests == []


async def raw_post(gw: Gateway, path: str) -> tuple[int, bytes]:
    """POST ``path`` byte for byte: HTTP clients normalise dot segments and re-encode."""
    assert gw.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    payload = json.dumps(BODY).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_dot_segments_in_the_raw_path_are_refused(gw: Gateway, fake: FakeBedrock) -> None:
    status, _ = await raw_post(gw, "/model/../../v1/messages/invoke")

    assert status == 400
    assert fake.requests == []


def test_an_empty_id_is_invalid() -> None:
    with pytest.raises(InvalidRequestError):
        bedrock_model_id("/model//invoke")


async def test_colon_ids_and_arns_reach_the_upstream_percent_encoded(
    gw: Gateway, fake: FakeBedrock
) -> None:
    ok = await gw.post("/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke", json=BODY)
    arn = await gw.post("/bedrock/model/" + ARN.replace("/", "%2F") + "/invoke", json=BODY)

    assert (ok.status, arn.status) == (200, 200)
    assert [r.path for r in fake.requests] == [
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
        "/model/arn%3Aaws%3Abedrock%3Aus-east-2%3A123456789012%3Aapplication-inference-profile%2Fabc123/invoke",
    ]
    assert fake.model_ids == ["us.anthropic.claude-sonnet-4-5-20250929-v1:0", ARN]
    assert fake.auth_failures == []


async def test_body_fields_are_preserved_byte_for_byte(gw: Gateway, fake: FakeBedrock) -> None:
    raw = (
        b'{"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["a","b"],'
        b'"max_tokens":8,"messages":[],"x_new_field":{"k":1}}'
    )
    resp = await gw.post(
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke",
        data=raw,
        headers={"content-type": "application/json"},
    )

    assert resp.status == 200
    assert fake.requests[0].body == raw


async def test_mapped_model_response_names_the_requested_id(gw: Gateway, fake: FakeBedrock) -> None:
    resp = await gw.post("/model/claude-sonnet-4-6/invoke-with-response-stream", json=BODY)

    assert resp.status == 200
    assert resp.headers["content-type"] == "application/vnd.amazon.eventstream"
    frames = EventStreamDecoder().feed(await resp.read())
    first = decode_bedrock_chunk(frames[0])
    assert b'"model":"claude-sonnet-4-6"' in first
    assert fake.model_ids == ["us.anthropic.claude-sonnet-4-6"]


async def test_unmapped_stream_is_relayed_byte_exact(
    aiohttp_client: AiohttpClient, fake: FakeBedrock
) -> None:
    contexts: list[RequestContext] = []
    gw = await start_gateway(aiohttp_client, {"bedrock": bedrock_provider(fake)}, contexts=contexts)
    resp = await gw.post("/model/us.anthropic.claude-x-v1:0/invoke-with-response-stream", json=BODY)
    body = await resp.read()

    assert resp.status == 200
    assert resp.headers["content-type"] == "application/vnd.amazon.eventstream"
    frames = EventStreamDecoder().feed(body)
    assert [m.event_type for m in frames] == ["chunk"] * len(frames)
    inner = decode_bedrock_chunk(frames[-1])
    assert b"amazon-bedrock-invocationMetrics" in inner  # untouched, padding and all
    assert body == fake.streamed[0]
    assert contexts[0].usage.final


async def test_converse_is_not_supported(gw: Gateway, fake: FakeBedrock) -> None:
    resp = await gw.post("/model/us.anthropic.claude-x-v1:0/converse", json=BODY)

    assert resp.status == 501
    assert (await resp.json())["error"]["type"] == "not_supported"
    assert fake.requests == []


async def test_bedrock_errors_reach_a_bedrock_client_unchanged(
    gw: Gateway, fake: FakeBedrock
) -> None:
    fake.queue(
        Reply(
            status=429,
            body={"message": "Too many requests, please wait before trying again."},
            headers={"x-amzn-ErrorType": "ThrottlingException"},
        )
    )
    resp = await gw.post("/model/us.anthropic.claude-x-v1:0/invoke", json=BODY)

    assert resp.status == 429
    assert resp.headers["x-amzn-ErrorType"] == "ThrottlingException"
    assert await resp.json() == {"message": "Too many requests, please wait before trying again."}


async def test_inference_profiles_list_routed_bedrock_ids(gw: Gateway, fake: FakeBedrock) -> None:
    listed = await gw.get("/bedrock/inference-profiles", params={"type": "SYSTEM_DEFINED"})
    one = await gw.get("/inference-profiles/us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    missing = await gw.get("/inference-profiles/us.anthropic.nope")

    assert listed.status == 200
    ids = [p["inferenceProfileId"] for p in (await listed.json())["inferenceProfileSummaries"]]
    assert ids == ["us.anthropic.claude-sonnet-4-5-20250929-v1:0"]
    assert one.status == 200
    assert (await one.json())["status"] == "ACTIVE"
    assert missing.status == 404
    assert fake.requests == []


async def test_inference_profiles_404_without_bedrock_routes(
    aiohttp_client: AiohttpClient, fake: FakeBedrock
) -> None:
    gw = await start_gateway(aiohttp_client, {"bedrock": bedrock_provider(fake)})
    resp = await gw.get("/inference-profiles?type=SYSTEM_DEFINED")

    assert resp.status == 404
    assert (await resp.json())["error"]["type"] == "not_found_error"


def test_bedrock_id_recognition() -> None:
    assert is_bedrock_model_id("us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert is_bedrock_model_id("anthropic.claude-haiku-4-5-20251001-v1:0")
    assert is_bedrock_model_id(ARN)
    assert not is_bedrock_model_id("claude-sonnet-4-6")


def test_bedrock_surface_is_a_sub_application() -> None:
    sub = bedrock_app()
    assert {r.method for r in sub.router.routes()} >= {"POST", "GET"}
