"""Make every error that reaches the application speak the Anthropic error envelope."""

from __future__ import annotations

from aiohttp import web

from ..context import get_context
from ..errors import LlmgwError, error_body, error_type_for_status
from ..formats.bedrock import as_bedrock_error, is_bedrock_request
from ..log import relay_logger
from ..typedefs import Handler, Middleware

__all__ = ("errors_middleware",)


def errors_middleware() -> Middleware:
    """Turn aiohttp's own plain-text errors (404, 405, 413...) and unexpected exceptions
    into Anthropic-envelope responses. llmgw's own errors already carry the envelope. On the
    Bedrock surface every error also gets the AWS shape (``formats.bedrock.as_bedrock_error``)."""

    @web.middleware
    async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await _anthropic_errors(request, handler)
        except LlmgwError as exc:
            # Bedrock clients also need the AWS error shape (boto3 reads nothing else).
            if is_bedrock_request(request):
                as_bedrock_error(exc)
            raise

    return _errors


async def _anthropic_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except LlmgwError:
        raise
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.text or exc.reason
        if exc.status == 413:
            message = "request body exceeds the gateway limit"
        raise _envelope(exc.status, message, exc) from None
    except Exception:
        relay_logger.exception("unhandled error in request %s", get_context(request).request_id)
        raise _envelope(500, "internal gateway error", None) from None


def _envelope(status: int, message: str, original: web.HTTPException | None) -> LlmgwError:
    exc = LlmgwError(message)
    exc.set_status(status)
    exc.body = error_body(error_type_for_status(status), message)
    if original is not None:
        for name in ("Allow", "Retry-After"):
            if name in original.headers:
                exc.headers[name] = original.headers[name]
    return exc
