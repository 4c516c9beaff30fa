"""The streaming relay: forward one request upstream and copy the answer back as it comes.

Contract:

* Upstream bytes are written to the client chunk by chunk as they arrive; nothing waits
  for a whole response, and backpressure flows end to end (a slow client slows the
  upstream through TCP, with no queue in between).
* ``write_eof()`` is called here, so the client has its whole answer before metering,
  limits and audit run on the way out.
* A client that goes away is noticed even while the upstream is silent (a disconnect poll
  runs during every wait), and the upstream connection is closed at once, which is what
  stops the provider from generating (and billing) further.
* A stream the upstream cuts ends with an in-band ``error`` event, or is left truncated if
  it was cut inside an event; a ``message_stop`` is never invented.
* Whatever happens, ``ctx.usage`` and ``ctx.outcome`` are set before this returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
from aiohttp import web

from .config import UpstreamConfig
from .context import Attempt, RequestContext, get_context
from .errors import BadGatewayError, GatewayTimeoutError, NotFoundError
from .headers import forward_request_headers, forward_response_headers
from .keys import CONFIG, ROUTES, SESSION
from .log import relay_logger
from .routes import Deployment
from .translate import ResponseAdapter, build_call, response_adapter
from .usage import Outcome

__all__ = ("relay", "resolve_candidates")

_T = TypeVar("_T")

#: Largest upstream error body relayed; error bodies are small JSON objects.
_MAX_ERROR_BODY = 1 << 20
#: Statuses after which the next deployment (if any) is tried before the client sees a byte.
_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504, 529})


class _ClientGone(Exception):
    """The client's connection closed while the relay was waiting."""


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _watch(request: web.Request, aw: Awaitable[_T], *, poll: float, limit: float) -> _T:
    """Await ``aw`` but give up if the client leaves, or after ``limit`` seconds."""
    task = asyncio.ensure_future(aw)
    deadline = time.monotonic() + limit
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(poll, deadline - time.monotonic()))
            if done:
                return task.result()
            if _client_gone(request):
                raise _ClientGone
            if time.monotonic() >= deadline:
                raise TimeoutError
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def resolve_candidates(request: web.Request, ctx: RequestContext) -> list[Deployment]:
    """The deployments to try, from routing if it ran, else the app's route table."""
    if ctx.candidates:
        return ctx.candidates
    assert ctx.requested_model is not None
    route = ctx.route or request.config_dict[ROUTES].resolve(ctx.requested_model)
    if route is None:
        raise NotFoundError(f"model: {ctx.requested_model!r} is not served by this gateway")
    ctx.route = route
    ctx.candidates = [route.deployments[0]]
    return ctx.candidates


async def relay(request: web.Request) -> web.StreamResponse:
    """Send the request described by the context upstream and stream the answer back."""
    ctx = get_context(request)
    cfg = request.config_dict[CONFIG].upstream
    session = request.config_dict[SESSION]
    candidates = resolve_candidates(request, ctx)
    headers = forward_request_headers(request.headers)
    query = request.rel_url.raw_query_string
    last_error: web.Response | None = None
    for index, deployment in enumerate(candidates):
        is_last = index == len(candidates) - 1
        ctx.deployment = deployment
        call = build_call(ctx, deployment, headers, query)
        up_req = await deployment.provider.build(call)
        attempt = Attempt(deployment=deployment.name, provider=deployment.provider.name)
        ctx.attempts.append(attempt)
        t0 = time.monotonic()
        try:
            up = await _watch(
                request,
                session.request(
                    up_req.method,
                    up_req.url,
                    headers=up_req.headers,
                    data=up_req.body,
                    allow_redirects=False,
                ),
                poll=cfg.disconnect_poll_interval,
                limit=cfg.first_byte_timeout,
            )
        except _ClientGone:
            attempt.error = "client disconnected"
            return _finish(ctx, Outcome.CLIENT_DISCONNECTED, 499)
        except TimeoutError:
            attempt.error = "timeout waiting for the upstream's response"
            if not is_last:
                continue
            _finish(ctx, Outcome.TIMEOUT, 504, attempt.error)
            raise GatewayTimeoutError("the upstream did not answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
            relay_logger.warning("upstream %s unreachable: %s", deployment.name, attempt.error)
            if not is_last:
                continue
            _finish(ctx, Outcome.UPSTREAM_ERROR, 502, attempt.error)
            raise BadGatewayError("the upstream could not be reached") from None
        finally:
            attempt.duration = time.monotonic() - t0
        attempt.status = up.status
        if up.status >= 400:
            last_error = await _error_response(up, ctx)
            if up.status in _RETRYABLE and not is_last:
                continue
            return last_error
        try:
            return await _stream(request, ctx, up, deployment, cfg)
        finally:
            if ctx.outcome is Outcome.COMPLETE:
                up.release()  # fully read: the connection goes back to the pool
            else:
                up.close()  # cut short: closing is what tells the provider to stop
    assert last_error is not None  # unreachable: the last candidate always returns or raises
    return last_error


def _finish(
    ctx: RequestContext, outcome: Outcome, status: int, error: str | None = None
) -> web.Response:
    ctx.outcome = outcome
    ctx.status = status
    ctx.error = error
    ctx.finished_mono = time.monotonic()
    return web.Response(status=status)


async def _error_response(up: aiohttp.ClientResponse, ctx: RequestContext) -> web.Response:
    """The upstream's error, status, headers and body unmodified (bounded read)."""
    try:
        body = await up.content.read(_MAX_ERROR_BODY)
    except (aiohttp.ClientError, OSError):
        body = b""
    finally:
        up.release()
    ctx.outcome = Outcome.UPSTREAM_ERROR
    ctx.status = up.status
    ctx.error = body[:500].decode("utf-8", "replace")
    ctx.finished_mono = time.monotonic()
    return web.Response(status=up.status, body=body, headers=forward_response_headers(up.headers))


async def _stream(
    request: web.Request,
    ctx: RequestContext,
    up: aiohttp.ClientResponse,
    deployment: Deployment,
    cfg: UpstreamConfig,
) -> web.StreamResponse:
    content_type = up.headers.get("content-type", "application/json")
    adapter = response_adapter(ctx, deployment, content_type)
    passthrough_length = adapter.content_type is None and "content-encoding" not in up.headers
    resp = web.StreamResponse(
        status=up.status,
        headers=forward_response_headers(up.headers, keep_length=passthrough_length),
    )
    if adapter.content_type is not None:
        resp.headers["content-type"] = adapter.content_type
    ctx.status = up.status
    try:
        await resp.prepare(request)
    except ConnectionResetError:
        ctx.usage = adapter.usage
        _finish(ctx, Outcome.CLIENT_DISCONNECTED, up.status)
        return resp
    outcome = await _pump(request, ctx, up, resp, adapter, cfg)
    ctx.usage = adapter.usage
    ctx.outcome = outcome
    ctx.finished_mono = time.monotonic()
    if outcome is not Outcome.CLIENT_DISCONNECTED:
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
    return resp


async def _pump(
    request: web.Request,
    ctx: RequestContext,
    up: aiohttp.ClientResponse,
    resp: web.StreamResponse,
    adapter: ResponseAdapter,
    cfg: UpstreamConfig,
) -> Outcome:
    """Copy until EOF, a drop, a timeout or a gone client; returns how it ended."""
    content = up.content
    poll = cfg.disconnect_poll_interval
    ping_every = adapter.ping_interval
    last_data = last_write = time.monotonic()
    while True:
        # Reads and writes sit in separate try blocks: ClientConnectionResetError is both
        # a ClientError and a ConnectionResetError, so *where* it came from tells the side.
        try:
            async with asyncio.timeout(poll):
                chunk = await content.readany()
        except TimeoutError:
            now = time.monotonic()
            if _client_gone(request):
                adapter.close()
                return Outcome.CLIENT_DISCONNECTED
            if now - last_data >= cfg.idle_timeout:
                ctx.error = f"upstream silent for {cfg.idle_timeout:g}s"
                out = adapter.error("api_error", "upstream timed out")
                return await _write_final(resp, out, Outcome.TIMEOUT)
            if ping_every is not None and now - last_write >= ping_every:
                try:
                    await resp.write(adapter.ping())
                except ConnectionResetError:
                    adapter.close()
                    return Outcome.CLIENT_DISCONNECTED
                last_write = now
            continue
        except (aiohttp.ClientError, OSError) as exc:
            ctx.error = f"{type(exc).__name__}: {exc}"
            relay_logger.warning("upstream dropped mid-stream: %s", ctx.error)
            out = adapter.error("api_error", "upstream connection lost mid-stream")
            return await _write_final(resp, out, Outcome.UPSTREAM_DROPPED)
        if not chunk:
            out = adapter.close()
            return await _write_final(resp, out, Outcome.COMPLETE)
        last_data = time.monotonic()
        out = adapter.feed(chunk)
        if not out:
            continue
        if ctx.ttfb is None:
            ctx.ttfb = last_data - ctx.started_mono
        try:
            await resp.write(out)
        except ConnectionResetError:
            adapter.close()
            return Outcome.CLIENT_DISCONNECTED
        ctx.bytes_out += len(out)
        last_write = last_data


async def _write_final(resp: web.StreamResponse, data: bytes, outcome: Outcome) -> Outcome:
    if not data:
        return outcome
    try:
        await resp.write(data)
    except ConnectionResetError:
        return Outcome.CLIENT_DISCONNECTED
    return outcome
