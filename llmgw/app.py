"""``make_app``: the ready gateway, every piece wired in the recommended order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web

from .admin import admin_api, admin_change_hooks, key_routes, mount_admin
from .audit.admin import audit_routes
from .audit.setup import audit_admin_hook, audit_ctx, audit_middleware_for
from .auth.setup import (
    admin_credential,
    auth_store_ctx,
    auth_throttle,
    build_authenticator,
)
from .config import GatewayConfig
from .context import get_context
from .errors import ConfigError, NotFoundError
from .formats.anthropic import add_anthropic_routes
from .formats.bedrock import add_bedrock_routes
from .formats.vertex import add_vertex_routes
from .keys import (
    AUTHENTICATOR,
    CONFIG,
    DATABASE,
    LIMIT_POLICIES,
    LIMITER,
    ROUTE_RELOADER,
    ROUTES,
    ROUTING_HEALTH,
    SESSION,
    USAGE_WRITER,
)
from .limits.admin import limit_routes
from .limits.setup import build_limiter, limits_ctx
from .limits.source import CachedPolicies
from .metering.report import usage_routes
from .metering.setup import build_usage_writer, metering_ctx
from .middlewares.auth import auth_middleware
from .middlewares.errors import errors_middleware
from .middlewares.limits import limits_middleware, limits_response_headers
from .middlewares.metering import metering_middleware
from .middlewares.routing import routing_middleware
from .pricing import price_table
from .providers import Provider, build_provider
from .routes import Deployment, Route, RouteTable, RouteTableHolder
from .routing.health import HealthBoard
from .routing.policy import default_policy, route_policy
from .routing.reload import RouteReloader, route_admin_routes
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
                policy=route_policy(rcfg, config.routing),
            )
        )
    if not routes and built:
        first = next(iter(built.values()))
        routes.append(
            Route(
                model="*",
                deployments=(Deployment(name=first.name, provider=first),),
                policy=default_policy(config.routing),
            )
        )
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
    entry; the Bedrock surface under each ``server.bedrock_prefixes`` entry (root and
    ``/bedrock`` by default); the Vertex surface under any prefix; any other path answers a
    404 in the Anthropic envelope.
    """
    config = config or GatewayConfig()
    chain: list[Middleware] = [errors_middleware()]
    authenticator = build_authenticator(config.auth) if config.auth.enabled else None
    if authenticator is not None:
        chain.append(auth_middleware(authenticator, throttle=auth_throttle(config.auth)))
    routes = RouteTableHolder(build_route_table(config, providers))
    health = HealthBoard(
        failure_threshold=config.routing.failure_threshold, ewma_alpha=config.routing.ewma_alpha
    )
    chain.append(routing_middleware(routes, config=config.routing, board=health))
    policies = CachedPolicies(ttl=config.limits.policy_ttl) if config.limits.enabled else None
    limiter = build_limiter(config, policies=policies) if config.limits.enabled else None
    if limiter is not None:
        chain.append(limits_middleware(limiter))
    if config.audit.enabled:
        chain.insert(0, audit_middleware_for(config))  # outermost: refusals are audited
    usage_writer = build_usage_writer(config) if config.metering.enabled else None
    if usage_writer is not None:
        chain.append(metering_middleware(usage_writer, prices=price_table(config.pricing)))
    chain.extend(middlewares)
    app = web.Application(client_max_size=config.server.client_max_size, middlewares=chain)
    app[CONFIG] = config
    app[ROUTES] = routes
    app[ROUTING_HEALTH] = health
    app[ROUTE_RELOADER] = RouteReloader(
        routes, lambda cfg: build_route_table(cfg, providers), config=config
    )
    admin_api(app).add_routes(route_admin_routes)
    app.cleanup_ctx.append(client_session_ctx)
    if authenticator is not None:
        app[AUTHENTICATOR] = authenticator
        if config.auth.store:
            if database_ctx not in app.cleanup_ctx:
                app.cleanup_ctx.append(database_ctx)
            app.cleanup_ctx.append(auth_store_ctx)
            admin_api(app).add_routes(key_routes)
    if config.audit.enabled:
        shared_db = config.audit.sink == "database" and config.audit.url is None
        if shared_db and database_ctx not in app.cleanup_ctx:
            app.cleanup_ctx.append(database_ctx)
        app.cleanup_ctx.append(audit_ctx)
        admin_change_hooks(app).append(audit_admin_hook(app))
        admin_api(app).add_routes(audit_routes)
    if usage_writer is not None:
        app[USAGE_WRITER] = usage_writer
        if usage_writer.store is None and database_ctx not in app.cleanup_ctx:
            app.cleanup_ctx.append(database_ctx)
        app.cleanup_ctx.append(metering_ctx)
        admin_api(app).add_routes(usage_routes)
    if limiter is not None:
        app[LIMITER] = limiter
        if policies is not None:
            app[LIMIT_POLICIES] = policies
            if database_ctx not in app.cleanup_ctx:
                app.cleanup_ctx.append(database_ctx)
            admin_api(app).add_routes(limit_routes)
        app.cleanup_ctx.append(limits_ctx)
        app.on_response_prepare.append(limits_response_headers)
    app.on_response_prepare.append(_stamp_request_id)
    add_anthropic_routes(app.router)
    for prefix in config.server.anthropic_prefixes:
        add_anthropic_routes(app.router, prefix)
    for prefix in config.server.bedrock_prefixes:
        add_bedrock_routes(app.router, prefix)
    if config.server.vertex:
        add_vertex_routes(app.router)
    mount_admin(app, admin_credential(config.auth), throttle=auth_throttle(config.auth))
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app
