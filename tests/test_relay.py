"""The streaming relay against a real fake upstream: timing, bytes, disconnects and drops.

Disconnect tests run the gateway the way ``llmgw serve`` does (``handler_cancellation=False``,
where the relay must notice a gone client by itself) and, parametrised, the way aiohttp's test
server does (``True``, where the handler is cancelled); both must close the upstream promptly
and record what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import re
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer
from yarl import URL

from llmgw.app import make_app
from llmgw.config import DeploymentConfig, GatewayConfig, RouteConfig, UpstreamConfig
from llmgw.context import RequestContext, get_context
from llmgw.demo import DemoUsage, message_events, sse_bytes
from llmgw.providers.anthropic import AnthropicProvider
from llmgw.routes import Deployment
from llmgw.typedefs import Handler
from llmgw.usage import Outcome
from tests.conftest import GatewayFactory, context_copies, gateway_config, live_contexts
from tests.fakes.anthropic import FakeAnthropic, Reply

MODEL = "claude-sonnet-4-6"
BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}
STREAM_BODY = BODY | {"stream": True}
HEADERS = {"anthropic-version": "2023-06-01"}
#: How long a gone client may keep its upstream connection open.
PROMPT = 2.0

Contexts = list[RequestContext]


@pytest.fixture(autouse=True, params=[False, True], ids=["loop", "debug-loop"])
async def loop_debug(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every relay test also runs on a debug loop, which turns unawaited coroutines and
    unclosed transports into warnings (errors under this suite's filterwarnings)."""
    loop = asyncio.get_running_loop()
    loop.set_debug(request.param)
    yield
    loop.set_debug(False)


@contextlib.asynccontextmanager
async def serve(app: web.Application, *, handler_cancellation: bool) -> AsyncIterator[URL]:
    """``app`` on a loopback port, as ``llmgw serve`` runs it unless told otherwise."""
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield URL(f"http://{host}:{port}")
    finally:
        await runner.cleanup()


def _config(fake: FakeAnthropic | URL | str, **upstream: Any) -> GatewayConfig:
    url = str(fake.url if isinstance(fake, FakeAnthropic) else fake)
    return gateway_config(url, upstream=UpstreamConfig(**upstream))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _wait_for(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PROMPT
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _events(data: bytes) -> list[str]:
    return [
        line.removeprefix(b"event: ").decode()
        for line in data.split(b"\n")
        if line.startswith(b"event: ")
    ]


# --- pass-through --------------------------------------------------------------------------


async def test_first_event_reaches_client_before_upstream_sends_the_second(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    second = asyncio.Event()
    fake_anthropic.queue(Reply(gates={1: second}))
    client = await gateway()

    resp = await client.post("/v1/messages", json=STREAM_BODY, headers=HEADERS)
    assert resp.status == 200
    first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), PROMPT)
    assert first.startswith(b"event: message_start\n")
    assert not second.is_set()  # the gateway relayed event 0 while the upstream was held
    second.set()
    rest = await resp.read()
    assert _events(first + rest)[-1] == "message_stop"


async def test_headers_reach_the_client_while_the_upstream_holds_its_first_event(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    first = asyncio.Event()
    fake_anthropic.queue(Reply(gates={0: first}))
    client = await gateway()

    resp = await asyncio.wait_for(
        client.post("/v1/messages", json=STREAM_BODY, headers=HEADERS), PROMPT
    )
    assert resp.status == 200
    assert not first.is_set()  # not held back for an event that has not come
    first.set()
    assert _events(await resp.read())[-1] == "message_stop"


@contextlib.asynccontextmanager
async def _upstream_in_one_write(body: bytes) -> AsyncIterator[URL]:
    """An upstream that answers with its headers and its whole chunked body in one write."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        assert length is not None
        await reader.readexactly(int(length[1]))
        status = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        chunked = b"transfer-encoding: chunked\r\n\r\n%x\r\n" % len(body)
        writer.write(status + chunked + body + b"\r\n0\r\n\r\n")
        await reader.read()  # until the gateway closes its pooled connection
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        host, port = server.sockets[0].getsockname()[:2]
        yield URL(f"http://{host}:{port}")


def _record_writes(into: list[bytes]) -> Callable[[web.Request, web.StreamResponse], Any]:
    """An ``on_response_prepare`` hook that records each write to the client's transport
    (asyncio's, which the tests run on), as the kernel is handed it."""

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        transport: Any = request.transport
        write, writelines = transport.write, transport.writelines

        def record_write(data: bytes) -> None:
            into.append(bytes(data))
            write(data)

        def record_writelines(chunks: list[bytes]) -> None:
            into.append(b"".join(chunks))
            writelines(chunks)

        transport.write, transport.writelines = record_write, record_writelines

    return on_prepare


async def test_a_stream_that_came_whole_leaves_in_one_write_with_its_headers_and_end() -> None:
    body = sse_bytes(message_events(model=MODEL, text="one write", usage=DemoUsage()))
    contexts: Contexts = []
    writes: list[bytes] = []
    async with _upstream_in_one_write(body) as upstream:
        app = make_app(_config(upstream), middlewares=(live_contexts(contexts),))
        app.on_response_prepare.append(_record_writes(writes))
        async with (
            serve(app, handler_cancellation=False) as url,
            aiohttp.ClientSession() as s,
            s.post(url / "v1/messages", json=STREAM_BODY, headers=HEADERS) as resp,
        ):
            assert await resp.read() == body

    (write,) = writes
    assert write.startswith(b"HTTP/1.1 200 OK\r\n")
    assert write.endswith(b"\r\n\r\n%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    (ctx,) = contexts
    assert ctx.outcome is Outcome.COMPLETE and ctx.bytes_out == len(body)
    assert ctx.usage.final and ctx.usage.output_tokens == DemoUsage().output_tokens


async def test_the_request_body_is_released_while_the_answer_streams(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    second = asyncio.Event()
    fake_anthropic.queue(Reply(gates={1: second}))
    seen: list[RequestContext] = []
    keep = live_contexts(seen)
    client = await gateway(middlewares=(keep,))
    prompt = "x" * 900_000  # Claude Code's are ~100 KB, with images megabytes
    body = json.dumps(STREAM_BODY | {"messages": [{"role": "user", "content": prompt}]}).encode()
    tracemalloc.start(8)
    try:
        resp = await client.post("/v1/messages", data=body, headers=HEADERS)
        await asyncio.wait_for(resp.content.readuntil(b"\n\n"), PROMPT)
        gc.collect()
        held = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*/llmgw/*", all_frames=True)]
        )
    finally:
        tracemalloc.stop()
    (ctx,) = seen
    assert ctx.body is None and ctx.raw_body is None
    # Nothing allocated on llmgw's path (aiohttp's request included) holds the prompt.
    assert sum(t.size for t in held.traces) < 200_000
    second.set()
    await resp.read()
    assert ctx.outcome is Outcome.COMPLETE
    assert fake_anthropic.requests[-1].json()["messages"][0]["content"] == prompt


def _llmgw_frames(task: asyncio.Task[Any]) -> list[str]:
    """The llmgw coroutines on ``task``'s await chain, outermost first."""
    names = []
    coro: Any = task.get_coro()
    while coro is not None and hasattr(coro, "cr_code"):
        if "/llmgw/" in coro.cr_code.co_filename:
            names.append(coro.cr_code.co_name)
        coro = coro.cr_await
    return names


async def test_an_open_stream_holds_a_frame_only_for_pieces_with_an_exit_half(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    """Every coroutine on an open stream's await chain is held for as long as it lasts
    (~0.3-0.4 KB each, per open stream). Routing routes on first need and keeps none, the
    relay copies chunks in its own frame (not a helper's), and audit, errors and metering
    act on the way out, so they keep theirs."""
    second = asyncio.Event()
    fake_anthropic.queue(Reply(gates={1: second}))
    client = await gateway()

    resp = await client.post("/v1/messages", json=STREAM_BODY, headers=HEADERS)
    await asyncio.wait_for(resp.content.readuntil(b"\n\n"), PROMPT)
    chains = [c for c in map(_llmgw_frames, asyncio.all_tasks()) if "relay" in c]
    second.set()
    await resp.read()

    assert chains == [["_audit", "_errors", "_metering", "relay"]]


@pytest.mark.parametrize(
    ("body", "reply", "status"),
    [
        (BODY, Reply(), 200),
        (STREAM_BODY, Reply(), 200),
        (BODY, Reply(status=400, body={"type": "error", "error": {"type": "x"}}), 400),
        (BODY | {"model": "gpt-4"}, Reply(), 404),
        ({k: v for k, v in BODY.items() if k != "model"}, Reply(), 400),
    ],
    ids=["answered", "streamed", "upstream-error", "unrouted-model", "invalid-request"],
)
async def test_an_answered_request_holds_no_body_while_its_connection_idles(
    aiohttp_client: AiohttpClient,
    fake_anthropic: FakeAnthropic,
    body: dict[str, Any],
    reply: Reply,
    status: int,
) -> None:
    # aiohttp keeps a keep-alive connection's last request (and its context) until the
    # next request arrives on it: a body left on the context would be held that long.
    fake_anthropic.queue(reply)
    seen: list[RequestContext] = []
    keep = live_contexts(seen)
    route = RouteConfig(model=BODY["model"], deployments=(DeploymentConfig(provider="anthropic"),))
    app = make_app(gateway_config(str(fake_anthropic.url), routes=(route,)))
    app.middlewares.insert(0, keep)  # outermost: it sees requests refused before the relay
    client = await aiohttp_client(app)
    resp = await client.post("/v1/messages", json=body, headers=HEADERS)
    assert resp.status == status
    await resp.read()
    (ctx,) = seen
    assert ctx.body is None and ctx.raw_body is None


async def test_sse_bytes_reach_the_client_unchanged_whatever_the_chunking(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    events = message_events(model=MODEL, text="a b c d e f g", thinking="t", usage=DemoUsage())
    data = sse_bytes(events).replace(b"\n", b"\r\n")  # CRLF too: nothing is re-encoded
    chunks = [data[i : i + 37] for i in range(0, len(data), 37)]
    fake_anthropic.queue(Reply(chunks=chunks))
    contexts: Contexts = []
    client = await gateway(middlewares=(context_copies(contexts),))

    resp = await client.post("/v1/messages", json=STREAM_BODY, headers=HEADERS)
    received = await resp.read()

    assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert _sha(received) == _sha(data)
    (ctx,) = contexts
    assert ctx.outcome is Outcome.COMPLETE
    assert ctx.bytes_out == len(data)
    assert ctx.ttfb is not None and ctx.ttfb > 0
    assert ctx.usage.final and ctx.usage.input_tokens == DemoUsage().input_tokens


async def test_json_bytes_reach_the_client_unchanged_and_usage_is_read(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    message = {
        "id": "msg_01A",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "é ✓ " * 500}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 700, "cache_read_input_tokens": 5},
    }
    fake_anthropic.queue(Reply(body=message))
    contexts: Contexts = []
    client = await gateway(middlewares=(context_copies(contexts),))

    resp = await client.post("/v1/messages", json=BODY, headers=HEADERS)
    received = await resp.read()

    assert resp.status == 200
    assert _sha(received) == _sha(json.dumps(message).encode())  # aiohttp's json_response
    (ctx,) = contexts
    assert ctx.outcome is Outcome.COMPLETE
    assert (ctx.usage.input_tokens, ctx.usage.output_tokens) == (9, 700)
    assert ctx.usage.cache_read_input_tokens == 5
    assert ctx.usage.message_id == "msg_01A"


async def test_malformed_upstream_event_passes_unchanged_and_flags_parse_error(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    good = sse_bytes(message_events(model=MODEL))
    garbage = b"event: message_start\ndata: {\xff not json\n\n"
    fake_anthropic.queue(Reply(chunks=[garbage, good[:50], good[50:]]))
    contexts: Contexts = []
    client = await gateway(middlewares=(context_copies(contexts),))

    resp = await client.post("/v1/messages", json=STREAM_BODY, headers=HEADERS)
    received = await resp.read()

    assert received == garbage + good
    (ctx,) = contexts
    assert ctx.outcome is Outcome.COMPLETE
    assert ctx.usage.parse_error is not None


async def test_client_has_the_whole_stream_before_outer_middlewares_finish(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    release = asyncio.Event()

    @web.middleware
    async def slow_exit(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        await release.wait()  # stands in for metering writing to storage
        return response

    client = await gateway(middlewares=(slow_exit,))
    resp = await client.post("/v1/messages", json=STREAM_BODY, headers=HEADERS)
    data = await asyncio.wait_for(resp.read(), PROMPT)  # EOF arrives while exit is held
    release.set()
    assert _events(data)[-1] == "message_stop"


async def test_upstream_error_status_headers_and_body_are_relayed_unmodified(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}}
    headers = {"retry-after": "17", "anthropic-ratelimit-tokens-remaining": "0"}
    fake_anthropic.queue(Reply(status=429, body=body, headers=headers))
    contexts: Contexts = []
    client = await gateway(middlewares=(context_copies(contexts),))

    resp = await client.post("/v1/messages", json=STREAM_BODY, headers=HEADERS)

    assert resp.status == 429
    assert await resp.read() == json.dumps(body).encode()
    assert resp.headers["retry-after"] == "17"
    assert resp.headers["anthropic-ratelimit-tokens-remaining"] == "0"
    assert resp.headers["request-id"].startswith("req_011C")
    (ctx,) = contexts
    assert (ctx.outcome, ctx.status) == (Outcome.UPSTREAM_ERROR, 429)


# --- upstream failures ---------------------------------------------------------------------


async def test_upstream_drop_between_events_ends_with_in_band_error_not_message_stop(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply(text="one two three four five six", drop_after=4))
    contexts: Contexts = []
    client = await gateway(middlewares=(context_copies(contexts),))

    resp = await client.post("/v1/messages", json=STREAM_BODY, headers=HEADERS)
    data = await asyncio.wait_for(resp.read(), PROMPT)

    names = _events(data)
    assert names[:4] == ["message_start", "content_block_start", "ping", "content_block_delta"]
    assert names[4:] == ["error"]
    assert b"message_stop" not in data
    error = json.loads(data.rsplit(b"data: ", 1)[1])
    assert error["error"]["type"] == "api_error"
    (ctx,) = contexts
    assert ctx.outcome is Outcome.UPSTREAM_DROPPED
    assert ctx.usage.input_tokens == DemoUsage().input_tokens
    assert ctx.usage.final is False


async def test_upstream_drop_inside_an_event_leaves_the_stream_truncated(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    data = sse_bytes(message_events(model=MODEL))
    cut = data.index(b"content_block_delta") + 10
    fake_anthropic.queue(Reply(chunks=[data[:cut], data[cut:]], drop_after=1))
    contexts: Contexts = []
    client = await gateway(middlewares=(context_copies(contexts),))

    resp = await client.post("/v1/messages", json=STREAM_BODY, headers=HEADERS)
    received = await asyncio.wait_for(resp.read(), PROMPT)

    assert received == data[:cut]  # nothing appended to half an event
    (ctx,) = contexts
    assert ctx.outcome is Outcome.UPSTREAM_DROPPED


async def test_silent_upstream_mid_stream_times_out_with_an_error_event(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply(gates={3: asyncio.Event()}))
    contexts: Contexts = []
    cfg = _config(fake_anthropic, idle_timeout=0.3, disconnect_poll_interval=0.05)
    client = await gateway(cfg, middlewares=(context_copies(contexts),))

    resp = await client.post("/v1/messages", json=STREAM_BODY, headers=HEADERS)
    data = await asyncio.wait_for(resp.read(), PROMPT)

    assert _events(data) == ["message_start", "content_block_start", "ping", "error"]
    (ctx,) = contexts
    assert ctx.outcome is Outcome.TIMEOUT
    await _wait_for(lambda: fake_anthropic.client_disconnects == 1)


async def test_upstream_that_never_answers_is_a_504_envelope(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply(first_byte_delay=30))
    contexts: Contexts = []
    cfg = _config(fake_anthropic, first_byte_timeout=0.3, disconnect_poll_interval=0.05)
    client = await gateway(cfg, middlewares=(context_copies(contexts),))

    started = time.monotonic()
    resp = await client.post("/v1/messages", json=BODY, headers=HEADERS)

    assert time.monotonic() - started < PROMPT
    assert resp.status == 504
    body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    (ctx,) = contexts
    assert ctx.outcome is Outcome.TIMEOUT


async def test_unreachable_upstream_is_a_502_envelope_naming_no_address(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = await gateway(_config(f"http://127.0.0.1:{port}"))

    resp = await client.post("/v1/messages", json=BODY, headers=HEADERS)

    assert resp.status == 502
    text = await resp.text()
    body = json.loads(text)
    assert body["error"]["type"] == "api_error"
    assert "127.0.0.1" not in text and str(port) not in text
    assert fake_anthropic.requests == []


async def test_retryable_status_before_first_byte_falls_over_to_the_next_deployment(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.queue(Reply.overloaded(), Reply(text="from the second"))

    @web.middleware
    async def two_candidates(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Stands in for routing: the same upstream twice, under two deployment names.
        provider = AnthropicProvider(name="anthropic", base_url=str(fake_anthropic.url))
        get_context(request).candidates = [
            Deployment(name="first", provider=provider),
            Deployment(name="second", provider=provider, model="claude-other"),
        ]
        return await handler(request)

    contexts: Contexts = []
    client = await gateway(middlewares=(context_copies(contexts), two_candidates))

    resp = await client.post("/v1/messages", json=BODY, headers=HEADERS)

    assert resp.status == 200
    assert (await resp.json())["content"][0]["text"] == "from the second"
    assert [r.json()["model"] for r in fake_anthropic.requests] == [MODEL, "claude-other"]
    (ctx,) = contexts
    assert [(a.deployment, a.status) for a in ctx.attempts] == [("first", 529), ("second", 200)]
    assert ctx.deployment is not None and ctx.deployment.name == "second"
    assert ctx.upstream_model == "claude-other"


# --- client disconnects ----------------------------------------------------------------------

cancellation = pytest.mark.parametrize(
    "handler_cancellation", [False, True], ids=["serve-default", "cancelling"]
)


@cancellation
async def test_client_leaving_mid_stream_closes_upstream_and_records_partial_usage(
    fake_anthropic: FakeAnthropic, handler_cancellation: bool
) -> None:
    usage = DemoUsage(input_tokens=40, output_tokens=999, cache_creation_1h=300, cache_read=7)
    held = asyncio.Event()
    fake_anthropic.queue(Reply(text="word " * 120, usage=usage, gates={10: held}))
    contexts: Contexts = []
    app = make_app(_config(fake_anthropic), middlewares=(context_copies(contexts),))

    async with serve(app, handler_cancellation=handler_cancellation) as url:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(url / "v1/messages", json=STREAM_BODY, headers=HEADERS)
            for _ in range(10):
                await resp.content.readuntil(b"\n\n")
            left = time.monotonic()
            resp.close()
        await asyncio.wait_for(fake_anthropic.client_disconnected.wait(), PROMPT)
        assert time.monotonic() - left < PROMPT
        await _wait_for(lambda: len(contexts) == 1)

    assert fake_anthropic.open_streams == 0
    assert fake_anthropic.completed_streams == 0
    (ctx,) = contexts
    assert ctx.outcome is Outcome.CLIENT_DISCONNECTED
    assert ctx.usage.input_tokens == 40
    assert ctx.usage.cache_creation_1h_tokens == 300
    assert ctx.usage.cache_read_input_tokens == 7
    assert ctx.usage.final is False
    assert ctx.usage.estimated is True
    assert 0 < ctx.usage.output_tokens < 999


@cancellation
async def test_client_leaving_during_a_silent_gap_closes_upstream_promptly(
    fake_anthropic: FakeAnthropic, handler_cancellation: bool
) -> None:
    fake_anthropic.queue(Reply(gates={3: asyncio.Event()}))
    contexts: Contexts = []
    app = make_app(_config(fake_anthropic), middlewares=(context_copies(contexts),))

    async with serve(app, handler_cancellation=handler_cancellation) as url:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(url / "v1/messages", json=STREAM_BODY, headers=HEADERS)
            for _ in range(3):
                await resp.content.readuntil(b"\n\n")
            await asyncio.sleep(0.3)  # the upstream is silent; nothing is being written
            left = time.monotonic()
            resp.close()
        await asyncio.wait_for(fake_anthropic.client_disconnected.wait(), PROMPT)
        assert time.monotonic() - left < PROMPT
        await _wait_for(lambda: len(contexts) == 1)

    assert contexts[0].outcome is Outcome.CLIENT_DISCONNECTED
    assert contexts[0].usage.input_tokens == DemoUsage().input_tokens


@cancellation
async def test_client_leaving_before_the_first_byte_closes_upstream_promptly(
    aiohttp_server: AiohttpServer, handler_cancellation: bool
) -> None:
    arrived, closed = asyncio.Event(), asyncio.Event()

    async def never_answers(request: web.Request) -> web.StreamResponse:
        arrived.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:  # the test server cancels us when the gateway hangs up
            closed.set()
            raise
        raise AssertionError("unreachable")

    upstream = web.Application()
    upstream.router.add_post("/v1/messages", never_answers)
    upstream_server = await aiohttp_server(upstream)
    contexts: Contexts = []
    app = make_app(_config(upstream_server.make_url("")), middlewares=(context_copies(contexts),))

    async with serve(app, handler_cancellation=handler_cancellation) as url:
        async with aiohttp.ClientSession() as session:
            request = asyncio.ensure_future(
                session.post(url / "v1/messages", json=STREAM_BODY, headers=HEADERS)
            )
            await asyncio.wait_for(arrived.wait(), PROMPT)
            left = time.monotonic()
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await request
        await asyncio.wait_for(closed.wait(), PROMPT)
        assert time.monotonic() - left < PROMPT
        await _wait_for(lambda: len(contexts) == 1)

    (ctx,) = contexts
    assert ctx.outcome is Outcome.CLIENT_DISCONNECTED
    assert ctx.usage.input_tokens == 0
