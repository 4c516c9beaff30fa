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
* Failover happens only before the client has a byte (:mod:`llmgw._attempts`).

Per chunk this is one read, the response adapter (usage tap, or translation) and one
write; silence, a gone client and pings are the watchdog's business, not the loop's. The
loop runs in the handler's own frame, not a helper's: every coroutine on an open stream's
await chain is held for as long as it lasts (~0.3-0.4 KB each, per open stream).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from ._attempts import first_answer
from ._pump import begin, end, finish, unread
from ._watchdog import Watchdog
from .auth.policy import ensure_model_allowed
from .config import UpstreamConfig
from .context import RequestContext, release_body, routed
from .errors import NotFoundError
from .keys import CONFIG, ROUTES, SESSION
from .log import relay_logger
from .routes import Deployment, RoutePolicy
from .routing.plan import AttemptPlan
from .translate import PassThrough
from .usage import Outcome

__all__ = ("relay", "resolve_candidates")


def _app_parts(
    request: web.Request, plan: AttemptPlan
) -> tuple[UpstreamConfig, aiohttp.ClientSession]:
    """The upstream timeouts for this route and the shared session, not held by the
    relay's frame for the stream. From the route's own app when it has them (the ready
    gateway), else up the chain of apps (a surface mounted as a sub-app): ``config_dict``
    builds a ChainMapProxy per access."""
    app = request.app
    config, session = app.get(CONFIG), app.get(SESSION)
    if config is None or session is None:
        chain = request.config_dict
        config, session = chain[CONFIG], chain[SESSION]
    return plan.upstream_config(config.upstream), session


def resolve_candidates(request: web.Request, ctx: RequestContext) -> list[Deployment]:
    """The deployments to try, from routing if it ran, else the app's route table.

    Also the one place every format passes after it knows the model, so the identity's
    model allow-list is enforced here for Bedrock and Vertex paths too.
    """
    ensure_model_allowed(ctx)
    if ctx.candidates:
        return ctx.candidates
    assert ctx.requested_model is not None
    route = ctx.route or request.config_dict[ROUTES].resolve(ctx.requested_model)
    if route is None:
        raise NotFoundError(f"model: {ctx.requested_model!r} is not served by this gateway")
    ctx.route = route
    ctx.candidates = [route.deployments[0]]
    return ctx.candidates


async def relay(
    request: web.Request, *, prepare: Callable[[web.Request], Awaitable[None]] | None = None
) -> web.StreamResponse:
    """Send the request described by the context upstream and stream the answer back.

    ``prepare`` runs first: a format's parsing of the request into the context. A route
    registered as ``functools.partial(relay, prepare=...)`` keeps no handler frame of its
    own alive for as long as the stream lasts (~0.2 KB per open stream).
    """
    if prepare is not None:
        await prepare(request)
    ctx = await routed(request)
    candidates = resolve_candidates(request, ctx)
    plan = ctx.routing
    if plan is None:
        plan = ctx.routing = AttemptPlan(policy=ctx.route.policy if ctx.route else RoutePolicy())
    cfg, session = _app_parts(request, plan)
    dog = Watchdog(request, cfg.disconnect_poll_interval)
    up: aiohttp.ClientResponse | web.StreamResponse | None = None
    try:
        up = await first_answer(request, session, ctx, candidates, plan, cfg, dog)
        if not isinstance(up, aiohttp.ClientResponse):
            return up
        release_body(ctx)  # answered: no failover can need the body now
        resp, adapter = await begin(request, ctx, up, cfg)
        if adapter is None:
            return resp
        # A plain pass-through hands each chunk to the client before its tap reads it: the
        # client's first byte does not wait for message_start to be parsed. The tap is fed
        # directly, not through the adapter (a call less per chunk).
        tap = adapter.tap if type(adapter) is PassThrough else None
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
                        return await end(ctx, resp, adapter, Outcome.CLIENT_DISCONNECTED)
                    if reason is dog.DEADLINE:
                        ctx.error = f"upstream silent for {idle:g}s"
                        out = adapter.error("api_error", "upstream timed out")
                        return await end(ctx, resp, adapter, Outcome.TIMEOUT, out)
                    try:
                        await resp.write(adapter.ping())
                    except ConnectionResetError:
                        return await end(ctx, resp, adapter, Outcome.CLIENT_DISCONNECTED)
                    dog.ping_at = time.monotonic() + ping_every if ping_every is not None else None
                    continue
                except (aiohttp.ClientError, OSError) as exc:
                    ctx.error = f"{type(exc).__name__}: {exc}"
                    relay_logger.warning("upstream dropped mid-stream: %s", ctx.error)
                    out = adapter.feed(unread(content))
                    if out:
                        if ctx.ttfb is None:
                            ctx.ttfb = time.monotonic() - ctx.started_mono
                        try:
                            await resp.write(out)
                        except ConnectionResetError:
                            return await end(ctx, resp, adapter, Outcome.CLIENT_DISCONNECTED)
                        ctx.bytes_out += len(out)
                    out = adapter.error("api_error", "upstream connection lost mid-stream")
                    return await end(ctx, resp, adapter, Outcome.UPSTREAM_DROPPED, out)
                finally:
                    dog.armed = False
                if not chunk:
                    if tap is not None:  # no tail: the client's EOF, then the tap's last look
                        return await end(ctx, resp, adapter, Outcome.COMPLETE, close_after_eof=True)
                    return await end(ctx, resp, adapter, Outcome.COMPLETE, adapter.close())
                now = time.monotonic()
                dog.deadline = now + idle
                out = chunk if tap is not None else adapter.feed(chunk)
                if not out:
                    continue
                if ctx.ttfb is None:
                    ctx.ttfb = now - ctx.started_mono
                if tap is not None and content.at_eof():  # the last bytes go with the EOF
                    return await end(
                        ctx, resp, adapter, Outcome.COMPLETE, out, close_after_eof=True
                    )
                try:
                    try:
                        await resp.write(out)
                    finally:  # what arrived is accounted, delivered or not
                        if tap is not None:
                            tap.feed(chunk)
                except ConnectionResetError:
                    return await end(ctx, resp, adapter, Outcome.CLIENT_DISCONNECTED)
                ctx.bytes_out += len(out)
                if ping_every is not None:
                    dog.ping_at = now + ping_every
        except asyncio.CancelledError:
            # handler_cancellation=True: account what was seen, then let it unwind.
            if ctx.finished_mono is None:  # (not when it came while closing: accounted)
                adapter.close()
                finish(ctx, Outcome.CLIENT_DISCONNECTED, up.status)
            raise
    finally:
        dog.close()
        if isinstance(up, aiohttp.ClientResponse):
            _stream_over(ctx, up, plan)
        release_body(ctx)  # whatever the answer (an upstream's error, a 502, a 499...)


def _stream_over(ctx: RequestContext, up: aiohttp.ClientResponse, plan: AttemptPlan) -> None:
    """The upstream connection back to the pool when fully read, else closed (closing is
    what tells the provider to stop); the deployment's health and in-flight slot settled."""
    if ctx.outcome is Outcome.COMPLETE:
        up.release()
    else:
        up.close()
    assert ctx.deployment is not None
    if ctx.outcome in (Outcome.UPSTREAM_DROPPED, Outcome.TIMEOUT):
        plan.failed(ctx.deployment)
    plan.release(ctx.deployment)
