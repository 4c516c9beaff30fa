"""Copying one upstream response to the client: the per-chunk loop of the relay.

Per chunk this is one read, the response adapter (usage tap, or translation) and one
write; silence, a gone client and pings are the watchdog's business, not the loop's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from ._watchdog import Watchdog
from .config import UpstreamConfig
from .context import RequestContext
from .headers import CONTENT_TYPE, REQUEST_ID_HEADER, forward_response_headers
from .log import relay_logger
from .routes import Deployment
from .translate import PassThrough, ResponseAdapter, response_adapter
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
    """Copy ``up`` to the client until EOF, a drop, a timeout or a gone client.

    Per chunk this is one read, the adapter and one write: the watchdog, not a timeout
    per read, handles silence (idle limit, pings) and a client that left. The loop runs in
    this frame, not a helper's: every frame on the await chain is held for as long as the
    stream lasts, ~0.3 KB each per open stream.
    """
    resp, adapter = await _begin(request, ctx, up, deployment, cfg)
    if adapter is None:
        return resp
    # A plain pass-through hands each chunk to the client before its tap reads it: the
    # client's first byte does not wait for message_start to be parsed. The tap is fed
    # directly, not through the adapter (a call less per chunk).
    tap_after: Callable[[bytes], object] | None = None
    if type(adapter) is PassThrough:
        tap_after = adapter.tap_feed
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
                    return await _end(ctx, resp, adapter, Outcome.CLIENT_DISCONNECTED)
                if reason is dog.DEADLINE:
                    ctx.error = f"upstream silent for {idle:g}s"
                    out = adapter.error("api_error", "upstream timed out")
                    return await _end(ctx, resp, adapter, Outcome.TIMEOUT, out)
                try:
                    await resp.write(adapter.ping())
                except ConnectionResetError:
                    return await _end(ctx, resp, adapter, Outcome.CLIENT_DISCONNECTED)
                dog.ping_at = time.monotonic() + ping_every if ping_every is not None else None
                continue
            except (aiohttp.ClientError, OSError) as exc:
                ctx.error = f"{type(exc).__name__}: {exc}"
                relay_logger.warning("upstream dropped mid-stream: %s", ctx.error)
                out = adapter.feed(_unread(content))
                if out:
                    if ctx.ttfb is None:
                        ctx.ttfb = time.monotonic() - ctx.started_mono
                    try:
                        await resp.write(out)
                    except ConnectionResetError:
                        return await _end(ctx, resp, adapter, Outcome.CLIENT_DISCONNECTED)
                    ctx.bytes_out += len(out)
                out = adapter.error("api_error", "upstream connection lost mid-stream")
                return await _end(ctx, resp, adapter, Outcome.UPSTREAM_DROPPED, out)
            finally:
                dog.armed = False
            if not chunk:
                if tap_after is not None:  # no tail: the client's EOF before the tap's last look
                    return await _end(ctx, resp, adapter, Outcome.COMPLETE, close_after_eof=True)
                return await _end(ctx, resp, adapter, Outcome.COMPLETE, adapter.close())
            now = time.monotonic()
            dog.deadline = now + idle
            out = chunk if tap_after is not None else adapter.feed(chunk)
            if not out:
                continue
            if ctx.ttfb is None:
                ctx.ttfb = now - ctx.started_mono
            try:
                try:
                    await resp.write(out)
                finally:  # what arrived is accounted, delivered or not
                    if tap_after is not None:
                        tap_after(chunk)
            except ConnectionResetError:
                return await _end(ctx, resp, adapter, Outcome.CLIENT_DISCONNECTED)
            ctx.bytes_out += len(out)
            if ping_every is not None:
                dog.ping_at = now + ping_every
    except asyncio.CancelledError:
        # handler_cancellation=True: account what was seen, then let the cancellation unwind.
        if ctx.finished_mono is None:  # (not when it came while closing: that is accounted)
            adapter.close()
            finish(ctx, Outcome.CLIENT_DISCONNECTED, up.status)
        raise
    finally:
        dog.deadline = dog.ping_at = None


async def _end(
    ctx: RequestContext,
    resp: web.StreamResponse,
    adapter: ResponseAdapter,
    outcome: Outcome,
    last: bytes = b"",
    *,
    close_after_eof: bool = False,
) -> web.StreamResponse:
    """Close the stream: ``last`` written (the adapter's tail or an in-band error), the
    outcome on the context (its usage is the adapter's since :func:`_begin`), and EOF
    unless the client is gone. A pass-through
    adapter, which has no tail, is closed after the EOF went out (``close_after_eof``)."""
    if outcome is Outcome.CLIENT_DISCONNECTED:
        adapter.close()
    elif last:
        try:
            await resp.write(last)
        except ConnectionResetError:
            outcome = Outcome.CLIENT_DISCONNECTED
    ctx.outcome = outcome
    ctx.finished_mono = time.monotonic()
    try:
        if outcome is not Outcome.CLIENT_DISCONNECTED:
            try:  # noqa: SIM105 (contextlib.suppress: an object and two calls per stream)
                await resp.write_eof()
            except ConnectionResetError:
                pass
    finally:
        if close_after_eof:
            adapter.close()
    return resp


async def _begin(
    request: web.Request,
    ctx: RequestContext,
    up: aiohttp.ClientResponse,
    deployment: Deployment,
    cfg: UpstreamConfig,
) -> tuple[web.StreamResponse, ResponseAdapter | None]:
    """The client's response prepared and the adapter that feeds it; no adapter when the
    client left before its headers went out."""
    content_type = up.headers.get("content-type", "application/json")
    adapter = response_adapter(
        ctx, deployment, content_type, headers=up.headers, ping_interval=cfg.ping_interval
    )
    if ctx.capture is not None:  # audit body capture: a tap on exactly what the client is sent
        adapter = ctx.capture(ctx, adapter)
    # The live usage from here on, whatever ends the stream; the context's own empty one
    # goes now, not at the end.
    ctx.usage = adapter.usage
    passthrough_length = adapter.content_type is None and "content-encoding" not in up.headers
    resp = web.StreamResponse(
        status=up.status,
        headers=forward_response_headers(up.headers, keep_length=passthrough_length),
    )
    resp.headers[REQUEST_ID_HEADER] = ctx.request_id  # the errors middleware is too late
    if adapter.content_type is not None:
        resp.headers[CONTENT_TYPE] = adapter.content_type
    ctx.status = up.status
    try:
        await resp.prepare(request)
    except ConnectionResetError:
        finish(ctx, Outcome.CLIENT_DISCONNECTED, up.status)
        return resp, None
    return resp, adapter


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
