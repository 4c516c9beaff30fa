"""Build the limiter from ``[limits]`` and close its store with the application."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..config import GatewayConfig
from ..keys import LIMITER
from ..pricing import price_table
from .counters import CounterBackend
from .limiter import Limiter
from .memory import MemoryCounters

__all__ = ("build_limiter", "limits_ctx")


def build_limiter(config: GatewayConfig) -> Limiter:
    """The limiter ``[limits]`` describes (the Redis client connects lazily, on first use)."""
    cfg = config.limits
    counters: CounterBackend
    if cfg.backend == "redis":
        from .redis import RedisCounters

        assert config.storage.redis_url is not None  # checked by parse_config
        counters = RedisCounters(config.storage.redis_url, timeout=cfg.redis_timeout)
    else:
        counters = MemoryCounters()
    return Limiter(
        counters,
        defaults=cfg.defaults,
        prices=price_table(config.pricing),
        fail_open=cfg.failure_mode == "fail_open",
        key_prefix=cfg.key_prefix,
        stream_lease=cfg.stream_lease,
        bytes_per_token=cfg.input_bytes_per_token,
    )


async def limits_ctx(app: web.Application) -> AsyncIterator[None]:
    """Close the limiter's counter store (the Redis connection pool) at shutdown."""
    try:
        yield
    finally:
        await app[LIMITER].counters.close()
