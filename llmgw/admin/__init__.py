"""The admin API: one sub-application under ``/admin``, guarded by its own credential.

**Extension point.** Features contribute *route-table functions*
(``Callable[[web.UrlDispatcher], None]``) that register routes relative to ``/admin``::

    from llmgw.admin import admin_api, notify_admin_change

    def usage_routes(router: web.UrlDispatcher) -> None:
        router.add_get("/usage", usage_report)          # -> GET /admin/usage

    # in make_app, anywhere before mount_admin():
    admin_api(app).add_routes(usage_routes)

``make_app`` calls :func:`mount_admin` once, after every feature has added its tables and
before the catch-all route; the sub-app is frozen from then on. Handlers reach the
gateway's state with ``request.config_dict[SOME_APP_KEY]`` (sub-apps see the parent's keys).
Paths are namespaced per feature (``/keys``, ``/usage``, ``/limits``, ``/audit``,
``/routes``); errors are ``llmgw.errors`` exceptions (Anthropic envelope, status, JSON).
Use :mod:`llmgw.admin.validate` for bodies so validation errors name the field.

**Every change is an audit event.** A handler that changes state calls
``await notify_admin_change(request, action="limits.update", target=..., details=...)``
after the change; ``details`` must never contain a secret. Subscribers (the audit log)
append an ``async def hook(change: AdminChange) -> None`` to
``admin_change_hooks(app)`` (the list under :data:`~llmgw.keys.ADMIN_CHANGE_HOOKS` on the
parent app); hooks are awaited in order and a failure propagates to the admin caller.

Without an admin credential (``auth.admin_key_env`` unset) nothing is mounted: ``/admin``
then falls through to the gateway's 404 (after client authentication).
"""

from .api import (
    AdminApi,
    AdminChange,
    AdminChangeHook,
    AdminRoutes,
    admin_api,
    admin_app,
    admin_change_hooks,
    mount_admin,
    notify_admin_change,
)
from .keys import key_routes
from .middleware import admin_middleware

__all__ = (
    "AdminApi",
    "AdminChange",
    "AdminChangeHook",
    "AdminRoutes",
    "admin_api",
    "admin_app",
    "admin_change_hooks",
    "admin_middleware",
    "key_routes",
    "mount_admin",
    "notify_admin_change",
)
