"""Errors llmgw raises, each rendered as the Anthropic error envelope.

::

    LlmgwError (web.HTTPException)           500 api_error
    ├── InvalidRequestError                  400 invalid_request_error
    ├── AuthenticationError                  401 authentication_error
    ├── PermissionDeniedError                403 permission_error
    ├── NotFoundError                        404 not_found_error
    ├── RequestTooLargeError                 413 request_too_large
    ├── RateLimitError                       429 rate_limit_error (Retry-After)
    ├── NotSupportedError                    501 not_supported
    ├── OverloadedError                      529 overloaded_error
    ├── BadGatewayError                      502 api_error
    └── GatewayTimeoutError                  504 api_error
    ConfigError (ValueError)                 startup only, names the key path

Every class is a ``web.HTTPException``, so a middleware used alone in someone else's
application can ``raise`` one and aiohttp answers with the right status and body, with or
without :func:`~llmgw.middlewares.errors.errors_middleware` installed.
"""

from __future__ import annotations

import json
from typing import ClassVar

from aiohttp import web
from multidict import CIMultiDict

__all__ = (
    "AuthenticationError",
    "BadGatewayError",
    "ConfigError",
    "GatewayTimeoutError",
    "InvalidRequestError",
    "LlmgwError",
    "NotFoundError",
    "NotSupportedError",
    "OverloadedError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "error_body",
    "error_type_for_status",
)

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    501: "not_supported",
    529: "overloaded_error",
}


def error_type_for_status(status: int) -> str:
    """The Anthropic ``error.type`` a status maps to (other 4xx are invalid requests)."""
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(error_type: str, message: str, *, request_id: str | None = None) -> bytes:
    """The Anthropic error envelope as bytes."""
    envelope: dict[str, object] = {
        "type": "error",
        "error": {"type": error_type, "message": message},
    }
    if request_id is not None:
        envelope["request_id"] = request_id
    return json.dumps(envelope, separators=(",", ":")).encode()


class LlmgwError(web.HTTPException):
    """Base of every error llmgw answers with; carries status and ``error.type``."""

    status_code = 500
    error_type: ClassVar[str] = "api_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        hdrs: CIMultiDict[str] = CIMultiDict(headers or {})
        hdrs["Content-Type"] = "application/json"
        super().__init__(headers=hdrs)
        self.message = message
        self.body = error_body(self.error_type, message)


class InvalidRequestError(LlmgwError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(LlmgwError):
    """401 with ``x-should-retry: false``: a refused key stays refused, and Claude Code would
    otherwise retry it up to ten times with backoff (its credential-refresh retries, which
    fetch a new key first, still happen)."""

    status_code = 401
    error_type = "authentication_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"x-should-retry": "false", **(headers or {})})


class PermissionDeniedError(LlmgwError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(LlmgwError):
    status_code = 404
    error_type = "not_found_error"


class RequestTooLargeError(LlmgwError):
    status_code = 413
    error_type = "request_too_large"


class RateLimitError(LlmgwError):
    """429 with ``Retry-After`` so clients back off instead of hammering the gateway."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(
        self, message: str, *, retry_after: float, headers: dict[str, str] | None = None
    ) -> None:
        hdrs = dict(headers or {})
        hdrs["Retry-After"] = str(max(1, round(retry_after)))
        super().__init__(message, headers=hdrs)
        self.retry_after = retry_after


class NotSupportedError(LlmgwError):
    status_code = 501
    error_type = "not_supported"


class OverloadedError(LlmgwError):
    """529, as Anthropic answers when it has no capacity; clients retry it with backoff."""

    status_code = 529
    error_type = "overloaded_error"


class BadGatewayError(LlmgwError):
    status_code = 502
    error_type = "api_error"


class GatewayTimeoutError(LlmgwError):
    status_code = 504
    error_type = "api_error"


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message names the exact key path."""
