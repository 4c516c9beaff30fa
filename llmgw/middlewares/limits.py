"""Budgets and rate limits: reserve the worst case before forwarding, settle after.

Install after authentication (it reads ``ctx.identity``) and after routing (it prices the
routed model); it also works alone, pricing the requested model. A refused request never
reaches an upstream. The exit half runs once the client has the whole answer (the relay
calls ``write_eof()``) and settles whatever the outcome: completed, client gone, upstream
failed, or an exception.

Rate-limit state and soft-budget warnings ride on response headers; in an application
not built by ``make_app``, add :func:`limits_response_headers` to ``on_response_prepare``
to get them on successful answers (refusals carry theirs either way).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ..context import RequestContext, get_body, get_context, routed
from ..keys import ROUTES
from ..limits.limiter import Limiter, Reservation
from ..typedefs import Handler, Middleware
from ..usage import Outcome

__all__ = ("is_model_request", "limits_middleware", "limits_response_headers")

_RESERVATION = "llmgw.limits"
_MODEL_SUFFIXES = (
    "/v1/messages",
    "/invoke",
    "/invoke-with-response-stream",
    ":rawPredict",
    ":streamRawPredict",
)
_COUNT_MARKERS = ("count_tokens", "count-tokens")


def is_model_request(request: web.Request) -> bool:
    """A POST that asks a model for something (messages or token counting, any format)."""
    if request.method != "POST":
        return False
    path = request.path
    return path.endswith(_MODEL_SUFFIXES) or any(m in path for m in _COUNT_MARKERS)


def limits_middleware(
    limiter: Limiter, *, applies: Callable[[web.Request], bool] = is_model_request
) -> Middleware:
    """Enforce ``limiter``'s limits on requests ``applies`` selects.

    Settling runs after the response, off the request's path; an application that builds
    its own limiter awaits :meth:`~llmgw.limits.limiter.Limiter.drain` at shutdown before
    closing the counters (``limits_ctx`` does).
    """

    @web.middleware
    async def _limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not applies(request):
            return await handler(request)
        ctx = await routed(request)  # a reservation is priced for the routed models
        body = await get_body(request)
        full = not any(m in request.path for m in _COUNT_MARKERS)
        try:
            res = await limiter.reserve(ctx, body, _models(request, ctx, body), full=full)
        except web.HTTPException as exc:
            ctx.outcome = Outcome.REFUSED
            ctx.status = exc.status
            ctx.error = getattr(exc, "message", exc.reason)
            raise
        if res is None:
            return await handler(request)
        ctx.extras[_RESERVATION] = res
        try:
            return await handler(request)
        finally:
            limiter.settle_soon(res, ctx)

    return _limits


async def limits_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: the gateway's rate-limit headers replace the upstream's."""
    ctx = get_context(request)
    res: Reservation | None = ctx.extras.get(_RESERVATION)
    if res is not None:
        for name, value in res.headers.items():
            response.headers[name] = value


def _models(request: web.Request, ctx: RequestContext, body: dict[str, object]) -> list[str]:
    """Models the request may be sent to: routing's candidates, else the route table's
    deployments for the requested name, else the name itself."""
    requested = ctx.requested_model
    if requested is None:
        model = body.get("model")
        if not isinstance(model, str):
            model = request.match_info.get("model") or request.match_info.get("model_id")
        requested = model if isinstance(model, str) else None
    if ctx.candidates:
        return [d.model or requested or "" for d in ctx.candidates]
    if requested is None:
        return []
    table = request.config_dict.get(ROUTES)
    route = table.resolve(requested) if table is not None else None
    if route is not None:
        return [d.model or requested for d in route.deployments]
    return [requested]
