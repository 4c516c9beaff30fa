"""Copying one upstream response to the client: the per-chunk loop of the relay.

Per chunk this is one read, the response adapter (usage tap, or translation) and one
write; silence, a gone client and pings are the watchdog's business, not the loop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
from aiohttp import web

from ._watchdog import Watchdog
from .config import UpstreamConfig
from .context import RequestContext
from .headers import REQUEST_ID_HEADER, forward_response_headers
from .keys import ADAPTER_WRAPPER
from .log import relay_logger
from .routes import Deployment
from .translate import ResponseAdapter, response_adapter
from .usage import Outcome

__all__ = ("finish", "stream_response")


def finish(
    ctx: RequestContext, outcome: Outcome, status: int, error: str | None = None
) -> web.Response:
    ctx.outcome = outcome
    ctx.status = status
    ctx.error = error
    ctx.finished_mono = time.monotonic()
    return web.Response(status=status)


async def stream_response(
    request: web.Request,
    ctx: RequestContext,
    up: aiohttp.ClientResponse,
    deployment: Deployment,
    cfg: UpstreamConfig,
    dog: Watchdog,
) -> web.StreamResponse:
    # The answer is committed from here on (no failover builds another upstream call), so
    # the parsed request body goes: ~1.8x a Claude Code body of ~100 KB in Python objects,
    # held for as long as the stream lasts otherwise. ``raw_body`` stays (aiohttp keeps
    # those bytes on the request anyway).
    ctx.body = None
    content_type = up.headers.get("content-type", "application/json")
    adapter = response_adapter(
        ctx, deployment, content_type, headers=up.headers, ping_interval=cfg.ping_interval
    )
    wrap = request.get(ADAPTER_WRAPPER)
    if wrap is not None:  # audit body capture: a tap on exactly what the client is sent
        adapter = wrap(ctx, adapter)
    passthrough_length = adapter.content_type is None and "content-encoding" not in up.headers
    resp = web.StreamResponse(
        status=up.status,
        headers=forward_response_headers(up.headers, keep_length=passthrough_length),
    )
    resp.headers[REQUEST_ID_HEADER] = ctx.request_id  # the errors middleware is too late
    if adapter.content_type is not None:
        resp.headers["content-type"] = adapter.content_type
    ctx.status = up.status
    try:
        await resp.prepare(request)
    except ConnectionResetError:
        ctx.usage = adapter.usage
        finish(ctx, Outcome.CLIENT_DISCONNECTED, up.status)
        return resp
    try:
        outcome = await _pump(ctx, up, resp, adapter, cfg, dog)
    except asyncio.CancelledError:
        # handler_cancellation=True: account what was seen, then let the cancellation unwind.
        adapter.close()
        ctx.usage = adapter.usage
        finish(ctx, Outcome.CLIENT_DISCONNECTED, up.status)
        raise
    ctx.usage = adapter.usage
    ctx.outcome = outcome
    ctx.finished_mono = time.monotonic()
    if outcome is not Outcome.CLIENT_DISCONNECTED:
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
    return resp


async def _pump(
    ctx: RequestContext,
    up: aiohttp.ClientResponse,
    resp: web.StreamResponse,
    adapter: ResponseAdapter,
    cfg: UpstreamConfig,
    dog: Watchdog,
) -> Outcome:
    """Copy until EOF, a drop, a timeout or a gone client; returns how it ended.

    Per chunk this is one read, the adapter and one write: the watchdog, not a timeout
    per read, handles silence (idle limit, pings) and a client that left.
    """
    content = up.content
    idle = cfg.idle_timeout
    ping_every = adapter.ping_interval
    now = time.monotonic()
    dog.deadline = now + idle
    dog.ping_at = None if ping_every is None else now + ping_every
    try:
        while True:
            # Reads and writes sit in separate try blocks: ClientConnectionResetError is
            # both a ClientError and a ConnectionResetError, so *where* it came from tells
            # which side failed.
            dog.armed = True
            try:
                chunk = await content.readany()
            except asyncio.CancelledError:
                reason = dog.interrupted()
                if reason is None:
                    raise
                if reason is dog.GONE:
                    adapter.close()
                    return Outcome.CLIENT_DISCONNECTED
                if reason is dog.DEADLINE:
                    ctx.error = f"upstream silent for {idle:g}s"
                    out = adapter.error("api_error", "upstream timed out")
                    return await _write_final(resp, out, Outcome.TIMEOUT)
                try:
                    await resp.write(adapter.ping())
                except ConnectionResetError:
                    adapter.close()
                    return Outcome.CLIENT_DISCONNECTED
                dog.ping_at = time.monotonic() + ping_every if ping_every is not None else None
                continue
            except (aiohttp.ClientError, OSError) as exc:
                ctx.error = f"{type(exc).__name__}: {exc}"
                relay_logger.warning("upstream dropped mid-stream: %s", ctx.error)
                out = adapter.feed(_unread(content))
                if out:
                    if ctx.ttfb is None:
                        ctx.ttfb = time.monotonic() - ctx.started_mono
                    if await _write_final(resp, out, Outcome.COMPLETE) is (
                        Outcome.CLIENT_DISCONNECTED
                    ):
                        adapter.close()
                        return Outcome.CLIENT_DISCONNECTED
                    ctx.bytes_out += len(out)
                out = adapter.error("api_error", "upstream connection lost mid-stream")
                return await _write_final(resp, out, Outcome.UPSTREAM_DROPPED)
            finally:
                dog.armed = False
            if not chunk:
                out = adapter.close()
                return await _write_final(resp, out, Outcome.COMPLETE)
            now = time.monotonic()
            dog.deadline = now + idle
            out = adapter.feed(chunk)
            if not out:
                continue
            if ctx.ttfb is None:
                ctx.ttfb = now - ctx.started_mono
            try:
                await resp.write(out)
            except ConnectionResetError:
                adapter.close()
                return Outcome.CLIENT_DISCONNECTED
            ctx.bytes_out += len(out)
            if ping_every is not None:
                dog.ping_at = now + ping_every
    finally:
        dog.deadline = dog.ping_at = None


def _unread(content: aiohttp.StreamReader) -> bytes:
    """Bytes the upstream sent before it dropped that the relay had not read yet.

    aiohttp's readers raise the stored payload error *before* returning what is still
    buffered, so without this a drop also swallows the events that did arrive, and with
    them the usage in ``message_start``. Private API, hence the defensive access.
    """
    if not getattr(content, "_buffer", None):
        return b""
    try:
        return content._read_nowait(-1)
    except Exception:  # never let salvaging turn a drop into a crash
        return b""


async def _write_final(resp: web.StreamResponse, data: bytes, outcome: Outcome) -> Outcome:
    if not data:
        return outcome
    try:
        await resp.write(data)
    except ConnectionResetError:
        return Outcome.CLIENT_DISCONNECTED
    return outcome
