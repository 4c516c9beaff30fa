"""Metering for the ready gateway: the writer from config and its cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from ..admin import admin_api
from ..config import GatewayConfig
from ..errors import ConfigError
from ..keys import DATABASE, USAGE_STORE, USAGE_WRITER
from ..middlewares.metering import metering_middleware
from ..pricing import price_table
from ..storage import ensure_database
from .journal import Journal, SpillFile
from .report import usage_routes
from .store import MemoryUsageStore, SQLUsageStore
from .writer import UsageWriter

__all__ = ("build_usage_writer", "install_metering", "journal_path", "metering_ctx")


def journal_path(config: GatewayConfig) -> Path | None:
    """``metering.journal`` resolved: ``auto`` sits beside a SQLite file; with PostgreSQL it
    is off unless a per-instance path is configured."""
    setting = config.metering.journal
    if setting == "off":
        return None
    if setting != "auto":
        return Path(setting)
    url = config.storage.url
    if config.metering.store == "memory":
        return None
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://").removeprefix("/")
        return None if path in ("", ":memory:") else Path(path + ".usage-journal")
    # PostgreSQL: instances share the database but each needs its own journal, and only
    # the operator knows a per-instance path that outlives a restart.
    return None


def build_usage_writer(config: GatewayConfig) -> UsageWriter:
    """The writer ``make_app`` hands to the metering middleware; its store is bound (and
    the journal replayed) when :func:`metering_ctx` runs."""
    cfg = config.metering
    path = journal_path(config)
    if path is None and cfg.on_full == "spill":
        raise ConfigError(
            "metering.on_full: 'spill' needs a journal file; set metering.journal to a path"
        )
    return UsageWriter(
        MemoryUsageStore() if cfg.store == "memory" else None,
        journal=Journal(path) if path is not None else None,
        spill=SpillFile(path.with_name(path.name + ".spill")) if path is not None else None,
        queue_size=cfg.queue_size,
        batch_size=cfg.batch_size,
        flush_interval=cfg.flush_interval,
        on_full=cfg.on_full,
    )


async def metering_ctx(app: web.Application) -> AsyncIterator[None]:
    """Bind the store (SQL after ``database_ctx``), replay the journal, write until shutdown,
    then flush."""
    writer = app[USAGE_WRITER]
    if writer.store is None:
        store = SQLUsageStore(app[DATABASE])
        await store.open()
        writer.store = store
    app[USAGE_STORE] = writer.store
    await writer.start()
    try:
        yield
    finally:
        await writer.stop()


def install_metering(app: web.Application, config: GatewayConfig) -> None:
    """The metering middleware (call last of the built-ins: innermost), its writer's
    lifecycle and ``GET /admin/usage``."""
    writer = build_usage_writer(config)
    app[USAGE_WRITER] = writer
    app.middlewares.append(metering_middleware(writer, prices=price_table(config.pricing)))
    if writer.store is None:
        ensure_database(app)
    app.cleanup_ctx.append(metering_ctx)
    admin_api(app).add_routes(usage_routes)
