"""Provider errors in the client's format: HTTP error bodies and in-stream error events.

The message text is always kept verbatim (Claude Code's recovery matches on wording), and so
is an Anthropic ``error.type`` when the provider sent one; only the envelope changes.
"""

from __future__ import annotations

import json
from typing import Any

from multidict import CIMultiDict

from .errors import error_type_for_status
from .typedefs import ApiFormat

__all__ = (
    "anthropic_error_type",
    "bedrock_exception_type",
    "convert_error",
    "error_details",
)

# Bedrock exception names (HTTP x-amzn-ErrorType or :exception-type) → Anthropic error.type.
_FROM_BEDROCK = {
    "throttlingexception": "rate_limit_error",
    "modelnotreadyexception": "rate_limit_error",
    "servicequotaexceededexception": "rate_limit_error",
    "validationexception": "invalid_request_error",
    "accessdeniedexception": "permission_error",
    "resourcenotfoundexception": "not_found_error",
    "serviceunavailableexception": "overloaded_error",
    "unrecognizedclientexception": "authentication_error",
}
_TO_BEDROCK = {
    "rate_limit_error": "throttlingException",
    "overloaded_error": "serviceUnavailableException",
    "invalid_request_error": "validationException",
    "request_too_large": "validationException",
    "not_found_error": "resourceNotFoundException",
    "permission_error": "accessDeniedException",
    "authentication_error": "accessDeniedException",
}
_HTTP_EXCEPTION = {
    "throttlingException": "ThrottlingException",
    "serviceUnavailableException": "ServiceUnavailableException",
    "validationException": "ValidationException",
    "resourceNotFoundException": "ResourceNotFoundException",
    "accessDeniedException": "AccessDeniedException",
    "internalServerException": "InternalServerException",
}


def anthropic_error_type(bedrock_type: str | None, status: int | None = None) -> str:
    """The Anthropic ``error.type`` for a Bedrock exception name (``ThrottlingException``,
    ``throttlingException``, ``ThrottlingException:http://...``)."""
    name = (bedrock_type or "").split(":", 1)[0].strip().lower()
    if name in _FROM_BEDROCK:
        return _FROM_BEDROCK[name]
    return error_type_for_status(status) if status is not None else "api_error"


def bedrock_exception_type(error_type: str) -> str:
    """The in-stream ``:exception-type`` for an Anthropic ``error.type``."""
    return _TO_BEDROCK.get(error_type, "internalServerException")


def error_details(
    provider: ApiFormat, status: int, headers: CIMultiDict[str], body: bytes
) -> tuple[str, str]:
    """``(error.type, message)`` read from any provider's error response."""
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]  # Vertex wraps Google's envelope in an array
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if parsed.get("type") == "error" and isinstance(error, dict):
            kind = error.get("type")
            return (
                kind if isinstance(kind, str) else error_type_for_status(status),
                str(error.get("message", "")),
            )
        if isinstance(error, dict):  # Google: {"error": {"code", "message", "status"}}
            return error_type_for_status(status), str(error.get("message", ""))
        message = parsed.get("message", parsed.get("Message"))
        if isinstance(message, str):
            amzn = headers.get("x-amzn-errortype") or parsed.get("__type")
            return anthropic_error_type(amzn if isinstance(amzn, str) else None, status), message
    text = body[:2000].decode("utf-8", "replace").strip()
    return error_type_for_status(status), text or f"upstream answered HTTP {status}"


def convert_error(
    *,
    client: ApiFormat,
    provider: ApiFormat,
    status: int,
    headers: CIMultiDict[str],
    body: bytes,
) -> tuple[bytes, CIMultiDict[str]]:
    """The error body and headers for the client; same-format errors are unchanged."""
    if client is provider:
        return body, headers
    error_type, message = error_details(provider, status, headers, body)
    envelope: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    out = CIMultiDict(headers)
    for name in ("content-length", "content-encoding", "x-amzn-errortype"):
        out.popall(name, None)
    out["content-type"] = "application/json"
    if client is ApiFormat.BEDROCK:
        # Bedrock clients (boto3, the SDKs' Bedrock classes) read a top-level ``message`` and
        # the x-amzn-ErrorType header; the Anthropic envelope rides along for error.type.
        envelope = {"message": message, **envelope}
        exception = bedrock_exception_type(error_type)
        out["x-amzn-errortype"] = _HTTP_EXCEPTION.get(exception, "InternalServerException")
    body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    return body, out
