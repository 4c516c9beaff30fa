"""The audit log of the ready gateway, built from ``[audit]`` and opened with the app."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from ..admin.api import AdminChange, admin_api, admin_change_hooks
from ..config import AuditConfig, GatewayConfig
from ..errors import ConfigError
from ..keys import AUDIT, CONFIG, DATABASE
from ..pricing import price_table
from ..storage import ensure_database
from ..storage.db import Database, open_database
from ..typedefs import Middleware
from .admin import audit_routes
from .base import AuditReader, AuditSink
from .capture import CapturePolicy
from .jsonl import JSONLAuditSink
from .record import admin_record
from .redact import Redactor
from .sql import SQLAuditSink
from .writer import AuditWriter

__all__ = (
    "audit_admin_hook",
    "audit_ctx",
    "audit_middleware_for",
    "capture_policy",
    "chain_name",
    "hmac_key",
    "install_audit",
    "open_reader",
    "redactor_for",
    "secret_literals",
)


def secret_literals(config: GatewayConfig) -> tuple[str, ...]:
    """Every secret the gateway itself holds (from the environment variables the config
    names), so the redactor removes them wherever they are echoed."""
    names: list[str | None] = [p.api_key_env for p in config.providers]
    names.append(config.audit.hmac_key_env)
    auth: Any = getattr(config, "auth", None)
    for attr in ("admin_key_env", "key_secret_env", "admin_token_env"):
        names.append(getattr(auth, attr, None))
    jwt = getattr(auth, "jwt", None)
    names.append(getattr(jwt, "secret_env", None))
    for key in getattr(auth, "static_keys", ()):
        names.append(getattr(key, "key_env", None))
    return tuple(os.environ[n] for n in names if isinstance(n, str) and os.environ.get(n))


def redactor_for(config: GatewayConfig) -> Redactor:
    return Redactor(literals=secret_literals(config), patterns=config.audit.redact_patterns)


def capture_policy(cfg: AuditConfig) -> CapturePolicy | None:
    cap = cfg.capture
    if not (cap.all or cap.models or cap.identities):
        return None
    return CapturePolicy(
        all=cap.all, models=cap.models, identities=cap.identities, max_bytes=cap.max_bytes
    )


def hmac_key(cfg: AuditConfig) -> bytes | None:
    if cfg.hmac_key_env is None:
        return None
    value = os.environ.get(cfg.hmac_key_env)
    if not value:
        raise ConfigError(f"audit.hmac_key_env: environment variable {cfg.hmac_key_env} is unset")
    return value.encode()


def chain_name(config: GatewayConfig) -> str:
    """The configured chain, else one per listening address: a restart on the same port
    continues its chain, while two instances on one host (sharing a database) get two."""
    if config.audit.chain:
        return config.audit.chain
    port = config.server.port
    return f"{socket.gethostname()}:{port if port else f'pid{os.getpid()}'}"


def _sink(cfg: AuditConfig, db: Database | None) -> JSONLAuditSink | SQLAuditSink:
    if cfg.sink == "jsonl":
        assert cfg.path is not None
        return JSONLAuditSink(cfg.path, fsync=cfg.fsync, fsync_interval=cfg.fsync_interval)
    assert db is not None
    return SQLAuditSink(db)


async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the writer (and its own database when ``audit.url`` is set) under ``AUDIT``.

    Appended after ``database_ctx`` so teardown flushes the queue before the shared
    database closes.
    """
    config = app[CONFIG]
    cfg = config.audit
    own_db: Database | None = None
    db: Database | None = None
    if cfg.sink == "database":
        if cfg.url is not None:
            own_db = db = open_database(cfg.url)
            await own_db.open()
        else:
            db = app[DATABASE]
    writer = AuditWriter(
        _sink(cfg, db),
        chain=chain_name(config),
        mode=cfg.mode,
        flush_interval=cfg.flush_interval,
        max_batch=cfg.max_batch,
        hmac_key=hmac_key(cfg),
    )
    await writer.open()
    app[AUDIT] = writer
    try:
        yield
    finally:
        await writer.close()
        if own_db is not None:
            await own_db.close()


def audit_admin_hook(app: web.Application) -> Callable[[AdminChange], Awaitable[None]]:
    """An admin-change subscriber (``admin_change_hooks(app).append(...)``): every change
    becomes an ``admin`` record with the acting admin. The writer is looked up when a change
    happens, so the hook can be subscribed before the app starts. A failed write propagates
    (the admin API answers 5xx and the change is known unaudited)."""
    redactor = redactor_for(app[CONFIG])

    async def on_change(change: AdminChange) -> None:
        record = admin_record(
            actor=change.actor,
            action=change.action,
            target=change.target,
            details=change.details,
            redactor=redactor,
            at=change.at,
            request_id=change.request_id,
        )
        await app[AUDIT].append(record)

    return on_change


async def open_reader(config: GatewayConfig) -> tuple[AuditReader, Callable[[], Any]]:
    """A reader on the configured store, and the coroutine function that closes it."""
    cfg = config.audit
    if cfg.sink == "jsonl":
        assert cfg.path is not None
        jsonl = JSONLAuditSink(cfg.path)

        async def nothing() -> None:
            return None

        return jsonl, nothing
    db = open_database(cfg.url or config.storage.url)
    await db.open()
    sink: AuditSink = SQLAuditSink(db)
    await sink.open()
    assert isinstance(sink, SQLAuditSink)
    return sink, db.close


def audit_middleware_for(config: GatewayConfig) -> Middleware:
    """The ready gateway's audit middleware; the writer comes from :func:`audit_ctx`."""
    from ..middlewares.audit import audit_middleware

    hmac_key(config.audit)  # a missing key is a startup error, not a first-request one
    return audit_middleware(
        AUDIT,
        redactor=redactor_for(config),
        capture=capture_policy(config.audit),
        prices=price_table(config.pricing),
    )


def install_audit(app: web.Application, config: GatewayConfig) -> None:
    """The audit middleware (call first: outermost, so refusals are audited), its writer's
    lifecycle, admin-change events and ``GET /admin/audit``."""
    app.middlewares.append(audit_middleware_for(config))
    if config.audit.sink == "database" and config.audit.url is None:
        ensure_database(app)
    app.cleanup_ctx.append(audit_ctx)
    admin_change_hooks(app).append(audit_admin_hook(app))
    admin_api(app).add_routes(audit_routes)
