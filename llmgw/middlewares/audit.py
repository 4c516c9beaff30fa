"""One audit record per request, written on the way out whatever happened.

Outermost in the ready gateway, so a request refused by authentication, a limit or input
validation is audited like one that reached the model. In ``sync`` mode a start record is
persisted before the handler runs (and so before any upstream call); if that write fails
the request is answered 503 rather than served unaudited.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

from ..audit.capture import CAPTURE, BodyCapture, CapturePolicy, captured_body
from ..audit.record import request_record, start_record
from ..audit.redact import Redactor
from ..audit.writer import AuditUnavailableError, AuditWriter
from ..context import RequestContext, get_context, release_body
from ..log import audit_logger
from ..pricing import PriceTable
from ..typedefs import JSON, Handler, Middleware
from ..usage import Outcome

__all__ = ("audit_middleware",)


def audit_middleware(
    writer: AuditWriter | web.AppKey[AuditWriter],
    *,
    redactor: Redactor | None = None,
    capture: CapturePolicy | None = None,
    prices: PriceTable | None = None,
) -> Middleware:
    """Audit every request through ``writer``.

    ``writer`` may be an ``AppKey`` under which the application stores an opened writer
    (the ready gateway opens it in a cleanup context). ``prices`` computes the cost when
    metering did not set ``ctx.cost_micros``. ``capture`` enables body capture for the
    requests it selects; bodies are redacted with ``redactor`` (secrets always).
    """
    base = redactor or Redactor()
    costs = prices or PriceTable()

    @web.middleware
    async def _audit(request: web.Request, handler: Handler) -> web.StreamResponse:
        w = writer if isinstance(writer, AuditWriter) else request.config_dict[writer]
        ctx = get_context(request)
        presented = _presented_credentials(request.headers)
        red = base.with_literals(presented) if presented else base
        if w.sync:
            await w.append(start_record(ctx, request, red))
        if capture is not None:
            ctx.capture = capture.wrap  # read on the way out, after the relay is done
        response: web.StreamResponse | None = None
        failure: BaseException | None = None
        try:
            response = await handler(request)
            return response
        except asyncio.CancelledError:
            # handler_cancellation=True and the client left: a disconnect, not a failure.
            if ctx.outcome is Outcome.IN_FLIGHT:
                ctx.outcome = Outcome.CLIENT_DISCONNECTED
            ctx.status = ctx.status or 499
            raise
        except Exception as exc:
            failure = exc
            raise
        finally:
            status = response.status if response is not None else ctx.status
            bodies = None
            if capture is not None and capture.applies(ctx):
                bodies = _bodies(ctx, response, failure, red, capture.max_bytes)
            record = request_record(
                ctx, request, red, status=status, failure=failure, prices=costs, bodies=bodies
            )
            if capture is not None:  # read: the bodies go (see release_body)
                ctx.capture = None
                ctx.extras.pop(CAPTURE, None)
                release_body(ctx)
            await _persist(w, record)

    return _audit


async def _persist(writer: AuditWriter, record: JSON) -> None:
    if not writer.sync:
        await writer.append(record)
        return
    try:
        # Shielded: a cancelled handler must still complete its record.
        await asyncio.shield(writer.append(record))
    except AuditUnavailableError:
        # The client already has its answer; the start record shows the request happened.
        audit_logger.error("audit record of %s not written", record.get("request_id"))


def _presented_credentials(headers: CIMultiDictProxy[str]) -> list[str]:
    found = []
    for name in ("x-api-key", "authorization", "x-goog-api-key", "proxy-authorization"):
        value = headers.get(name)
        if value:
            found.append(value)
            scheme, _, token = value.partition(" ")
            if token and scheme.lower() in {"bearer", "basic", "token"}:
                found.append(token.strip())
    return found


def _bodies(
    ctx: RequestContext,
    response: web.StreamResponse | None,
    failure: BaseException | None,
    redactor: Redactor,
    limit: int,
) -> JSON:
    out: dict[str, Any] = {}
    if ctx.raw_body is not None:
        out["request_body"] = captured_body(ctx.raw_body, redactor, limit=limit)
    tapped = ctx.extras.get(CAPTURE)
    if isinstance(tapped, BodyCapture):
        out["response_body"] = tapped.result(redactor)
        return out
    body: Any = None
    if isinstance(response, web.Response):
        body = response.body
    elif isinstance(failure, web.HTTPException):
        body = failure.body
    if isinstance(body, bytes | bytearray):
        out["response_body"] = captured_body(bytes(body), redactor, limit=limit)
    return out
