"""Getting an upstream to answer: the attempts before the client has a byte.

A connect error, a timeout or a retryable status (408/429/5xx/529) moves on to the next of
the candidates, as the attempt plan (``ctx.routing``) allows, with backoff on retries.
When all fail, the last upstream error response goes out unmodified, so the client's own
retry logic sees the real thing. Every try is one ``ctx.attempts`` entry.

Kept apart from the relay's own frame on purpose: everything here has returned before the
stream starts, so none of it is held for as long as a stream lasts.
"""

from __future__ import annotations

import asyncio
import functools
import io
import time

import aiohttp
from aiohttp import web

from ._pump import finish
from ._watchdog import ClientGone, Watchdog
from .config import UpstreamConfig
from .context import Attempt, RequestContext
from .errors import BadGatewayError, GatewayTimeoutError, LlmgwError, OverloadedError
from .headers import forward_request_headers, forward_response_headers
from .log import relay_logger
from .routes import Deployment
from .routing.plan import AttemptPlan
from .routing.retry import RETRYABLE_STATUSES, parse_retry_after
from .translate import build_call, translate_error
from .usage import Outcome

__all__ = ("first_answer",)

#: Largest upstream error body relayed; error bodies are small JSON objects.
_MAX_ERROR_BODY = 1 << 20
#: aiohttp's threshold for warning about a raw-bytes request body.
_LARGE_BODY = 1 << 20


@functools.lru_cache(maxsize=16)
def _connect_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """The upstream call's timeout (connect only: streams are long), one object per value."""
    return aiohttp.ClientTimeout(sock_connect=seconds)


def _payload(body: bytes) -> bytes | io.BytesIO:
    """The upstream body; over 1 MiB as a ``BytesIO``, which aiohttp writes in chunks
    (for raw bytes that large it emits a ``ResourceWarning``, an error under ``-W error``)."""
    return io.BytesIO(body) if len(body) > _LARGE_BODY else body


class _TryNext(Exception):
    """This deployment failed before the client saw a byte; the next one may serve."""

    def __init__(self, failure: LlmgwError | web.Response) -> None:
        super().__init__()
        #: The gateway's own 502/504, or the upstream's error response to relay as it came.
        self.failure = failure


async def first_answer(
    request: web.Request,
    session: aiohttp.ClientSession,
    ctx: RequestContext,
    candidates: list[Deployment],
    plan: AttemptPlan,
    cfg: UpstreamConfig,
    dog: Watchdog,
) -> aiohttp.ClientResponse | web.StreamResponse:
    """The first upstream response worth streaming, from ``candidates`` tried in order; or
    the client's final answer (an upstream's error as it came, the gateway's 502/504/529,
    the 499 of a client that left).

    With an upstream response, ``ctx.deployment`` gave it and still holds its in-flight
    slot in ``plan``: the caller releases it once the stream is over.
    """
    # An upstream's own error response outranks the gateway's 502/504: when every
    # deployment fails, the client gets the last thing an upstream actually said.
    failure: LlmgwError | web.Response | None = None
    failed_on: Deployment | None = None
    for deployment in candidates:
        wait = plan.before(deployment)
        if wait is None:  # cooling down or over its cap, and others remain
            continue
        if wait > 0:
            try:
                await dog.wait(asyncio.sleep(wait))
            except ClientGone:
                return finish(ctx, Outcome.CLIENT_DISCONNECTED, 499)
        if not plan.acquire(deployment):
            continue
        streaming = False
        try:
            up = await _call_upstream(request, session, ctx, deployment, plan, cfg, dog)
            # (not isinstance(up, web.StreamResponse): an ABC, so a slow check)
            streaming = isinstance(up, aiohttp.ClientResponse)
            return up
        except _TryNext as exc:
            # (LlmgwError is itself a web.Response, hence the explicit checks.)
            upstream_said = not isinstance(exc.failure, LlmgwError)
            if upstream_said or failure is None or isinstance(failure, LlmgwError):
                failure, failed_on = exc.failure, deployment
        finally:
            if not streaming:
                plan.release(deployment)
    if failure is not None:
        ctx.deployment = failed_on
    return _every_deployment_failed(ctx, failure)


async def _call_upstream(
    request: web.Request,
    session: aiohttp.ClientSession,
    ctx: RequestContext,
    deployment: Deployment,
    plan: AttemptPlan,
    cfg: UpstreamConfig,
    dog: Watchdog,
) -> aiohttp.ClientResponse | web.StreamResponse:
    """One try against one deployment: the upstream's answer to stream, or the client's
    final answer (an error to relay as it came, or the 499 of a client that left). Raises
    :class:`_TryNext` while failing over is still possible (nothing sent to the client yet)."""
    ctx.deployment = deployment
    # Built per attempt and held by no local: aiohttp copies the headers as it starts, so
    # ours go then, not when the upstream answers (~0.4 KB per request being connected).
    call = build_call(
        ctx, deployment, forward_request_headers(request.headers), request.rel_url.raw_query_string
    )
    # Nothing below reads the parsed body (``get_body`` parses ``raw_body`` again for a
    # failover that needs it): ~1.8x a Claude Code body of ~100 KB in Python objects, not
    # held while the upstream connects and streams.
    ctx.body = None
    up_req = await deployment.provider.build(call)
    del call
    sending = session.request(
        up_req.method,
        up_req.url,
        headers=up_req.headers,
        data=_payload(up_req.body),
        allow_redirects=False,
        timeout=_connect_timeout(cfg.connect_timeout),
    )
    del up_req
    attempt = Attempt(deployment=deployment.name, provider=deployment.provider.name)
    ctx.attempts.append(attempt)
    t0 = time.monotonic()
    try:
        up = await dog.wait(sending, limit=cfg.first_byte_timeout)
    except ClientGone:
        attempt.error = "client disconnected"
        return finish(ctx, Outcome.CLIENT_DISCONNECTED, 499)
    except asyncio.CancelledError:
        # handler_cancellation=True: aiohttp cancels the handler when the client leaves.
        attempt.error = "client disconnected"
        finish(ctx, Outcome.CLIENT_DISCONNECTED, 499)
        raise
    except TimeoutError:
        attempt.error = "timeout waiting for the upstream's response"
        plan.failed(deployment)
        raise _TryNext(GatewayTimeoutError("the upstream did not answer in time")) from None
    except (aiohttp.ClientError, OSError) as exc:
        attempt.error = f"{type(exc).__name__}: {exc}"
        relay_logger.warning("upstream %s unreachable: %s", deployment.name, attempt.error)
        plan.failed(deployment)
        raise _TryNext(BadGatewayError("the upstream could not be reached")) from None
    finally:
        attempt.duration = time.monotonic() - t0
    attempt.status = up.status
    if up.status in RETRYABLE_STATUSES:
        plan.failed(deployment, parse_retry_after(up.headers))
        error_response = await _error_response(up, ctx)
        attempt.error = ctx.error
        raise _TryNext(error_response)
    plan.succeeded(deployment, attempt.duration)
    if up.status >= 400:
        return await _error_response(up, ctx)
    return up


def _every_deployment_failed(
    ctx: RequestContext, failure: LlmgwError | web.Response | None
) -> web.Response:
    """The answer once no candidate served: the last upstream error exactly as it came
    (status, body, ``retry-after``) so the client's own retry logic sees the real thing;
    else the gateway's own 502/504; else 529 when every deployment was at its cap."""
    if isinstance(failure, LlmgwError):
        outcome = Outcome.TIMEOUT if failure.status == 504 else Outcome.UPSTREAM_ERROR
        finish(ctx, outcome, failure.status, ctx.attempts[-1].error if ctx.attempts else None)
        raise failure
    if failure is not None:
        ctx.status = failure.status
        ctx.outcome = Outcome.UPSTREAM_ERROR
        return failure
    finish(ctx, Outcome.REFUSED, 529, "every deployment is at its concurrency cap")
    raise OverloadedError(
        f"model: {ctx.requested_model}: every deployment is busy or out; retry shortly"
    )


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
