"""Make every error that reaches the application speak the Anthropic error envelope."""

from __future__ import annotations

from aiohttp import web

from ..context import get_context, release_body
from ..errors import LlmgwError, error_body, error_type_for_status
from ..formats.bedrock import as_bedrock_error, is_bedrock_request
from ..headers import REQUEST_ID_HEADER
from ..log import relay_logger
from ..typedefs import Handler, Middleware

__all__ = ("errors_middleware",)


def errors_middleware() -> Middleware:
    """Turn aiohttp's own plain-text errors (404, 405, 413...) and unexpected exceptions
    into Anthropic-envelope responses. llmgw's own errors already carry the envelope. On the
    Bedrock surface every error also gets the AWS shape (``formats.bedrock.as_bedrock_error``).

    Every answer that passes also gets ``x-llmgw-request-id`` (the relay puts it on its
    streamed responses itself, before their headers go out): a middleware rather than an
    ``on_response_prepare`` hook, which cost a signal dispatch per response.
    """

    @web.middleware
    async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except LlmgwError as exc:
            _finished(request, exc)
            raise
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                _answered(request, exc)
                raise
            message = exc.text or exc.reason
            if exc.status == 413:
                message = "request body exceeds the gateway limit"
            raise _finished(request, _envelope(exc.status, message, exc)) from None
        except Exception:
            relay_logger.exception("unhandled error in request %s", get_context(request).request_id)
            raise _finished(request, _envelope(500, "internal gateway error", None)) from None
        if not response.prepared:
            _answered(request, response)
        return response

    return _errors


def _answered(request: web.Request, response: web.StreamResponse) -> None:
    """``response`` is the answer: it gets the request id, and the request its body
    released (:func:`~llmgw.context.release_body`; the relay released a streamed one)."""
    ctx = get_context(request)
    response.headers.setdefault(REQUEST_ID_HEADER, ctx.request_id)
    release_body(ctx)


def _finished(request: web.Request, exc: LlmgwError) -> LlmgwError:
    """``exc`` ready to go out: stamped, and in the AWS shape too for a Bedrock client
    (boto3 reads nothing else)."""
    if is_bedrock_request(request):
        as_bedrock_error(exc)
    _answered(request, exc)
    return exc


def _envelope(status: int, message: str, original: web.HTTPException | None) -> LlmgwError:
    exc = LlmgwError(message)
    exc.set_status(status)
    exc.body = error_body(error_type_for_status(status), message)
    if original is not None:
        for name in ("Allow", "Retry-After"):
            if name in original.headers:
                exc.headers[name] = original.headers[name]
    return exc
