"""The Bedrock InvokeModel surface: ``/model/{modelId}/invoke[-with-response-stream]``,
``/model/{modelId}/count-tokens`` and the ``GET /inference-profiles`` lookups Claude Code makes.

The model id is cut from the *raw* path (everything between ``/model/`` and the final action
segment) and percent-decoded once: Claude Code sends ``:`` literally, boto3 sends ``%3A``, and
an application-inference-profile ARN carries ``%2F``. The body is passed on as the client sent
it (``anthropic_version``, ``anthropic_beta`` included); the endpoint decides ``stream``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from .._translate_errors import convert_error
from ..context import get_body, get_context
from ..errors import InvalidRequestError, LlmgwError, NotFoundError, NotSupportedError
from ..keys import ROUTES
from ..relay import relay
from ..routes import Route
from ..typedefs import ApiFormat, Operation
from ._modelid import decode_model_id

__all__ = (
    "add_bedrock_routes",
    "as_bedrock_error",
    "bedrock_app",
    "bedrock_model_id",
    "is_bedrock_model_id",
    "is_bedrock_request",
)

_ACTIONS = {
    "invoke": (Operation.MESSAGES, False),
    "invoke-with-response-stream": (Operation.MESSAGES, True),
    "count-tokens": (Operation.COUNT_TOKENS, False),
}
_CONVERSE = frozenset({"converse", "converse-stream"})
# anthropic.claude-..., us.anthropic.claude-..., global.anthropic..., and ARNs.
_BEDROCK_ID = re.compile(r"(?:[a-z-]+\.)?anthropic\.[A-Za-z0-9._:-]+|arn:aws[a-z-]*:bedrock:.+")


def bedrock_model_id(raw_path: str) -> tuple[str, str]:
    """``(model id, action)`` from a raw request path (query string allowed, ignored)."""
    path = raw_path.partition("?")[0].partition("#")[0]
    marker = path.find("/model/")
    if marker < 0:
        raise InvalidRequestError("path has no /model/{modelId}/ segment")
    raw_id, _, action = path[marker + len("/model/") :].rpartition("/")
    return decode_model_id(raw_id), action


def is_bedrock_model_id(name: str) -> bool:
    """Whether a configured route name looks like a Bedrock model, profile or ARN."""
    return _BEDROCK_ID.fullmatch(name) is not None


def is_bedrock_request(request: web.Request) -> bool:
    """Whether ``request`` matched the Bedrock runtime surface (known before any middleware)."""
    return "bedrock_path" in request.match_info


def as_bedrock_error(exc: LlmgwError) -> LlmgwError:
    """``exc`` reshaped in place for a Bedrock client: top-level ``message`` and
    ``x-amzn-ErrorType`` (what boto3 and the AWS SDKs read; without them boto3 sees an empty
    message and a bare status code, and does not know a throttle is one), the Anthropic
    envelope kept beside them (what Claude Code and the Anthropic SDKs read)."""
    if "x-amzn-errortype" in exc.headers:
        return exc
    body = exc.body if isinstance(exc.body, bytes) else b""
    reshaped, headers = convert_error(
        client=ApiFormat.BEDROCK,
        provider=ApiFormat.ANTHROPIC,
        status=exc.status,
        headers=CIMultiDict(exc.headers),
        body=body,
    )
    exc.body = reshaped
    exc.headers["x-amzn-ErrorType"] = headers["x-amzn-errortype"]
    return exc


async def _parse_invoke(request: web.Request) -> None:
    model, action = bedrock_model_id(request.raw_path)
    if action in _CONVERSE:
        raise NotSupportedError(f"Bedrock {action} is not served by this gateway; use invoke")
    if action not in _ACTIONS:
        raise NotFoundError(f"POST {request.path}: no such Bedrock endpoint on this gateway")
    operation, stream = _ACTIONS[action]
    ctx = get_context(request)
    ctx.client_format = ApiFormat.BEDROCK
    ctx.operation = operation
    ctx.stream = stream
    ctx.requested_model = model
    await get_body(request)


_invoke = partial(relay, prepare=_parse_invoke)


def _profile(route: Route, profile_id: str, region: str) -> dict[str, Any]:
    stamp = datetime(2025, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    arn = f"arn:aws:bedrock:{region}::inference-profile/{profile_id}"
    if profile_id.startswith("arn:"):
        arn = profile_id
    return {
        "inferenceProfileName": route.display_name or profile_id,
        "inferenceProfileId": profile_id,
        "inferenceProfileArn": arn,
        "description": f"Served by llmgw route {route.model!r}",
        "models": [{"modelArn": arn}],
        "status": "ACTIVE",
        "type": "SYSTEM_DEFINED",
        "createdAt": stamp,
        "updatedAt": stamp,
    }


def _profiles(request: web.Request) -> list[dict[str, Any]]:
    identity = get_context(request).identity
    allowed = identity.allowed_models if identity is not None else None
    region = request.query.get("region", "us-east-1")
    out = []
    for route in request.config_dict[ROUTES].listed():
        for name in (route.model, *route.aliases):
            if is_bedrock_model_id(name) and (allowed is None or name in allowed):
                out.append(_profile(route, name, region))
    return out


async def list_inference_profiles(request: web.Request) -> web.Response:
    """``GET /inference-profiles``: the routed Bedrock ids in the ListInferenceProfiles shape.

    A 404 when no route has a Bedrock id; Claude Code tolerates it and uses its defaults.
    """
    kind = request.query.get("type", "SYSTEM_DEFINED")
    profiles = _profiles(request)
    if not profiles:
        raise NotFoundError("this gateway lists no Bedrock inference profiles")
    if kind != "SYSTEM_DEFINED":
        profiles = []
    return web.json_response({"inferenceProfileSummaries": profiles})


async def get_inference_profile(request: web.Request) -> web.Response:
    """``GET /inference-profiles/{id}``: one routed profile, or 404."""
    raw = request.raw_path.partition("?")[0].rpartition("/inference-profiles/")[2]
    wanted = decode_model_id(raw)
    for profile in _profiles(request):
        if profile["inferenceProfileId"] == wanted or profile["inferenceProfileArn"] == wanted:
            return web.json_response(profile)
    raise NotFoundError(f"inference profile {wanted!r} is not served by this gateway")


def add_bedrock_routes(router: web.UrlDispatcher, prefix: str = "") -> None:
    """Register the Bedrock surface on ``router`` under ``prefix`` (``""`` or ``/x``)."""
    prefix = prefix.rstrip("/")
    # One catch-all per prefix: the id is parsed from the raw path, whatever aiohttp decodes.
    router.add_post(prefix + r"/model/{bedrock_path:(?:.|\n)+}", _invoke)
    router.add_get(prefix + "/inference-profiles", list_inference_profiles, allow_head=False)
    router.add_get(
        prefix + "/inference-profiles/{profile:.+}", get_inference_profile, allow_head=False
    )


def bedrock_app() -> web.Application:
    """The Bedrock surface as a sub-application (``app.add_subapp('/bedrock', ...)``)."""
    sub = web.Application()
    add_bedrock_routes(sub.router)
    return sub
