"""Every typed key llmgw stores on an application or a request, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from .admin.api import AdminApi, AdminChangeHook
    from .audit.writer import AuditWriter
    from .auth.authenticator import Authenticator
    from .config import GatewayConfig
    from .context import RequestContext
    from .limits.limiter import Limiter
    from .limits.source import CachedPolicies
    from .metering.store import UsageStore
    from .metering.writer import UsageWriter
    from .routes import RouteTableHolder
    from .routing.health import HealthBoard
    from .routing.reload import RouteReloader
    from .storage.db import Database

__all__ = (
    "ADMIN_API",
    "ADMIN_CHANGE_HOOKS",
    "AUDIT",
    "AUTHENTICATOR",
    "AUTH_EXEMPT",
    "CONFIG",
    "CONTEXT",
    "DATABASE",
    "LIMITER",
    "LIMIT_POLICIES",
    "ROUTES",
    "ROUTE_RELOADER",
    "ROUTING_HEALTH",
    "SESSION",
    "USAGE_STORE",
    "USAGE_WRITER",
)

CONFIG: web.AppKey[GatewayConfig] = web.AppKey("llmgw.config")
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("llmgw.session")
#: The live route table; reloads swap the table inside the holder.
ROUTES: web.AppKey[RouteTableHolder] = web.AppKey("llmgw.routes")
#: Rebuilds ``app[ROUTES]`` from the config file (SIGHUP, ``POST /admin/routes/reload``).
ROUTE_RELOADER: web.AppKey[RouteReloader] = web.AppKey("llmgw.route_reloader")
#: Live deployment health and in-flight counts the routing middleware decides from.
ROUTING_HEALTH: web.AppKey[HealthBoard] = web.AppKey("llmgw.routing_health")
#: The shared SQL database, when a store of the ready gateway needs one.
DATABASE: web.AppKey[Database] = web.AppKey("llmgw.database")
CONTEXT: web.RequestKey[RequestContext] = web.RequestKey("llmgw.context")
#: Resolves client credentials; its ``store`` is bound when the database opens.
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("llmgw.authenticator")
#: Set to ``True`` on a sub-application whose routes ``auth_middleware`` must not guard.
AUTH_EXEMPT: web.AppKey[bool] = web.AppKey("llmgw.auth_exempt")
#: Collects admin route tables until ``mount_admin`` builds the ``/admin`` sub-app.
ADMIN_API: web.AppKey[AdminApi] = web.AppKey("llmgw.admin_api")
#: Awaited with an ``AdminChange`` after every admin change (audit subscribes here).
ADMIN_CHANGE_HOOKS: web.AppKey[list[AdminChangeHook]] = web.AppKey("llmgw.admin_change_hooks")
#: The audit log's writer, when ``[audit]`` is enabled.
AUDIT: web.AppKey[AuditWriter] = web.AppKey("llmgw.audit")
#: Where usage records are kept (reports read it) and the writer that fills it.
USAGE_STORE: web.AppKey[UsageStore] = web.AppKey("llmgw.usage_store")
USAGE_WRITER: web.AppKey[UsageWriter] = web.AppKey("llmgw.usage_writer")
#: The rate-limit and budget limiter, when ``[limits]`` is enabled.
LIMITER: web.AppKey[Limiter] = web.AppKey("llmgw.limiter")
#: Per-key/user/team/project limit sets set through the admin API (the limiter's source).
LIMIT_POLICIES: web.AppKey[CachedPolicies] = web.AppKey("llmgw.limit_policies")
