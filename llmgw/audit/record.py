"""What one audit record holds, built from the request context (never a secret).

Three kinds: ``request.start`` (sync mode: written before the upstream is called, so a
crash leaves it without its completion), ``request`` (the one completed record per
request) and ``admin`` (a change made through the admin API, with the acting admin).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..context import RequestContext
from ..errors import LlmgwError, error_type_for_status
from ..pricing import PriceTable
from ..typedefs import JSON
from ..usage import Outcome
from .redact import Redactor

__all__ = ("Decision", "admin_record", "refusal", "request_record", "start_record")


class Decision:
    ALLOWED = "allowed"
    REFUSED = "refused"
    ERROR = "error"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _common(ctx: RequestContext, request: web.Request, redactor: Redactor) -> JSON:
    headers = request.headers
    return {
        "ts": round(ctx.started_at, 6),
        "request_id": ctx.request_id,
        "client": request.remote,
        "method": request.method,
        "path": request.path,
        "query": redactor.query(request.rel_url.raw_query_string),
        "user_agent": redactor.opt_text(headers.get("user-agent")),
        "session_id": ctx.session_id,
        "agent_id": ctx.agent_id,
        "parent_agent_id": ctx.parent_agent_id,
    }


def start_record(ctx: RequestContext, request: web.Request, redactor: Redactor) -> JSON:
    return {"kind": "request.start", **_common(ctx, request, redactor)}


def refusal(exc: BaseException) -> tuple[int, str, str]:
    """(status, error type, message) of an exception that ended the request."""
    if isinstance(exc, LlmgwError):
        return exc.status, exc.error_type, exc.message
    if isinstance(exc, web.HTTPException):
        return exc.status, error_type_for_status(exc.status), exc.text or exc.reason
    return 500, "api_error", f"{type(exc).__name__}"


def request_record(
    ctx: RequestContext,
    request: web.Request,
    redactor: Redactor,
    *,
    status: int | None,
    failure: BaseException | None,
    prices: PriceTable | None,
    bodies: Mapping[str, Any] | None = None,
) -> JSON:
    """The completed record; ``failure`` is the exception that ended the request, if any."""
    forwarded = bool(ctx.attempts)
    reason: str | None = None
    outcome: str = ctx.outcome.value
    if failure is not None:
        code, etype, message = refusal(failure)
        status = code
        reason = f"{etype}: {redactor.text(message)}"
        if not forwarded:
            outcome = Outcome.REFUSED.value if code < 500 else "gateway_error"
    elif outcome == Outcome.IN_FLIGHT.value:
        # Answered by the gateway itself (model list, probe) or by a handler outside the relay.
        outcome = Outcome.COMPLETE.value if (status or 200) < 400 else Outcome.REFUSED.value
    if failure is None or forwarded:
        decision = Decision.ALLOWED
    else:
        decision = Decision.REFUSED if (status or 500) < 500 else Decision.ERROR
    ident = ctx.identity
    usage = ctx.usage
    routed = ctx.upstream_model
    cost = ctx.cost_micros  # metering's, when it ran
    if cost is None and prices is not None and forwarded:
        cost = prices.cost_micros(usage.model or routed or ctx.requested_model or "", usage)
    record: JSON = {
        "kind": "request",
        **_common(ctx, request, redactor),
        "key_id": ident.key_id if ident is not None else None,
        "identity": (
            {"user": ident.user, "team": ident.team, "project": ident.project}
            if ident is not None
            else None
        ),
        "format": ctx.client_format.value if ctx.client_format is not None else None,
        "operation": ctx.operation.value if ctx.operation is not None else None,
        "stream": ctx.stream,
        "requested_model": ctx.requested_model,
        "routed_model": routed,
        "deployment": ctx.deployment.name if ctx.deployment is not None else None,
        "provider": ctx.provider,
        "attempts": [
            {
                "deployment": a.deployment,
                "provider": a.provider,
                "status": a.status,
                "error": redactor.opt_text(a.error),
                "ms": _ms(a.duration),
            }
            for a in ctx.attempts
        ],
        "decision": decision,
        "reason": reason,
        "status": status,
        "outcome": outcome,
        "error": redactor.opt_text(ctx.error),
        "usage": (
            {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_creation_5m_tokens": usage.cache_creation_5m_tokens,
                "cache_creation_1h_tokens": usage.cache_creation_1h_tokens,
                "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "final": usage.final,
                "estimated": usage.estimated,
            }
            if forwarded
            else None
        ),
        "cost_micros": cost,
        "latency_ms": _ms(time.monotonic() - ctx.started_mono),
        "ttfb_ms": _ms(ctx.ttfb),
        "bytes_out": ctx.bytes_out,
    }
    if bodies:
        record.update(bodies)
    return record


def admin_record(
    *,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any],
    redactor: Redactor,
    at: float | None = None,
    request_id: str | None = None,
) -> JSON:
    """An admin change; secret-named fields are dropped and strings redacted, at any depth."""
    return {
        "kind": "admin",
        "ts": round(time.time() if at is None else at, 6),
        "request_id": request_id,
        "actor": actor,
        "action": action,
        "target": redactor.text(target),
        "details": _clean(dict(details), redactor),
    }


def _clean(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v, redactor) for k, v in value.items() if not _secret_name(str(k))}
    if isinstance(value, list | tuple):
        return [_clean(v, redactor) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redactor.text(str(value))


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(s in lowered for s in ("secret", "password", "token", "api_key", "apikey")) or (
        lowered in {"key", "raw_key", "plaintext"}
    )
