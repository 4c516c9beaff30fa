"""The admin sub-application, its extension point and the admin-change hook.

See the package docstring (:mod:`llmgw.admin`) for how features add routes and subscribe.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..auth.throttle import FailureThrottle
from ..context import get_context
from ..keys import ADMIN_API, ADMIN_CHANGE_HOOKS, AUTH_EXEMPT
from .middleware import admin_middleware

__all__ = (
    "AdminApi",
    "AdminChange",
    "AdminChangeHook",
    "AdminRoutes",
    "admin_api",
    "admin_app",
    "admin_change_hooks",
    "mount_admin",
    "notify_admin_change",
)

#: A route-table function: registers its routes on the admin router (paths relative to
#: ``/admin``). Handlers reach the gateway's state through ``request.config_dict``.
AdminRoutes = Callable[[web.UrlDispatcher], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminChange:
    """One change made through the admin API; ``details`` never holds a secret."""

    actor: str
    action: str  # "key.create", "key.update", "key.rotate", "key.revoke", "routes.reload"...
    target: str  # what changed: a key id, a route name...
    details: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    request_id: str | None = None


AdminChangeHook = Callable[[AdminChange], Awaitable[None]]


class AdminApi:
    """Collects route tables until :func:`mount_admin` (or :meth:`build`) freezes them."""

    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: list[AdminRoutes] = []

    def add_routes(self, table: AdminRoutes) -> None:
        if table not in self._tables:
            self._tables.append(table)

    @property
    def tables(self) -> tuple[AdminRoutes, ...]:
        return tuple(self._tables)

    def build(self, credential: str, *, throttle: FailureThrottle | None = None) -> web.Application:
        return admin_app(credential, routes=self._tables, throttle=throttle)


def admin_app(
    credential: str,
    *,
    routes: Iterable[AdminRoutes] = (),
    throttle: FailureThrottle | None = None,
) -> web.Application:
    """The admin API as an application guarded by ``credential`` (usable alone, or mounted
    with ``app.add_subapp("/admin", ...)``; it is exempt from ``auth_middleware``)."""
    app = web.Application(middlewares=[admin_middleware(credential, throttle=throttle)])
    app[AUTH_EXEMPT] = True
    for table in routes:
        table(app.router)
    return app


def admin_api(app: web.Application) -> AdminApi:
    """The application's route-table collector, created on first use."""
    api = app.get(ADMIN_API)
    if api is None:
        api = app[ADMIN_API] = AdminApi()
    return api


def admin_change_hooks(app: web.Application) -> list[AdminChangeHook]:
    """The list every admin change is awaited on, created on first use; append to it."""
    hooks = app.get(ADMIN_CHANGE_HOOKS)
    if hooks is None:
        hooks = app[ADMIN_CHANGE_HOOKS] = []
    return hooks


def mount_admin(
    app: web.Application,
    credential: str | None,
    *,
    prefix: str = "/admin",
    throttle: FailureThrottle | None = None,
) -> web.Application | None:
    """Mount the collected route tables under ``prefix``; nothing when ``credential`` is
    ``None`` (no admin credential configured means no admin API). Call once, after every
    feature has added its routes and before any catch-all route."""
    if credential is None:
        return None
    sub = admin_api(app).build(credential, throttle=throttle)
    admin_change_hooks(app)  # hooks live on the parent so features can subscribe there
    app.add_subapp(prefix, sub)
    return sub


async def notify_admin_change(
    request: web.Request, *, action: str, target: str, details: Mapping[str, Any] | None = None
) -> AdminChange:
    """Record a change: every hook is awaited in order; a hook's failure propagates (the
    change is already made, the admin sees the 500 and the log says why)."""
    change = AdminChange(
        actor="admin",
        action=action,
        target=target,
        details=dict(details or {}),
        request_id=get_context(request).request_id,
    )
    for hook in request.config_dict.get(ADMIN_CHANGE_HOOKS, ()):
        await hook(change)
    return change
