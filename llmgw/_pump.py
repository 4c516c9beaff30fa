"""The steps around the relay's per-chunk loop: the client's response prepared with the
adapter that feeds it (:func:`begin`), the stream closed (:func:`end`), the bytes an
upstream sent before it dropped (:func:`unread`). The loop itself runs in the relay's frame.
"""

from __future__ import annotations

import time

import aiohttp
from aiohttp import web

from .config import UpstreamConfig
from .context import RequestContext
from .headers import CONTENT_TYPE, REQUEST_ID_HEADER, forward_response_headers
from .translate import PassThrough, ResponseAdapter, response_adapter
from .usage import Outcome

__all__ = ("begin", "end", "finish", "unread")


def finish(
    ctx: RequestContext, outcome: Outcome, status: int, error: str | None = None
) -> web.Response:
    ctx.outcome = outcome
    ctx.status = status
    ctx.error = error
    ctx.finished_mono = time.monotonic()
    return web.Response(status=status)


async def end(
    ctx: RequestContext,
    resp: web.StreamResponse,
    adapter: ResponseAdapter,
    outcome: Outcome,
    last: bytes = b"",
    *,
    close_after_eof: bool = False,
) -> web.StreamResponse:
    """Close the stream: ``last`` (the adapter's tail, an in-band error, or a pass-through's
    final chunk) written with the EOF in one write unless the client is gone, and the
    outcome on the context (its usage is the adapter's since :func:`begin`). A pass-through
    adapter is fed ``last`` and closed after the EOF went out (``close_after_eof``): its
    tap's reading never delays the client's last byte."""
    if outcome is Outcome.CLIENT_DISCONNECTED:
        adapter.close()
    ctx.outcome = outcome
    ctx.finished_mono = time.monotonic()
    try:
        if outcome is not Outcome.CLIENT_DISCONNECTED:
            try:
                await resp.write_eof(last)
                ctx.bytes_out += len(last)
            except ConnectionResetError:
                if last:  # the client left before the end of the stream reached it
                    ctx.outcome = Outcome.CLIENT_DISCONNECTED
    finally:
        if close_after_eof:
            if last:
                adapter.feed(last)
            adapter.close()
    return resp


async def begin(
    request: web.Request, ctx: RequestContext, up: aiohttp.ClientResponse, cfg: UpstreamConfig
) -> tuple[web.StreamResponse, ResponseAdapter | None]:
    """The client's response prepared and the adapter that feeds it; no adapter when the
    client left before its headers went out."""
    assert ctx.deployment is not None
    content_type = up.headers.get("content-type", "application/json")
    adapter = response_adapter(
        ctx, ctx.deployment, content_type, headers=up.headers, ping_interval=cfg.ping_interval
    )
    if ctx.capture is not None:  # audit body capture: a tap on exactly what the client is sent
        adapter = ctx.capture(ctx, adapter)
    # The live usage from here on, whatever ends the stream; the context's own empty one
    # goes now, not at the end.
    ctx.usage = adapter.usage
    passthrough_length = adapter.content_type is None and "content-encoding" not in up.headers
    # When the upstream's first bytes came with its headers (they usually do) and go out
    # unchanged, the client's headers wait for them: one write and one packet for both.
    held = type(adapter) is PassThrough and up.content.total_bytes > 0
    resp = (_HeadersWithFirstChunk if held else web.StreamResponse)(
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


class _HeadersWithFirstChunk(web.StreamResponse):
    """Headers sent with the first write, as aiohttp's ``web.Response`` sends them; only
    for a response whose first chunk is already waiting to be written."""

    _send_headers_immediately = False


def unread(content: aiohttp.StreamReader) -> bytes:
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
