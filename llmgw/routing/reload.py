"""Replace the route table while the gateway runs (SIGHUP or ``POST /admin/routes/reload``).

A request resolves its route once, at routing time, and keeps those objects to the end, so
swapping the table never touches a stream in flight: old streams finish on the old
deployments, new requests use the new table. Deployment health is keyed by name and
carries over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from ..admin.api import notify_admin_change
from ..config import GatewayConfig, load_config
from ..errors import ConfigError, InvalidRequestError, NotSupportedError
from ..keys import ROUTE_RELOADER
from ..log import relay_logger
from ..routes import RouteTable, RouteTableHolder

__all__ = ("RouteReloader", "reload_routes_handler", "route_admin_routes")

BuildTable = Callable[[GatewayConfig], RouteTable]


class RouteReloader:
    """Re-reads ``path`` (when set), builds a new table and swaps it into ``holder``.

    Providers defined at startup but absent from the new file are kept (the file may not
    name the demo upstream or providers passed to ``make_app`` in code).
    """

    __slots__ = ("_lock", "build", "config", "holder", "path")

    def __init__(
        self,
        holder: RouteTableHolder,
        build: BuildTable,
        *,
        config: GatewayConfig,
        path: str | Path | None = None,
    ) -> None:
        self.holder = holder
        self.build = build
        self.config = config
        self.path = path
        self._lock = asyncio.Lock()

    def _load(self) -> RouteTable:
        config = self.config
        if self.path is not None:
            fresh = load_config(self.path)
            names = {p.name for p in fresh.providers}
            kept = tuple(p for p in self.config.providers if p.name not in names)
            config = dataclasses.replace(fresh, providers=fresh.providers + kept)
        return self.build(config)

    async def reload(self) -> RouteTable:
        """Swap in the freshly built table and return it; on a bad file the old table stays
        and the :class:`ConfigError` (naming the key) propagates."""
        async with self._lock:
            table = await asyncio.to_thread(self._load)
            self.holder.swap(table)
        relay_logger.info(
            "route table reloaded: %d routes (generation %d)",
            len(table.routes),
            self.holder.generation,
        )
        return table


async def reload_routes_handler(request: web.Request) -> web.Response:
    """``POST /admin/routes/reload``: reload and answer with the routed names.

    Authorisation is the mount point's business (the admin API guards it). A successful
    reload is an admin change (``routes.reload``), so the audit log records it.
    """
    reloader = request.config_dict.get(ROUTE_RELOADER)
    if reloader is None:
        raise NotSupportedError("route reload is not configured on this gateway")
    try:
        table = await reloader.reload()
    except ConfigError as exc:
        raise InvalidRequestError(f"config not reloaded: {exc}") from None
    await notify_admin_change(
        request,
        action="routes.reload",
        target="routes",
        details={"generation": reloader.holder.generation, "routes": len(table.routes)},
    )
    body = {
        "generation": reloader.holder.generation,
        "routes": [
            {"model": r.model, "aliases": list(r.aliases), "deployments": len(r.deployments)}
            for r in table.routes
        ],
    }
    return web.json_response(body, dumps=lambda v: json.dumps(v, separators=(",", ":")))


def route_admin_routes(router: web.UrlDispatcher) -> None:
    """The routing admin table (``admin_api(app).add_routes(route_admin_routes)``)."""
    router.add_post("/routes/reload", reload_routes_handler)
