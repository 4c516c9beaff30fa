"""Request bodies and headers between the three formats (PROTOCOLS.md §6.1, §6.2).

Every conversion goes through one neutral shape: the Anthropic Messages body without
``model``/``stream``, plus the list of betas. Fields llmgw does not know travel untouched.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from multidict import CIMultiDict

from ._json import loads
from .errors import InvalidRequestError
from .headers import ANTHROPIC_BETA
from .headers import ANTHROPIC_VERSION as VERSION_HEADER
from .typedefs import JSON, ApiFormat, Operation

__all__ = (
    "ANTHROPIC_VERSION",
    "BEDROCK_VERSION",
    "VERTEX_VERSION",
    "convert_request",
    "dumps",
    "encode_request",
    "neutral_request",
    "unwrap_bedrock_count",
)

ANTHROPIC_VERSION = "2023-06-01"
BEDROCK_VERSION = "bedrock-2023-05-31"
VERTEX_VERSION = "vertex-2023-10-16"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _header_betas(headers: CIMultiDict[str]) -> list[str]:
    return [
        beta.strip()
        for value in headers.getall("anthropic-beta", ())
        for beta in value.split(",")
        if beta.strip()
    ]


def unwrap_bedrock_count(body: JSON) -> JSON:
    """The InvokeModel body inside a Bedrock CountTokens request.

    ``{"input": {"invokeModel": {"body": base64}}}`` per the AWS API; a body that is
    already a Messages body (no ``input``) is taken as it is.
    """
    wrapper = body.get("input")
    if not isinstance(wrapper, dict):
        return body
    invoke = wrapper.get("invokeModel")
    encoded = invoke.get("body") if isinstance(invoke, dict) else None
    if not isinstance(encoded, str):
        raise InvalidRequestError("input.invokeModel.body: expected a base64 string")
    try:
        inner = loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise InvalidRequestError("input.invokeModel.body: not base64 of a JSON object") from None
    if not isinstance(inner, dict):
        raise InvalidRequestError("input.invokeModel.body: not base64 of a JSON object")
    return inner


def neutral_request(
    client: ApiFormat, operation: Operation, body: JSON, headers: CIMultiDict[str]
) -> tuple[JSON, list[str]]:
    """The Anthropic body without ``model``/``stream``/version, and the betas from the header
    and (Bedrock) the body, in order, once each."""
    if client is ApiFormat.BEDROCK and operation is Operation.COUNT_TOKENS:
        body = unwrap_bedrock_count(body)
    out = dict(body)
    betas = _header_betas(headers)
    if client is ApiFormat.BEDROCK:
        body_betas = out.pop("anthropic_beta", None)
        if isinstance(body_betas, list):
            betas += [b for b in body_betas if isinstance(b, str) and b not in betas]
    if client is not ApiFormat.ANTHROPIC:
        out.pop("anthropic_version", None)
    out.pop("model", None)
    out.pop("stream", None)
    return out, list(dict.fromkeys(betas))


# Generation controls a Bedrock count body carries (it is an InvokeModel body) but the
# Messages count_tokens endpoint rejects as extra inputs.
_NOT_COUNTED = ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences", "metadata")


def encode_request(
    *,
    provider: ApiFormat,
    operation: Operation,
    stream: bool,
    model: str,
    neutral: JSON,
    betas: list[str],
    headers: CIMultiDict[str],
) -> tuple[bytes, CIMultiDict[str]]:
    """The body bytes and headers for ``provider`` from the neutral shape."""
    neutral = dict(neutral)
    out_headers = CIMultiDict(headers)
    out_headers.popall("anthropic-beta", None)
    counting = operation is Operation.COUNT_TOKENS
    if counting and provider is not ApiFormat.BEDROCK:
        for name in _NOT_COUNTED:
            neutral.pop(name, None)
    if provider is ApiFormat.ANTHROPIC:
        out: JSON = {"model": model, **neutral}
        if stream and not counting:
            out["stream"] = True
        if betas:
            out_headers[ANTHROPIC_BETA] = ",".join(betas)
        out_headers.setdefault(VERSION_HEADER, ANTHROPIC_VERSION)
        return dumps(out), out_headers
    out_headers.popall("anthropic-version", None)
    if provider is ApiFormat.VERTEX:
        out = {"model": model, **neutral} if counting else dict(neutral)
        if stream and not counting:
            out["stream"] = True
        out["anthropic_version"] = VERTEX_VERSION
        if betas:
            out_headers[ANTHROPIC_BETA] = ",".join(betas)
        return dumps(out), out_headers
    out = dict(neutral)
    out["anthropic_version"] = BEDROCK_VERSION
    if betas:
        out["anthropic_beta"] = betas
    if counting:
        # Bedrock counts an InvokeModel body; max_tokens is required there.
        out.setdefault("max_tokens", 1)
        encoded = base64.b64encode(dumps(out)).decode()
        return dumps({"input": {"invokeModel": {"body": encoded}}}), out_headers
    return dumps(out), out_headers


def convert_request(
    *,
    client: ApiFormat,
    provider: ApiFormat,
    operation: Operation,
    stream: bool,
    model: str,
    body: JSON,
    headers: CIMultiDict[str],
) -> tuple[bytes, CIMultiDict[str]]:
    """The body bytes and headers for ``provider`` from a ``client``-format request, with
    every beta and body field kept (no provider policy applied)."""
    neutral, betas = neutral_request(client, operation, body, headers)
    return encode_request(
        provider=provider,
        operation=operation,
        stream=stream,
        model=model,
        neutral=neutral,
        betas=betas,
        headers=headers,
    )
