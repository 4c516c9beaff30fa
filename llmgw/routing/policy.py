"""Resolve a route's policy from its own settings and the ``[routing]`` defaults."""

from __future__ import annotations

from typing import TypeVar

from ..config import RouteConfig, RoutingConfig
from ..routes import RoutePolicy
from .retry import Backoff

__all__ = ("backoff_from", "default_policy", "route_policy")

_T = TypeVar("_T")


def _pick(own: _T | None, default: _T) -> _T:
    return default if own is None else own


def route_policy(route: RouteConfig, defaults: RoutingConfig) -> RoutePolicy:
    """The :class:`RoutePolicy` a configured route runs with (route values win)."""
    return RoutePolicy(
        strategy=_pick(route.strategy, defaults.strategy),
        failover=_pick(route.failover, defaults.failover),
        retries=_pick(route.retries, defaults.retries),
        cooldown=_pick(route.cooldown, defaults.cooldown),
        connect_timeout=route.timeouts.connect,
        first_byte_timeout=route.timeouts.first_byte,
        idle_timeout=route.timeouts.idle,
    )


def default_policy(defaults: RoutingConfig) -> RoutePolicy:
    """The policy of a route that sets nothing itself (the catch-all route, for one)."""
    return RoutePolicy(
        strategy=defaults.strategy,
        failover=defaults.failover,
        retries=defaults.retries,
        cooldown=defaults.cooldown,
    )


def backoff_from(config: RoutingConfig) -> Backoff:
    return Backoff(
        base=config.backoff_base, cap=config.backoff_max, max_retry_after=config.max_retry_after
    )
