"""Authenticate every request: gateway credential → ``ctx.identity``, then the model
allow-list.

Credentials (PROTOCOLS.md §1.5): ``x-api-key`` (``ANTHROPIC_API_KEY``), ``Authorization:
Bearer`` (``ANTHROPIC_AUTH_TOKEN``), or both with the same value (``apiKeyHelper``). Two
different values are refused rather than guessed between. Missing, unknown, revoked or
expired credentials are a 401 ``authentication_error`` whose message names both headers
(Claude Code tells users to switch to ``ANTHROPIC_API_KEY`` when it sees ``x-api-key``).

The allow-list is checked here when the model is known before the handler runs: the
context's ``requested_model``, a ``{model}`` path parameter (Bedrock/Vertex routes), or the
``model`` of an Anthropic Messages body (read once via ``get_body``). A denied model is a
400 ``invalid_request_error`` (gateway mode's documented answer, §6a). Handlers that learn the
model later call :func:`llmgw.auth.policy.ensure_model_allowed` themselves.

Order: after ``errors_middleware``, before routing, limits and metering (they read
``ctx.identity``). Exempt: ``HEAD``/``GET .../api/hello`` and every route of a sub-app that
sets :data:`~llmgw.keys.AUTH_EXEMPT` (the admin API, which has its own credential).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ..auth.authenticator import Authenticator
from ..auth.policy import ensure_model_allowed
from ..auth.throttle import FailureThrottle
from ..context import RequestContext, get_body, get_context
from ..errors import AuthenticationError, RateLimitError
from ..keys import AUTH_EXEMPT
from ..typedefs import Handler, Middleware

__all__ = ("auth_middleware", "default_exempt", "presented_credential")

_MISSING = (
    "missing API key: send the gateway key in the x-api-key header or as "
    "Authorization: Bearer (ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN)"
)
_CONFLICT = (
    "x-api-key and Authorization: Bearer carry different credentials; "
    "send one of them, or the same key in both"
)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="llmgw"'}
_MESSAGES_SUFFIXES = ("/v1/messages", "/v1/messages/count_tokens")


def presented_credential(request: web.Request) -> str:
    """The one credential the request carries, or a 401 naming both headers."""
    values = set(request.headers.getall("x-api-key", ()))
    for header in request.headers.getall("Authorization", ()):
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer":
            values.add(token.strip())
    values.discard("")
    if not values:
        raise AuthenticationError(_MISSING, headers=_CHALLENGE)
    if len(values) > 1:
        raise AuthenticationError(_CONFLICT, headers=_CHALLENGE)
    return values.pop()


def default_exempt(request: web.Request) -> bool:
    """Claude Code's warm-up probe and sub-apps marked :data:`~llmgw.keys.AUTH_EXEMPT`."""
    if request.method in ("HEAD", "GET") and request.path.endswith("/api/hello"):
        return True
    return any(app.get(AUTH_EXEMPT, False) for app in request.match_info.apps)


async def _requested_model(request: web.Request, ctx: RequestContext) -> str | None:
    if ctx.requested_model is not None:
        return ctx.requested_model
    model = request.match_info.get("model")
    if model:
        return model
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else ""
    if request.method == "POST" and path.endswith(_MESSAGES_SUFFIXES):
        found = (await get_body(request)).get("model")
        return found if isinstance(found, str) else None
    return None


def auth_middleware(
    authenticator: Authenticator,
    *,
    throttle: FailureThrottle | None = None,
    exempt: Callable[[web.Request], bool] = default_exempt,
) -> Middleware:
    """Put the caller's :class:`~llmgw.context.Identity` on the context or refuse.

    ``throttle`` counts failed credentials per ``request.remote`` (put aiohttp-remotes'
    forwarded-header handling in front when behind a proxy) and answers 429 with
    ``Retry-After`` once an address is over its budget, without checking what it sends.
    """

    @web.middleware
    async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if exempt(request):
            return await handler(request)
        address = request.remote or ""
        if throttle is not None:
            wait = throttle.retry_after(address)
            if wait is not None:
                raise RateLimitError(
                    "too many failed authentication attempts from this address", retry_after=wait
                )
        credential = presented_credential(request)
        try:
            identity = await authenticator.authenticate(credential)
        except AuthenticationError as exc:
            if throttle is not None:
                throttle.failed(address)
            exc.headers.update(_CHALLENGE)
            raise
        ctx = get_context(request)
        ctx.identity = identity
        if identity.allowed_models is not None:
            ensure_model_allowed(ctx, await _requested_model(request, ctx))
        return await handler(request)

    return _auth
