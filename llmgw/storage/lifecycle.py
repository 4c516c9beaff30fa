"""The shared SQL database's place in an application's lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..keys import CONFIG, DATABASE
from .db import open_database

__all__ = ("database_ctx", "ensure_database")


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the shared SQL database (``storage.url``) under ``app[DATABASE]``.

    It must come before any store's own context in ``cleanup_ctx`` (see
    :func:`ensure_database`); teardown runs in reverse, so stores flush before it closes.
    """
    db = open_database(app[CONFIG].storage.url)
    await db.open()
    app[DATABASE] = db
    try:
        yield
    finally:
        await db.close()


def ensure_database(app: web.Application) -> None:
    """Register :func:`database_ctx` once, before the caller appends its own store."""
    if database_ctx not in app.cleanup_ctx:
        app.cleanup_ctx.append(database_ctx)
