"""``make_app``: the ready gateway, every piece wired in the recommended order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web

from .config import GatewayConfig
from .context import get_context
from .errors import ConfigError, NotFoundError
from .formats.anthropic import add_anthropic_routes
from .keys import CONFIG, DATABASE, ROUTES, SESSION
from .middlewares.errors import errors_middleware
from .providers import Provider, build_provider
from .routes import Deployment, Route, RouteTable
from .storage import open_database
from .typedefs import Middleware

__all__ = ("build_route_table", "client_session_ctx", "database_ctx", "make_app")


def build_route_table(
    config: GatewayConfig, providers: Mapping[str, Provider] | None = None
) -> RouteTable:
    """Routes from the config; with none configured, every model goes to the first provider."""
    built = dict(providers or {})
    for pcfg in config.providers:
        if pcfg.name not in built:
            built[pcfg.name] = build_provider(pcfg)
    routes: list[Route] = []
    for i, rcfg in enumerate(config.routes):
        deployments = []
        for j, dcfg in enumerate(rcfg.deployments):
            if dcfg.provider not in built:
                raise ConfigError(f"routes[{i}].deployments[{j}].provider: unknown provider")
            deployments.append(
                Deployment(
                    name=f"{dcfg.provider}/{dcfg.model or rcfg.model}",
                    provider=built[dcfg.provider],
                    model=dcfg.model,
                    weight=dcfg.weight,
                    max_concurrency=dcfg.max_concurrency,
                )
            )
        routes.append(
            Route(
                model=rcfg.model,
                deployments=tuple(deployments),
                aliases=rcfg.aliases,
                display_name=rcfg.display_name,
            )
        )
    if not routes and built:
        first = next(iter(built.values()))
        routes.append(Route(model="*", deployments=(Deployment(name=first.name, provider=first),)))
    return RouteTable(routes)


async def client_session_ctx(app: web.Application) -> AsyncIterator[None]:
    """The one upstream ``ClientSession``: no total timeout (streams are long), a sized pool,
    no decompression (bytes pass through as sent)."""
    up = app[CONFIG].upstream
    connector = aiohttp.TCPConnector(limit=up.pool_size, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(
        total=None, connect=None, sock_connect=up.connect_timeout, sock_read=None
    )
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        app[SESSION] = session
        yield


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the shared SQL database (``storage.url``) for the stores that need one.

    Append it to ``cleanup_ctx`` before any store's own context (which reads
    ``app[DATABASE]``); teardown runs in reverse, so stores flush before it closes.
    """
    db = open_database(app[CONFIG].storage.url)
    await db.open()
    app[DATABASE] = db
    try:
        yield
    finally:
        await db.close()


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise NotFoundError(f"{request.method} {request.path}: no such endpoint on this gateway")


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("x-llmgw-request-id", get_context(request).request_id)


def make_app(
    config: GatewayConfig | None = None,
    *,
    providers: Mapping[str, Provider] | None = None,
    middlewares: tuple[Middleware, ...] = (),
) -> web.Application:
    """The ready gateway, wired from ``config``.

    Middleware order (outermost first) is part of the contract:
    audit → errors → auth → routing → limits → metering → ``middlewares`` → format handler.
    Audit is outermost so refused requests are audited too; limits run after routing so a
    reservation is priced for the routed model; metering is innermost so its record is
    closed before limits settle and audit writes.

    Routes: the Anthropic surface at ``/`` and under each ``server.anthropic_prefixes``
    entry; any other path answers a 404 in the Anthropic envelope.
    """
    config = config or GatewayConfig()
    chain: list[Middleware] = [errors_middleware()]
    chain.extend(middlewares)
    app = web.Application(client_max_size=config.server.client_max_size, middlewares=chain)
    app[CONFIG] = config
    app[ROUTES] = build_route_table(config, providers)
    app.cleanup_ctx.append(client_session_ctx)
    app.on_response_prepare.append(_stamp_request_id)
    add_anthropic_routes(app.router)
    for prefix in config.server.anthropic_prefixes:
        add_anthropic_routes(app.router, prefix)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app
