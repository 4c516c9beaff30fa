"""Admin routes for virtual keys: create, list, show, update, rotate, revoke.

Secrets appear only in the ``201`` of create and the ``200`` of rotate (with
``Cache-Control: no-store``); lists and audit details carry the key id and a hint.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..auth.manage import UPDATABLE_FIELDS, KeyManager, KeySpec
from ..errors import ConfigError, InvalidRequestError, NotSupportedError
from ..keys import AUTHENTICATOR
from ..limits.policy import parse_limit_set
from .api import notify_admin_change
from .validate import opt_number, opt_object, opt_str, opt_str_list, read_json, reject_unknown

__all__ = ("key_routes",)

_CREATE_FIELDS = (*UPDATABLE_FIELDS, "expires_in")
_NO_STORE = {"Cache-Control": "no-store"}
DEFAULT_GRACE = 3600.0
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _manager(request: web.Request) -> KeyManager:
    authenticator = request.config_dict.get(AUTHENTICATOR)
    if authenticator is None or authenticator.store is None or authenticator.hasher is None:
        raise NotSupportedError("virtual keys are not enabled on this gateway (auth.store)")
    return KeyManager(authenticator.store, authenticator.hasher, on_change=authenticator.invalidate)


def _fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Validated values for the fields present in ``body`` (absent fields stay absent)."""
    reject_unknown(body, _CREATE_FIELDS if creating else UPDATABLE_FIELDS)
    out: dict[str, Any] = {}
    for name in ("name", "user", "team", "project"):
        if name in body:
            out[name] = opt_str(body, name)
    if "allowed_models" in body:
        models = opt_str_list(body, "allowed_models")
        out["allowed_models"] = tuple(models) if models is not None else None
    for name in ("limits", "metadata"):
        if name in body:
            out[name] = opt_object(body, name) or {}
    if out.get("limits"):
        try:  # the limiter ignores a key's limits it cannot read: refuse them here
            parse_limit_set(out["limits"], "limits")
        except ConfigError as exc:
            raise InvalidRequestError(str(exc)) from None
    if "expires_at" in body:
        out["expires_at"] = opt_number(body, "expires_at", minimum=0)
    if body.get("expires_in") is not None:
        if body.get("expires_at") is not None:
            raise InvalidRequestError("expires_in: give expires_at or expires_in, not both")
        seconds = opt_number(body, "expires_in", minimum=1)
        assert seconds is not None
        out["expires_at"] = time.time() + seconds
    return out


def _audit_details(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


async def create_key(request: web.Request) -> web.Response:
    values = _fields(await read_json(request, allow_empty=True), creating=True)
    record, new = await _manager(request).create(KeySpec(**values))
    await notify_admin_change(
        request, action="key.create", target=record.key_id, details=_audit_details(values)
    )
    return web.json_response(
        {"key": record.public(), "secret": new.secret}, status=201, headers=_NO_STORE
    )


async def list_keys(request: web.Request) -> web.Response:
    """One page: ``?limit=`` (default 100, at most 1000) and ``?after=<key id>`` (the
    previous page's ``last_id``); the shape of the Anthropic API's list endpoints."""
    query = request.query
    include = query.get("include_revoked", "false").lower() in ("1", "true", "yes")
    try:
        limit = int(query.get("limit", str(DEFAULT_PAGE)))
    except ValueError:
        raise InvalidRequestError("limit: expected an integer") from None
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequestError(f"limit: must be between 1 and {MAX_PAGE}")
    records, more = await _manager(request).page(
        limit=limit, after=query.get("after") or None, include_revoked=include
    )
    return web.json_response(
        {
            "data": [r.public() for r in records],
            "has_more": more,
            "first_id": records[0].key_id if records else None,
            "last_id": records[-1].key_id if records else None,
        }
    )


async def show_key(request: web.Request) -> web.Response:
    record = await _manager(request).get(request.match_info["key_id"])
    return web.json_response(record.public())


async def update_key(request: web.Request) -> web.Response:
    values = _fields(await read_json(request), creating=False)
    if not values:
        raise InvalidRequestError(f"body: give at least one of {', '.join(UPDATABLE_FIELDS)}")
    record = await _manager(request).update(request.match_info["key_id"], values)
    await notify_admin_change(
        request,
        action="key.update",
        target=record.key_id,
        details={"changed": _audit_details(values)},
    )
    return web.json_response(record.public())


async def rotate_key(request: web.Request) -> web.Response:
    body = await read_json(request, allow_empty=True)
    reject_unknown(body, ("grace_seconds",))
    grace = opt_number(body, "grace_seconds", minimum=0)
    grace = DEFAULT_GRACE if grace is None else grace
    record, new, retire_at = await _manager(request).rotate(
        request.match_info["key_id"], grace=grace
    )
    await notify_admin_change(
        request,
        action="key.rotate",
        target=record.key_id,
        details={"grace_seconds": grace, "previous_valid_until": retire_at},
    )
    return web.json_response(
        {"key": record.public(), "secret": new.secret, "previous_valid_until": retire_at},
        headers=_NO_STORE,
    )


async def revoke_key(request: web.Request) -> web.Response:
    manager = _manager(request)
    key_id = request.match_info["key_id"]
    already = (await manager.get(key_id)).revoked_at is not None
    record = await manager.revoke(key_id)
    if not already:
        await notify_admin_change(request, action="key.revoke", target=record.key_id)
    return web.json_response(record.public())


def key_routes(router: web.UrlDispatcher) -> None:
    """The key-management route table (``admin_api(app).add_routes(key_routes)``)."""
    router.add_post("/keys", create_key)
    router.add_get("/keys", list_keys, allow_head=False)
    router.add_get("/keys/{key_id}", show_key, allow_head=False)
    router.add_patch("/keys/{key_id}", update_key)
    router.add_delete("/keys/{key_id}", revoke_key)
    router.add_post("/keys/{key_id}/rotate", rotate_key)
    router.add_post("/keys/{key_id}/revoke", revoke_key)
