"""Pick the deployments that serve a request's model, in the order to try them.

Must run after ``auth_middleware`` (so a denied model never reaches routing) and before
``limits_middleware`` (a reservation is priced for the routed model). The decision is a
dict lookup, a few random numbers and a sort of a handful of deployments: no I/O, so it
adds microseconds, not a round trip.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..config import RoutingConfig
from ..context import RequestContext, get_body, get_context
from ..errors import LlmgwError, NotFoundError
from ..formats._modelid import decode_model_id
from ..formats.bedrock import bedrock_model_id
from ..formats.vertex import vertex_model_id
from ..keys import ROUTES
from ..routes import RouteTable, RouteTableHolder
from ..routing.health import HealthBoard
from ..routing.plan import AttemptPlan, order_candidates
from ..routing.policy import backoff_from
from ..typedefs import Handler, Middleware

__all__ = ("request_model", "routing_middleware")

ModelOf = Callable[[web.Request], Awaitable[str | None]]

_BEDROCK_ACTIONS = frozenset({"invoke", "invoke-with-response-stream", "count-tokens"})
_MESSAGE_PATHS = ("/v1/messages", "/v1/messages/count_tokens")


async def request_model(request: web.Request) -> str | None:
    """The model a request asks for, or ``None`` when it is not a model call.

    Bedrock and Vertex carry it in the path, the Anthropic format (and Vertex
    count-tokens) in the JSON body. Paths the format handlers would reject give ``None``:
    the handler then answers with its own precise error.
    """
    if request.method != "POST":
        return None
    info = request.match_info
    try:
        if "bedrock_path" in info:
            model, action = bedrock_model_id(request.raw_path)
            return model if action in _BEDROCK_ACTIONS else None
        if "vertex_tail" in info:
            model, action = vertex_model_id(request.raw_path)
            if model != "count-tokens":
                return model
            counted = (await get_body(request)).get("model")
            return decode_model_id(counted) if isinstance(counted, str) and counted else None
    except LlmgwError:
        return None
    if request.path.endswith(_MESSAGE_PATHS):
        named = (await get_body(request)).get("model")
        return named if isinstance(named, str) and named else None
    return None


def routing_middleware(
    routes: RouteTableHolder | RouteTable | None = None,
    *,
    config: RoutingConfig | None = None,
    board: HealthBoard | None = None,
    rng: random.Random | None = None,
    model_of: ModelOf = request_model,
) -> Middleware:
    """Resolve the model to a route and put the attempt plan on the context.

    Routing runs when something first needs it (:func:`~llmgw.context.routed`: the relay,
    or the limits middleware), not on the way in: until then ``ctx.route`` is ``None``.

    ``routes`` defaults to the application's ``app[ROUTES]`` (read per request, so a reload
    applies to the next request). ``board`` holds live deployment health and in-flight
    counts; pass the same one to several apps to share it. An unrouted model is a 404
    ``not_found_error`` naming it; a request that is not a model call passes through.
    """
    cfg = config or RoutingConfig()
    health = board or HealthBoard(
        failure_threshold=cfg.failure_threshold, ewma_alpha=cfg.ewma_alpha
    )
    backoff = backoff_from(cfg)
    chance = rng or random.Random()

    default_hook = model_of is request_model

    async def route(request: web.Request, ctx: RequestContext) -> None:
        # When the relay routes, the format has named the model already: the default hook
        # would read it again (and leave the request's path cached for the whole stream).
        model = ctx.requested_model
        if model is None or not default_hook:
            model = await model_of(request)
            if model is None:
                return
        table = routes if routes is not None else request.config_dict[ROUTES]
        route = table.resolve(model)
        if route is None:
            raise NotFoundError(f"model: {model}")
        if model != ctx.requested_model:  # (else keep the format's interned string)
            ctx.requested_model = sys.intern(model)
        ctx.route = route
        ctx.candidates, resting = order_candidates(route, health, chance)
        ctx.routing = AttemptPlan(
            policy=route.policy,
            board=health,
            backoff=backoff,
            rng=chance,
            deployments=route.deployments,
            resting=resting,
        )

    @web.middleware
    def _routing(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        # Not a coroutine: the handler's own is returned for aiohttp to await, so no frame
        # of this middleware stays alive while the request streams (~0.3 KB per stream).
        get_context(request).router = route
        return handler(request)

    return _routing
