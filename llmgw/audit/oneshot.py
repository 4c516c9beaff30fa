"""Admin events from a process with no gateway app (``llmgw keys``), into the configured sink.

A command-line change is as much an admin change as one made through ``/admin``, but the
CLI has no :class:`~llmgw.audit.writer.AuditWriter` and no admin-change hook. It writes to
its own chain, ``<audit.chain or host name>.cli``: a gateway already running on this host
keeps its own chain's head in memory, so sharing that chain would fork it. CLI processes
writing at once are serialised around reading the head and appending: an immediate
(write-locked) transaction on SQLite, a transaction-scoped advisory lock on the chain name
on PostgreSQL, an exclusive ``flock`` on the JSON Lines file.

Open it *before* making the change (:func:`cli_audit_log` checks the signing key and the
store), record after: a misconfigured audit log then stops the change instead of leaving
it unaudited.
"""

from __future__ import annotations

import asyncio
import fcntl
import getpass
import os
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any

from ..config import GatewayConfig
from ..log import audit_logger
from ..storage.db import Database, open_database
from .chain import Chain, SealedRecord
from .jsonl import JSONLAuditSink
from .record import admin_record
from .redact import Redactor
from .setup import hmac_key, redactor_for
from .sql import SQLAuditSink
from .writer import AuditUnavailableError

__all__ = ("CLI_ACTOR", "CliAuditLog", "cli_audit_log", "cli_chain")

CLI_ACTOR = "cli"


def cli_chain(config: GatewayConfig) -> str:
    return f"{config.audit.chain or socket.gethostname()}.cli"


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry and no LOGNAME/USER (some containers)
        return None


class CliAuditLog:
    """One process's handle on the audit store: ``async with``, then :meth:`record`."""

    def __init__(self, config: GatewayConfig, *, actor: str = CLI_ACTOR) -> None:
        self.config = config
        self.actor = actor
        self.chain = cli_chain(config)
        self._key = hmac_key(config.audit)  # a missing key fails here, before any change
        self._redactor: Redactor = redactor_for(config)
        self._db: Database | None = None
        self._sink: JSONLAuditSink | SQLAuditSink | None = None

    async def open(self) -> None:
        cfg = self.config.audit
        if cfg.sink == "jsonl":
            assert cfg.path is not None
            self._sink = JSONLAuditSink(cfg.path, fsync="always")
            await self._sink.open()
            return
        db = self._db = open_database(cfg.url or self.config.storage.url)
        await db.open()
        sink = self._sink = SQLAuditSink(db)
        async with db.transaction():
            if db.dialect == "postgres":
                # Concurrent CREATE TABLE IF NOT EXISTS collide in PostgreSQL's catalog.
                await db.execute("SELECT pg_advisory_xact_lock(hashtext('llmgw_audit'))")
            await sink.open()

    async def close(self) -> None:
        sink, db = self._sink, self._db
        self._sink = self._db = None
        try:
            if sink is not None:
                await sink.close()
        finally:
            if db is not None:
                await db.close()

    async def __aenter__(self) -> CliAuditLog:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.close()

    async def record(
        self, *, action: str, target: str, details: Mapping[str, Any] | None = None
    ) -> SealedRecord:
        """Seal and durably write one ``admin`` record; :class:`AuditUnavailableError` if it
        could not be written (the change it describes is then known unaudited)."""
        if self._sink is None:
            raise RuntimeError("CliAuditLog.open() was not awaited")
        extra: dict[str, Any] = {"via": "llmgw keys", "os_user": _os_user()}
        record = admin_record(
            actor=self.actor,
            action=action,
            target=target,
            details={**(details or {}), **extra},
            redactor=self._redactor,
        )
        if isinstance(self._sink, JSONLAuditSink):
            return await self._append_locked(self._sink, record)
        return await self._append_sql(self._sink, record)

    async def _seal(self, sink: JSONLAuditSink | SQLAuditSink, record: Any) -> SealedRecord:
        seq, head = await sink.head(self.chain)
        return Chain(self.chain, seq=seq, head=head, key=self._key).seal(record)

    async def _append_sql(self, sink: SQLAuditSink, record: Any) -> SealedRecord:
        db = sink.db
        try:
            async with db.transaction():
                if db.dialect == "postgres":
                    await db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", self.chain)
                sealed = await self._seal(sink, record)
                await sink.write([sealed])
        except Exception as exc:
            audit_logger.error("audit: CLI event not written: %s: %s", type(exc).__name__, exc)
            raise AuditUnavailableError("the audit log is unavailable") from None
        return sealed

    async def _append_locked(self, sink: JSONLAuditSink, record: Any) -> SealedRecord:
        lock = await asyncio.to_thread(_lock, sink.path)
        try:
            sealed = await self._seal(sink, record)
            try:
                await sink.write([sealed])
            except OSError as exc:
                audit_logger.error("audit: CLI event not written: %s", exc)
                raise AuditUnavailableError("the audit log is unavailable") from None
            return sealed
        finally:
            await asyncio.to_thread(_unlock, lock)


def _lock(path: os.PathLike[str]) -> IO[bytes]:
    f = open(path, "ab")  # noqa: SIM115 - held across the await, closed by _unlock
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    return f


def _unlock(f: IO[bytes]) -> None:
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    finally:
        f.close()


def cli_audit_log(config: GatewayConfig, *, actor: str = CLI_ACTOR) -> CliAuditLog | None:
    """The audit log a CLI change is recorded in, or ``None`` when ``[audit]`` is disabled."""
    return CliAuditLog(config, actor=actor) if config.audit.enabled else None
