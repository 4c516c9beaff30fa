"""Build the limiter from ``[limits]``; open its policy store and close its counters with
the application."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..admin import admin_api
from ..config import GatewayConfig
from ..keys import DATABASE, LIMIT_POLICIES, LIMITER
from ..middlewares.limits import limits_middleware, limits_response_headers
from ..pricing import price_table
from ..storage import ensure_database
from .admin import limit_routes
from .counters import CounterBackend
from .limiter import Limiter
from .memory import MemoryCounters
from .source import CachedPolicies
from .store import LimitPolicyStore

__all__ = ("build_limiter", "install_limits", "limits_ctx")


def build_limiter(config: GatewayConfig, *, policies: CachedPolicies | None = None) -> Limiter:
    """The limiter ``[limits]`` describes (the Redis client connects lazily, on first use);
    ``policies`` are the per-entity limit sets, bound to the database by :func:`limits_ctx`."""
    cfg = config.limits
    counters: CounterBackend
    if cfg.backend == "redis":
        from .redis import RedisCounters

        assert config.storage.redis_url is not None  # checked by parse_config
        shared = RedisCounters(config.storage.redis_url, timeout=cfg.redis_timeout)
        counters = shared
        if cfg.lease_fraction:
            from .leased import LeasedCounters

            counters = LeasedCounters(shared, fraction=cfg.lease_fraction, hold=cfg.lease_hold)
    else:
        counters = MemoryCounters()
    return Limiter(
        counters,
        defaults=cfg.defaults,
        source=policies,
        prices=price_table(config.pricing),
        fail_open=cfg.failure_mode == "fail_open",
        key_prefix=cfg.key_prefix,
        stream_lease=cfg.stream_lease,
        bytes_per_token=cfg.input_bytes_per_token,
    )


async def limits_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the policy store on ``app[DATABASE]`` (when ``app[LIMIT_POLICIES]`` is set; the
    database context must come first) and close the counter store at shutdown."""
    policies = app.get(LIMIT_POLICIES)
    if policies is not None:
        store = LimitPolicyStore(app[DATABASE])
        await store.open()
        policies.store = store
    try:
        yield
    finally:
        if policies is not None:
            policies.store = None
        limiter = app[LIMITER]
        await limiter.drain()
        await limiter.counters.close()


def install_limits(app: web.Application, config: GatewayConfig) -> None:
    """The limits middleware (after routing, so reservations are priced for the routed
    model), its per-entity policy store, ``/admin/limits`` and the rate-limit headers."""
    policies = CachedPolicies(ttl=config.limits.policy_ttl)
    limiter = build_limiter(config, policies=policies)
    app[LIMITER] = limiter
    app[LIMIT_POLICIES] = policies
    app.middlewares.append(limits_middleware(limiter))
    ensure_database(app)
    app.cleanup_ctx.append(limits_ctx)
    app.on_response_prepare.append(limits_response_headers)
    admin_api(app).add_routes(limit_routes)
