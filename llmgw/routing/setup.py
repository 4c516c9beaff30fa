"""Build the route table from the config and install routing on an application."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ..admin import admin_api
from ..config import GatewayConfig
from ..errors import ConfigError
from ..keys import ROUTE_RELOADER, ROUTES, ROUTING_HEALTH
from ..middlewares.routing import routing_middleware
from ..providers import Provider, build_provider
from ..routes import Deployment, Route, RouteTable, RouteTableHolder
from .health import HealthBoard
from .policy import default_policy, route_policy
from .reload import RouteReloader, route_admin_routes

__all__ = ("build_route_table", "install_routing")


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


def install_routing(
    app: web.Application, config: GatewayConfig, providers: Mapping[str, Provider] | None = None
) -> None:
    """The routing middleware over a reloadable route table (``SIGHUP`` or
    ``POST /admin/routes/reload`` swap the table; in-flight requests keep their routes)."""
    routes = RouteTableHolder(build_route_table(config, providers))
    health = HealthBoard(
        failure_threshold=config.routing.failure_threshold, ewma_alpha=config.routing.ewma_alpha
    )
    app[ROUTES] = routes
    app[ROUTING_HEALTH] = health
    app[ROUTE_RELOADER] = RouteReloader(
        routes, lambda cfg: build_route_table(cfg, providers), config=config
    )
    app.middlewares.append(routing_middleware(routes, config=config.routing, board=health))
    admin_api(app).add_routes(route_admin_routes)
