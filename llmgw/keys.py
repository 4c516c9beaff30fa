"""Every typed key llmgw stores on an application or a request, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from .config import GatewayConfig
    from .context import RequestContext
    from .routes import RouteTable
    from .storage.db import Database

__all__ = ("CONFIG", "CONTEXT", "DATABASE", "ROUTES", "SESSION")

CONFIG: web.AppKey[GatewayConfig] = web.AppKey("llmgw.config")
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("llmgw.session")
ROUTES: web.AppKey[RouteTable] = web.AppKey("llmgw.routes")
#: The shared SQL database, when a store of the ready gateway needs one.
DATABASE: web.AppKey[Database] = web.AppKey("llmgw.database")
CONTEXT: web.RequestKey[RequestContext] = web.RequestKey("llmgw.context")
