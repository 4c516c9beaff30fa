"""The Vertex AI rawPredict surface, under any mount prefix:

``{prefix}/projects/{p}/locations/{r}/publishers/anthropic/models/{model}:rawPredict``,
``…:streamRawPredict`` and ``…/models/count-tokens:rawPredict``.

Any prefix is accepted because the Vertex base URL is used verbatim by the clients (the SDKs'
own default ends in ``/v1``; gateways often add ``/vertex``). The client's project and region
are recorded but not used upstream: the provider's own configuration decides where calls go.
"""

from __future__ import annotations

from functools import partial

from aiohttp import web

from ..context import get_body, get_context
from ..errors import InvalidRequestError, NotFoundError
from ..relay import relay
from ..typedefs import ApiFormat, Operation
from ._modelid import decode_model_id

__all__ = ("VERTEX_ROUTE", "add_vertex_routes", "vertex_model_id")

#: The route pattern; ``mount`` is whatever prefix the client's base URL carries.
VERTEX_ROUTE = (
    r"/{mount:(?:[^{}]*/)?}projects/{project}/locations/{location}"
    "/publishers/anthropic/models/{vertex_tail}"
)
_MARKER = "/publishers/anthropic/models/"


def vertex_model_id(raw_path: str) -> tuple[str, str]:
    """``(model id, action)`` from a raw path; the model of count-tokens is ``count-tokens``."""
    path = raw_path.partition("?")[0].partition("#")[0]
    marker = path.rfind(_MARKER)
    if marker < 0:
        raise InvalidRequestError("path has no /publishers/anthropic/models/ segment")
    tail = path[marker + len(_MARKER) :]
    raw_id, sep, action = tail.rpartition(":")
    if not sep:
        raise NotFoundError("Vertex model paths end in :rawPredict or :streamRawPredict")
    return decode_model_id(raw_id), action


async def _parse_predict(request: web.Request) -> None:
    model, action = vertex_model_id(request.raw_path)
    ctx = get_context(request)
    body = await get_body(request)
    if model == "count-tokens" and action == "rawPredict":
        counted = body.get("model")
        if not isinstance(counted, str) or not counted:
            raise InvalidRequestError("model: field required for count-tokens:rawPredict")
        ctx.operation = Operation.COUNT_TOKENS
        ctx.stream = False
        ctx.requested_model = decode_model_id(counted)
    elif action in ("rawPredict", "streamRawPredict"):
        ctx.operation = Operation.MESSAGES
        ctx.stream = action == "streamRawPredict"
        ctx.requested_model = model
    else:
        raise NotFoundError(f"POST {request.path}: no such Vertex method on this gateway")
    ctx.client_format = ApiFormat.VERTEX
    ctx.extras["vertex.project"] = request.match_info.get("project")
    ctx.extras["vertex.location"] = request.match_info.get("location")


_predict = partial(relay, prepare=_parse_predict)


def add_vertex_routes(router: web.UrlDispatcher) -> None:
    """Register the Vertex surface on ``router`` (it matches under every prefix)."""
    router.add_post(VERTEX_ROUTE, _predict)
