"""``GET /admin/audit``: query the audit log through the admin API.

Filters (query string): ``since``/``until`` (ISO time, epoch seconds or ``2h``-style
relative), ``kind``, ``key_id``, ``request_id``, ``decision``, ``status``, ``chain``,
``limit`` (default 100, at most 1000). Records come back as sealed envelopes in storage
order, so a client can re-verify what it was given.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import InvalidRequestError, NotSupportedError
from ..keys import AUDIT
from .base import AuditQuery, AuditReader

__all__ = ("audit_query", "audit_routes", "list_audit")

_MAX_LIMIT = 1000


def audit_routes(router: web.UrlDispatcher) -> None:
    """The audit log's admin route table (``admin_api(app).add_routes(audit_routes)``)."""
    router.add_get("/audit", list_audit, allow_head=False)


def audit_query(params: web.Request) -> AuditQuery:
    from ..commands.audit import parse_since  # the CLI's time parser, one definition

    q = params.query
    try:
        limit = int(q.get("limit", "100"))
        status = int(q["status"]) if "status" in q else None
        since = parse_since(q["since"]) if "since" in q else None
        until = parse_since(q["until"]) if "until" in q else None
    except ValueError as exc:
        raise InvalidRequestError(f"audit query: {exc}") from None
    if not 1 <= limit <= _MAX_LIMIT:
        raise InvalidRequestError(f"limit: must be between 1 and {_MAX_LIMIT}")
    return AuditQuery(
        since=since,
        until=until,
        kind=q.get("kind"),
        key_id=q.get("key_id"),
        request_id=q.get("request_id"),
        decision=q.get("decision"),
        status=status,
        chain=q.get("chain"),
        limit=limit,
    )


async def list_audit(request: web.Request) -> web.Response:
    sink = request.config_dict[AUDIT].sink
    if not isinstance(sink, AuditReader):
        raise NotSupportedError("the configured audit sink cannot be read back")
    query = audit_query(request)
    data = [s.envelope() async for s in sink.query(query)]
    return web.json_response({"data": data, "count": len(data)})
