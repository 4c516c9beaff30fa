"""Admin routes for per-entity limits: ``/admin/limits[/{tier}/{name}]``.

``PUT`` replaces the whole limit set of a key, user, team, project or session (or of the
global tier, named ``*``) with the JSON body, in the format of ``[limits.defaults.*]``;
unset fields fall back to the tier default. The change is enforced at once by this
instance and by every other within ``limits.policy_ttl`` seconds.
"""

from __future__ import annotations

from aiohttp import web

from ..admin.api import notify_admin_change
from ..admin.validate import read_json
from ..errors import ConfigError, InvalidRequestError, NotFoundError, NotSupportedError
from ..keys import LIMIT_POLICIES, LIMITER
from .plan import merge
from .policy import LimitSet, Tier, parse_limit_set
from .source import CachedPolicies
from .store import LimitPolicy, check_scope, parse_tier

__all__ = ("limit_routes",)


def _policies(request: web.Request) -> CachedPolicies:
    policies = request.config_dict.get(LIMIT_POLICIES)
    if policies is None or policies.store is None:
        raise NotSupportedError("per-entity limits are not enabled on this gateway ([limits])")
    return policies


def _scope(request: web.Request) -> tuple[Tier, str]:
    tier, name = request.match_info["tier"], request.match_info["name"]
    try:
        return check_scope(tier, name), name
    except ConfigError as exc:
        raise InvalidRequestError(str(exc)) from None


def _default(request: web.Request, tier: Tier) -> LimitSet | None:
    limiter = request.config_dict.get(LIMITER)
    return limiter.defaults.get(tier) if limiter is not None else None


def _shown(policy: LimitPolicy, default: LimitSet | None) -> dict[str, object]:
    effective = policy.limits if default is None else merge(policy.limits, default)
    return {
        **policy.to_json(),
        "default": default.to_json() if default is not None else None,
        "effective": effective.to_json(),
    }


async def list_limits(request: web.Request) -> web.Response:
    tier = None
    if "tier" in request.query:
        try:
            tier = parse_tier(request.query["tier"])
        except ConfigError as exc:
            raise InvalidRequestError(str(exc)) from None
    store = _policies(request).store
    assert store is not None
    return web.json_response({"data": [p.to_json() for p in await store.list(tier)]})


async def show_limits(request: web.Request) -> web.Response:
    tier, name = _scope(request)
    store = _policies(request).store
    assert store is not None
    policy = await store.get(tier, name)
    if policy is None:
        raise NotFoundError(f"no limits set for {tier.value} {name!r} (the tier default applies)")
    return web.json_response(_shown(policy, _default(request, tier)))


async def put_limits(request: web.Request) -> web.Response:
    tier, name = _scope(request)
    policies = _policies(request)
    body = await read_json(request)
    try:
        limits = parse_limit_set(body, "body")
    except ConfigError as exc:
        raise InvalidRequestError(str(exc)) from None
    policy = await policies.put(tier, name, limits)
    await notify_admin_change(
        request,
        action="limits.set",
        target=f"{tier.value}/{name}",
        details={"limits": limits.to_json()},
    )
    return web.json_response(_shown(policy, _default(request, tier)))


async def delete_limits(request: web.Request) -> web.Response:
    tier, name = _scope(request)
    policy = await _policies(request).delete(tier, name)
    if policy is None:
        raise NotFoundError(f"no limits set for {tier.value} {name!r}")
    await notify_admin_change(
        request,
        action="limits.delete",
        target=f"{tier.value}/{name}",
        details={"limits": policy.limits.to_json()},
    )
    return web.json_response(policy.to_json())


def limit_routes(router: web.UrlDispatcher) -> None:
    """The limits route table (``admin_api(app).add_routes(limit_routes)``)."""
    router.add_get("/limits", list_limits, allow_head=False)
    router.add_get("/limits/{tier}/{name}", show_limits, allow_head=False)
    router.add_put("/limits/{tier}/{name}", put_limits)
    router.add_delete("/limits/{tier}/{name}", delete_limits)
