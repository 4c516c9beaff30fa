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
* Failover happens only before the client has a byte: a connect error, a timeout or a
  retryable status (408/429/5xx/529) moves on to the next of ``ctx.candidates``, as the
  attempt plan (``ctx.routing``) allows, with backoff on retries. When all fail, the last
  upstream error response goes out unmodified. Every try is one ``ctx.attempts`` entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
from aiohttp import web

from .config import UpstreamConfig
from .context import Attempt, RequestContext, get_context
from .errors import (
    BadGatewayError,
    GatewayTimeoutError,
    LlmgwError,
    NotFoundError,
    OverloadedError,
)
from .headers import forward_request_headers, forward_response_headers
from .keys import ADAPTER_WRAPPER, CONFIG, ROUTES, SESSION
from .log import relay_logger
from .routes import Deployment, RoutePolicy
from .routing.plan import AttemptPlan
from .routing.retry import RETRYABLE_STATUSES, parse_retry_after
from .translate import ResponseAdapter, build_call, response_adapter, translate_error
from .usage import Outcome

__all__ = ("relay", "resolve_candidates")

_T = TypeVar("_T")

#: Largest upstream error body relayed; error bodies are small JSON objects.
_MAX_ERROR_BODY = 1 << 20
#: aiohttp's threshold for warning about a raw-bytes request body.
_LARGE_BODY = 1 << 20


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


def _payload(body: bytes) -> bytes | io.BytesIO:
    """The upstream body; over 1 MiB as a ``BytesIO``, which aiohttp writes in chunks
    (for raw bytes that large it emits a ``ResourceWarning``, an error under ``-W error``)."""
    return io.BytesIO(body) if len(body) > _LARGE_BODY else body


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
    session = request.config_dict[SESSION]
    candidates = resolve_candidates(request, ctx)
    plan = ctx.routing
    if plan is None:
        plan = ctx.routing = AttemptPlan(policy=ctx.route.policy if ctx.route else RoutePolicy())
    cfg = plan.upstream_config(request.config_dict[CONFIG].upstream)
    timeout = aiohttp.ClientTimeout(sock_connect=cfg.connect_timeout)
    headers = forward_request_headers(request.headers)
    query = request.rel_url.raw_query_string
    # The upstream error response to relay if every candidate fails, and who sent it;
    # failing that, the gateway's own 502/504 for the last connect error or timeout.
    last_error: tuple[web.Response, Deployment] | None = None
    last_exc: LlmgwError | None = None
    for deployment in candidates:
        wait = plan.before(deployment)
        if wait is None:
            continue
        if wait > 0:
            try:
                await _watch(
                    request,
                    asyncio.sleep(wait),
                    poll=cfg.disconnect_poll_interval,
                    limit=wait + 1.0,
                )
            except _ClientGone:
                return _finish(ctx, Outcome.CLIENT_DISCONNECTED, 499)
        if not plan.acquire(deployment):
            continue
        try:
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
                        data=_payload(up_req.body),
                        allow_redirects=False,
                        timeout=timeout,
                    ),
                    poll=cfg.disconnect_poll_interval,
                    limit=cfg.first_byte_timeout,
                )
            except _ClientGone:
                attempt.error = "client disconnected"
                return _finish(ctx, Outcome.CLIENT_DISCONNECTED, 499)
            except asyncio.CancelledError:
                # handler_cancellation=True: aiohttp cancels the handler when the client leaves.
                attempt.error = "client disconnected"
                _finish(ctx, Outcome.CLIENT_DISCONNECTED, 499)
                raise
            except TimeoutError:
                attempt.error = "timeout waiting for the upstream's response"
                plan.failed(deployment)
                last_exc = GatewayTimeoutError("the upstream did not answer in time")
                continue
            except (aiohttp.ClientError, OSError) as exc:
                attempt.error = f"{type(exc).__name__}: {exc}"
                relay_logger.warning("upstream %s unreachable: %s", deployment.name, attempt.error)
                plan.failed(deployment)
                last_exc = BadGatewayError("the upstream could not be reached")
                continue
            finally:
                attempt.duration = time.monotonic() - t0
            attempt.status = up.status
            if up.status in RETRYABLE_STATUSES:
                plan.failed(deployment, parse_retry_after(up.headers))
                last_error = (await _error_response(up, ctx), deployment)
                attempt.error = ctx.error
                continue
            plan.succeeded(deployment, attempt.duration)
            if up.status >= 400:
                return await _error_response(up, ctx)
            try:
                response = await _stream(request, ctx, up, deployment, cfg)
            finally:
                if ctx.outcome is Outcome.COMPLETE:
                    up.release()  # fully read: the connection goes back to the pool
                else:
                    up.close()  # cut short: closing is what tells the provider to stop
            if ctx.outcome in (Outcome.UPSTREAM_DROPPED, Outcome.TIMEOUT):
                plan.failed(deployment)
            return response
        finally:
            plan.release(deployment)
    if last_error is not None:
        # Every candidate failed: the last upstream error goes out as it came (status,
        # body, retry-after), so the client's own retry logic sees the real thing.
        response, ctx.deployment = last_error
        ctx.status = response.status
        ctx.outcome = Outcome.UPSTREAM_ERROR
        return response
    if last_exc is not None:
        outcome = Outcome.TIMEOUT if last_exc.status == 504 else Outcome.UPSTREAM_ERROR
        _finish(ctx, outcome, last_exc.status, ctx.attempts[-1].error)
        raise last_exc
    _finish(ctx, Outcome.REFUSED, 529, "every deployment is at its concurrency cap")
    raise OverloadedError(
        f"model: {ctx.requested_model}: every deployment is busy or out; retry shortly"
    )


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
    # Unchanged for a same-format upstream; in the client's envelope across formats.
    body, headers = translate_error(
        ctx, ctx.deployment, up.status, forward_response_headers(up.headers), body
    )
    return web.Response(status=up.status, body=body, headers=headers)


async def _stream(
    request: web.Request,
    ctx: RequestContext,
    up: aiohttp.ClientResponse,
    deployment: Deployment,
    cfg: UpstreamConfig,
) -> web.StreamResponse:
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
    if adapter.content_type is not None:
        resp.headers["content-type"] = adapter.content_type
    ctx.status = up.status
    try:
        await resp.prepare(request)
    except ConnectionResetError:
        ctx.usage = adapter.usage
        _finish(ctx, Outcome.CLIENT_DISCONNECTED, up.status)
        return resp
    try:
        outcome = await _pump(request, ctx, up, resp, adapter, cfg)
    except asyncio.CancelledError:
        # handler_cancellation=True: account what was seen, then let the cancellation unwind.
        adapter.close()
        ctx.usage = adapter.usage
        _finish(ctx, Outcome.CLIENT_DISCONNECTED, up.status)
        raise
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
            out = adapter.feed(_unread(content))
            if out:
                if ctx.ttfb is None:
                    ctx.ttfb = time.monotonic() - ctx.started_mono
                if await _write_final(resp, out, Outcome.COMPLETE) is Outcome.CLIENT_DISCONNECTED:
                    adapter.close()
                    return Outcome.CLIENT_DISCONNECTED
                ctx.bytes_out += len(out)
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
