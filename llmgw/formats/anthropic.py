"""The Anthropic Messages surface: ``/v1/messages``, ``count_tokens``, ``/v1/models``.

Only what routing needs is checked here (a JSON object with a string ``model``); every
other field is the upstream's to judge, so new API fields pass through untouched.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from functools import partial

from aiohttp import web

from ..auth.policy import model_allowed
from ..context import get_body, get_context
from ..errors import InvalidRequestError
from ..keys import ROUTES
from ..relay import relay
from ..typedefs import ApiFormat, Operation

__all__ = ("add_anthropic_routes", "anthropic_app", "list_models")


async def _prepare(request: web.Request, operation: Operation) -> None:
    ctx = get_context(request)
    # Parsed already when a middleware read it (limits, auth's model check): no coroutine.
    body = ctx.body if ctx.body is not None else await get_body(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("model: field required and must be a non-empty string")
    ctx.client_format = ApiFormat.ANTHROPIC
    ctx.operation = operation
    ctx.requested_model = sys.intern(model)  # one string per model, not per open stream
    ctx.stream = operation is Operation.MESSAGES and body.get("stream") is True


#: ``POST /v1/messages``, streaming or not, and ``POST /v1/messages/count_tokens``.
messages = partial(relay, prepare=partial(_prepare, operation=Operation.MESSAGES))
count_tokens = partial(relay, prepare=partial(_prepare, operation=Operation.COUNT_TOKENS))


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: the names this gateway routes, in the Anthropic list shape.

    Every concrete route name and alias a client may send (patterns cannot be listed), the
    route's configured ``display_name`` on its main name, filtered by the caller's allowed
    models when authentication resolved an identity. Claude Code's model discovery keeps
    only ids containing ``claude`` or ``anthropic``, so name routes accordingly.
    """
    identity = get_context(request).identity
    epoch = datetime(2025, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    data = []
    seen: set[str] = set()
    for route in request.config_dict[ROUTES].listed():
        for name in (route.model, *route.aliases):
            if name in seen or not model_allowed(identity, name):
                continue
            seen.add(name)
            main = name == route.model
            data.append(
                {
                    "type": "model",
                    "id": name,
                    "display_name": (route.display_name if main else None) or name,
                    "created_at": epoch,
                }
            )
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "1000"))))
    except ValueError:
        raise InvalidRequestError("limit: must be an integer between 1 and 1000") from None
    after = request.query.get("after_id")
    if after is not None:
        ids = [m["id"] for m in data]
        data = data[ids.index(after) + 1 :] if after in ids else []
    page, has_more = data[:limit], len(data) > limit
    return web.json_response(
        {
            "data": page,
            "has_more": has_more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }
    )


async def hello(request: web.Request) -> web.Response:
    """``HEAD /api/hello``: Claude Code's warm-up probe; answered, never forwarded."""
    return web.Response(status=200)


def add_anthropic_routes(router: web.UrlDispatcher, prefix: str = "") -> None:
    """Register the Anthropic surface on ``router`` under ``prefix`` (``""`` or ``/x``)."""
    prefix = prefix.rstrip("/")
    router.add_post(f"{prefix}/v1/messages", messages)
    router.add_post(f"{prefix}/v1/messages/count_tokens", count_tokens)
    router.add_get(f"{prefix}/v1/models", list_models, allow_head=False)
    router.add_route("HEAD", f"{prefix}/api/hello", hello)
    router.add_get(f"{prefix}/api/hello", hello, allow_head=False)


def anthropic_app() -> web.Application:
    """The Anthropic surface as a sub-application (``app.add_subapp('/anthropic', ...)``)."""
    sub = web.Application()
    add_anthropic_routes(sub.router)
    return sub
