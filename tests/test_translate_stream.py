"""Translation pieces in isolation (request bodies, stream adapters, error envelopes), and
through the gateway: pings on a silent Bedrock stream, errors in the client's format."""

from __future__ import annotations

import base64
import json
from typing import Any

from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw._translate_errors import convert_error
from llmgw._translate_request import convert_request
from llmgw._translate_rewrite import SSEModelRewrite
from llmgw._translate_stream import EventStreamToSSE, SSEToEventStream
from llmgw.demo import DemoUsage, message_events, sse_bytes
from llmgw.typedefs import ApiFormat, Operation
from llmgw.usage import Outcome
from llmgw.usage_bedrock import BedrockUsageTap
from llmgw.wire import (
    EventStreamDecoder,
    SSEDecoder,
    decode_bedrock_chunk,
    encode_bedrock_chunk,
    encode_bedrock_exception,
)
from tests.bedrock_vertex_gateway import (
    anthropic_provider,
    bedrock_provider,
    start_gateway,
    vertex_provider,
)
from tests.fakes.anthropic import FakeAnthropic, Reply
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.vertex import FakeVertex

USAGE = DemoUsage(input_tokens=7, output_tokens=11, cache_creation_5m=2048, cache_read=30000)
METRICS = {
    "inputTokenCount": 70,
    "outputTokenCount": 110,
    "cacheReadInputTokenCount": 300,
    "cacheWriteInputTokenCount": 20,
}


def bedrock_frames(*, model: str = "claude-sonnet-4-5-20250929", metrics: bool = True) -> bytes:
    frames = []
    for name, data in message_events(model=model, text="one two three four", usage=USAGE):
        if name == "ping":
            continue
        if name == "message_stop" and metrics:
            data = {**data, "amazon-bedrock-invocationMetrics": METRICS}
        frames.append(encode_bedrock_chunk(json.dumps(data).encode(), padding="xyz"))
    return b"".join(frames)


def sse_events(raw: bytes) -> list[tuple[str, Any]]:
    return [(e.event, json.loads(e.data)) for e in SSEDecoder().feed(raw)]


# -- requests ------------------------------------------------------------------------------------


def test_anthropic_to_bedrock_moves_model_stream_and_betas() -> None:
    headers = CIMultiDict(
        {"anthropic-beta": "a, b", "anthropic-version": "2023-06-01", "x-app": "cli"}
    )
    body, out = convert_request(
        client=ApiFormat.ANTHROPIC,
        provider=ApiFormat.BEDROCK,
        operation=Operation.MESSAGES,
        stream=True,
        model="us.anthropic.x-v1:0",
        body={"model": "m", "stream": True, "max_tokens": 5, "system": [{"type": "text"}]},
        headers=headers,
    )
    assert json.loads(body) == {
        "max_tokens": 5,
        "system": [{"type": "text"}],
        "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["a", "b"],
    }
    assert "anthropic-beta" not in out and "anthropic-version" not in out
    assert out["x-app"] == "cli"


def test_anthropic_count_tokens_to_bedrock_is_wrapped() -> None:
    body, _ = convert_request(
        client=ApiFormat.ANTHROPIC,
        provider=ApiFormat.BEDROCK,
        operation=Operation.COUNT_TOKENS,
        stream=False,
        model="anthropic.x-v1:0",
        body={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers=CIMultiDict(),
    )
    inner = json.loads(base64.b64decode(json.loads(body)["input"]["invokeModel"]["body"]))
    assert inner["messages"] == [{"role": "user", "content": "hi"}]
    assert inner["anthropic_version"] == "bedrock-2023-05-31" and "model" not in inner


def test_bedrock_to_anthropic_merges_header_and_body_betas() -> None:
    body, out = convert_request(
        client=ApiFormat.BEDROCK,
        provider=ApiFormat.ANTHROPIC,
        operation=Operation.MESSAGES,
        stream=False,
        model="claude-x",
        body={"anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["b", "c"], "k": 1},
        headers=CIMultiDict({"anthropic-beta": "a,b"}),
    )
    assert json.loads(body) == {"model": "claude-x", "k": 1}
    assert out["anthropic-beta"] == "a,b,c"
    assert out["anthropic-version"] == "2023-06-01"


def test_vertex_to_bedrock_and_bedrock_to_vertex() -> None:
    to_bedrock, _ = convert_request(
        client=ApiFormat.VERTEX,
        provider=ApiFormat.BEDROCK,
        operation=Operation.MESSAGES,
        stream=True,
        model="b",
        body={"anthropic_version": "vertex-2023-10-16", "stream": True, "max_tokens": 1},
        headers=CIMultiDict({"anthropic-beta": "x"}),
    )
    to_vertex, headers = convert_request(
        client=ApiFormat.BEDROCK,
        provider=ApiFormat.VERTEX,
        operation=Operation.MESSAGES,
        stream=True,
        model="v",
        body={"anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["y"], "max_tokens": 1},
        headers=CIMultiDict(),
    )
    assert json.loads(to_bedrock) == {
        "max_tokens": 1,
        "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["x"],
    }
    assert json.loads(to_vertex) == {
        "max_tokens": 1,
        "stream": True,
        "anthropic_version": "vertex-2023-10-16",
    }
    assert headers["anthropic-beta"] == "y"


# -- stream adapters -----------------------------------------------------------------------------


def test_event_stream_to_sse_byte_by_byte_with_metrics_preferred() -> None:
    adapter = EventStreamToSSE(model="claude-requested", ping_interval=10.0)
    raw = bedrock_frames()
    out = b"".join(adapter.feed(raw[i : i + 1]) for i in range(len(raw))) + adapter.close()

    events = sse_events(out)
    assert events[0][0] == "message_start"
    assert events[0][1]["message"]["model"] == "claude-requested"
    assert events[-1] == ("message_stop", {"type": "message_stop"})  # metrics stripped
    assert all(name == data["type"] for name, data in events)
    usage = adapter.usage
    assert (usage.input_tokens, usage.output_tokens) == (70, 110)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (300, 20)
    assert usage.final
    assert adapter.ping() == b'event: ping\ndata: {"type": "ping"}\n\n'


def test_event_stream_exception_becomes_an_sse_error_with_the_message_kept() -> None:
    adapter = EventStreamToSSE(model=None, ping_interval=None)
    raw = bedrock_frames()[:400]
    first = EventStreamDecoder().feed(bedrock_frames())[0]
    chunk = encode_bedrock_chunk(decode_bedrock_chunk(first))
    out = adapter.feed(chunk + encode_bedrock_exception("throttlingException", "Too many tokens"))

    events = sse_events(out)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "rate_limit_error", "message": "Too many tokens"}},
    )
    assert adapter.feed(raw) == b""  # nothing after the error
    assert adapter.error("api_error", "x") == b""


def test_sse_to_event_stream_drops_pings_and_maps_errors() -> None:
    events = message_events(model="up", text="hi there", usage=USAGE)
    error = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Busy"}})
    adapter = SSEToEventStream(model="us.anthropic.x-v1:0")
    out = adapter.feed(sse_bytes([*events[:4], error]))

    frames = EventStreamDecoder().feed(out)
    assert frames[-1].exception_type == "serviceUnavailableException"
    assert json.loads(frames[-1].payload) == {"message": "Busy"}
    inner = [json.loads(decode_bedrock_chunk(f)) for f in frames[:-1]]
    assert "ping" not in [e["type"] for e in inner]
    assert inner[0]["message"]["model"] == "us.anthropic.x-v1:0"
    assert adapter.usage.input_tokens == 7


def test_sse_model_rewrite_touches_only_the_first_event() -> None:
    raw = sse_bytes(message_events(model="upstream-id", text="a b c d e f", usage=USAGE))
    adapter = SSEModelRewrite(model="requested", content_type="text/event-stream")
    out = b"".join(adapter.feed(raw[i : i + 7]) for i in range(0, len(raw), 7)) + adapter.close()

    cut = raw.index(b"\n\n") + 2
    assert out[out.index(b"\n\n") + 2 :] == raw[cut:]
    assert sse_events(out)[0][1]["message"]["model"] == "requested"
    assert adapter.usage.output_tokens == 11


def test_bedrock_usage_tap_reads_a_view_without_metrics() -> None:
    tap = BedrockUsageTap()
    raw = bedrock_frames(metrics=False)
    for i in range(0, len(raw), 13):
        tap.feed(raw[i : i + 13])
    tap.close()
    assert (tap.usage.input_tokens, tap.usage.output_tokens) == (7, 11)
    assert tap.usage.cache_read_input_tokens == 30000


def test_errors_change_envelope_only_across_formats() -> None:
    headers = CIMultiDict(
        {"x-amzn-ErrorType": "ThrottlingException:http://x", "x-amzn-RequestId": "r"}
    )
    raw = b'{"message":"Too many requests"}'
    body, out = convert_error(
        client=ApiFormat.ANTHROPIC,
        provider=ApiFormat.BEDROCK,
        status=429,
        headers=headers,
        body=raw,
    )
    same, _ = convert_error(
        client=ApiFormat.BEDROCK, provider=ApiFormat.BEDROCK, status=429, headers=headers, body=raw
    )
    google = b'[{"error":{"code":401,"message":"Bad token","status":"UNAUTHENTICATED"}}]'
    vertex, _ = convert_error(
        client=ApiFormat.ANTHROPIC,
        provider=ApiFormat.VERTEX,
        status=401,
        headers=CIMultiDict(),
        body=google,
    )
    anthropic = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    to_bedrock, bedrock_headers = convert_error(
        client=ApiFormat.BEDROCK,
        provider=ApiFormat.ANTHROPIC,
        status=529,
        headers=CIMultiDict(),
        body=anthropic,
    )

    assert json.loads(body)["error"] == {"type": "rate_limit_error", "message": "Too many requests"}
    assert "x-amzn-ErrorType" not in out and out["x-amzn-RequestId"] == "r"
    assert same == raw
    assert json.loads(vertex)["error"] == {"type": "authentication_error", "message": "Bad token"}
    assert json.loads(to_bedrock)["message"] == "Overloaded"
    assert json.loads(to_bedrock)["error"]["type"] == "overloaded_error"
    assert bedrock_headers["x-amzn-ErrorType"] == "ServiceUnavailableException"


# -- through the gateway -------------------------------------------------------------------------


async def test_silent_bedrock_upstream_gets_pings_on_the_translated_stream(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    fake = FakeBedrock(Reply(text="slow answer", delay=0.4, usage=USAGE))
    await fake.start(aiohttp_server)
    gw = await start_gateway(aiohttp_client, {"bedrock": bedrock_provider(fake)}, ping_interval=0.1)

    resp = await gw.post(
        "/v1/messages",
        json={"model": "claude-x", "max_tokens": 5, "messages": [], "stream": True},
    )
    events = sse_events(await resp.read())

    assert resp.headers["content-type"].startswith("text/event-stream")
    names = [name for name, _ in events]
    assert names.count("ping") >= 3
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert ("ping", {"type": "ping"}) in events


async def test_bedrock_http_error_reaches_an_anthropic_client_in_its_envelope(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    invalid = Reply(
        status=400,
        body={"message": "messages.0: prompt is too long"},
        headers={"x-amzn-ErrorType": "ValidationException"},
    )
    fake = FakeBedrock(invalid)
    await fake.start(aiohttp_server)
    gw = await start_gateway(aiohttp_client, {"bedrock": bedrock_provider(fake)})

    resp = await gw.post("/v1/messages", json={"model": "m", "max_tokens": 5, "messages": []})

    assert resp.status == 400
    assert (await resp.json())["error"] == {
        "type": "invalid_request_error",
        "message": "messages.0: prompt is too long",
    }


async def test_bedrock_mid_stream_exception_becomes_an_sse_error_event(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    error = {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Model stream broke"},
    }
    fake = FakeBedrock(Reply(text="a b c d e f g", error_after=3, error_event=error))
    await fake.start(aiohttp_server)
    gw = await start_gateway(aiohttp_client, {"bedrock": bedrock_provider(fake)})

    resp = await gw.post(
        "/v1/messages", json={"model": "m", "max_tokens": 5, "messages": [], "stream": True}
    )
    events = sse_events(await resp.read())

    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "Model stream broke"}},
    )
    assert "message_stop" not in [name for name, _ in events]


async def test_vertex_auth_error_reaches_an_anthropic_client_as_authentication_error(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    fake = FakeVertex(token="another-token")
    await fake.start(aiohttp_server)
    gw = await start_gateway(aiohttp_client, {"vertex": vertex_provider(fake)})

    resp = await gw.post("/v1/messages", json={"model": "m", "max_tokens": 5, "messages": []})

    assert resp.status == 401
    assert (await resp.json())["error"]["type"] == "authentication_error"


async def test_anthropic_stream_error_reaches_a_bedrock_client_as_an_exception_frame(
    aiohttp_client: AiohttpClient, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply(text="a b c d e f g", error_after=4))
    contexts: list[Any] = []
    gw = await start_gateway(
        aiohttp_client, {"anthropic": anthropic_provider(fake_anthropic)}, contexts=contexts
    )

    resp = await gw.post(
        "/model/us.anthropic.claude-x-v1:0/invoke-with-response-stream",
        json={"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": []},
    )
    frames = EventStreamDecoder().feed(await resp.read())

    assert resp.headers["content-type"] == "application/vnd.amazon.eventstream"
    assert frames[-1].message_type == "exception"
    assert frames[-1].exception_type == "serviceUnavailableException"
    assert contexts[0].outcome is not Outcome.IN_FLIGHT
