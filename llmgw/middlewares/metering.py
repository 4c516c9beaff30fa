"""Usage metering: one record per proxied request, opened before the upstream is called and
closed whatever happens.

The middleware only reads the :class:`~llmgw.context.RequestContext` (the relay and the
format handlers fill it), so it is the same for every client and provider format. It never
touches storage itself: it hands each record state to a :class:`UsageSink` (the
:class:`~llmgw.metering.writer.UsageWriter` journals it and writes it later, off the path).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from ..context import RequestContext, get_context
from ..metering.state import PendingRecord, close_snapshot, discard_snapshot, open_snapshot
from ..metering.writer import UsageSink
from ..pricing import PriceTable
from ..typedefs import Handler, Middleware, Operation
from ..usage import Outcome

__all__ = ("metering_middleware", "request_cost")


def request_cost(ctx: RequestContext, prices: PriceTable) -> int | None:
    """Micro-dollars for the usage on the context; ``None`` when the model has no price."""
    if ctx.operation is Operation.COUNT_TOKENS:
        return 0
    model = ctx.upstream_model or ctx.usage.model or ctx.requested_model
    if model is None or prices.price(model) is None:
        return None
    return prices.cost_micros(model, ctx.usage)


def _settle_outcome(ctx: RequestContext, status: int | None, cancelled: bool) -> None:
    """Give every request an honest outcome and status before the record closes.

    The relay calls a stream that reached a clean EOF complete; without the provider's
    final usage it is, in this order:

    * ``upstream_error`` when an error event went to the client (the provider's in-band
      error, or one the gateway wrote for a stream it could not translate);
    * still ``complete`` when the usage tap stopped parsing (``parse_error``): the client
      got every byte up to the EOF, so only the accounting is in doubt, and the record
      says so through ``parse_error`` (its tokens are what was read before);
    * ``upstream_dropped`` otherwise: a stream the upstream ended early.
    """
    usage = ctx.usage
    if ctx.outcome is Outcome.COMPLETE and not usage.final:
        if usage.upstream_error is not None:
            ctx.outcome = Outcome.UPSTREAM_ERROR
            ctx.error = ctx.error or f"in-band error event mid-stream: {usage.upstream_error}"
        elif usage.parse_error is None and ctx.stream and ctx.operation is Operation.MESSAGES:
            ctx.outcome = Outcome.UPSTREAM_DROPPED
            ctx.error = ctx.error or "stream ended before the provider's final usage"
    elif ctx.outcome is Outcome.IN_FLIGHT:
        if cancelled:
            ctx.outcome = Outcome.CLIENT_DISCONNECTED
        elif not ctx.attempts:
            ctx.outcome = Outcome.REFUSED  # stopped before any upstream call
        else:
            ctx.outcome = Outcome.INCOMPLETE
    if ctx.status is None:
        ctx.status = 499 if cancelled and status is None else status
    if ctx.finished_mono is None:
        ctx.finished_mono = time.monotonic()


def metering_middleware(sink: UsageSink, *, prices: PriceTable | None = None) -> Middleware:
    """Meter every ``POST`` that becomes a proxied call (the format handler set
    ``ctx.operation``); other requests leave no record.

    On the way out it sets ``ctx.cost_micros`` (and settles ``ctx.outcome``/``ctx.status``
    for requests the relay never finished), so limits and audit, which run outside, read the
    closed record's numbers from the context. Both halves only snapshot the context into
    tuples for the sink (see :mod:`llmgw.metering.state`): records are built off the path.
    """
    table = prices if prices is not None else PriceTable()
    submit = sink.submit

    @web.middleware
    async def _metering(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST":
            return await handler(request)
        ctx = get_context(request)
        opened = open_snapshot(ctx)
        await submit(PendingRecord(opened))
        status: int | None = None
        cancelled = False
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception:
            status = 500
            raise
        finally:
            if ctx.operation is None:
                # Never became a proxied call (bad body, unknown path, a local endpoint).
                await submit(PendingRecord(opened, discard_snapshot(ctx)))
            else:
                _settle_outcome(ctx, status, cancelled)
                ctx.cost_micros = cost = request_cost(ctx, table)
                await submit(PendingRecord(opened, close_snapshot(ctx, cost)))

    return _metering
