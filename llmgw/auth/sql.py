"""The :class:`~llmgw.auth.store.KeyStore` contract on the shared SQL database.

Same SQL for SQLite and PostgreSQL (``?`` placeholders, portable types). ``key_id`` is the
public id; ``llmgw_key_digests`` maps each HMAC digest (primary key, so lookups are one
index probe) to its key and, after a rotation, to the end of its grace period.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..storage.db import Database
from .store import KeyMatch, KeyRecord

__all__ = ("SQLKeyStore",)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS llmgw_keys (
        key_id TEXT PRIMARY KEY,
        hint TEXT NOT NULL,
        name TEXT,
        user_id TEXT,
        team TEXT,
        project TEXT,
        allowed_models TEXT,
        limits TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION
    )""",
    """CREATE TABLE IF NOT EXISTS llmgw_key_digests (
        digest TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES llmgw_keys (key_id),
        valid_until DOUBLE PRECISION
    )""",
    "CREATE INDEX IF NOT EXISTS llmgw_key_digests_key_id ON llmgw_key_digests (key_id)",
)

_COLUMNS = (
    "k.key_id, k.hint, k.name, k.user_id, k.team, k.project, k.allowed_models, k.limits,"
    " k.metadata, k.created_at, k.updated_at, k.expires_at, k.revoked_at"
)


class SQLKeyStore:
    """Keys in ``llmgw_keys`` / ``llmgw_key_digests``; the database is opened by its owner."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        async with self.db.transaction():
            if self.db.dialect == "postgres":
                # Two instances starting together would race on CREATE TABLE IF NOT EXISTS.
                await self.db.execute("SELECT pg_advisory_xact_lock(7400211)")
            for statement in _SCHEMA:
                await self.db.execute(statement)

    async def close(self) -> None:
        return None

    async def create(self, record: KeyRecord, digest: str) -> None:
        async with self.db.transaction():
            await self.db.execute(
                "INSERT INTO llmgw_keys (key_id, hint, name, user_id, team, project,"
                " allowed_models, limits, metadata, created_at, updated_at, expires_at,"
                " revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                record.key_id,
                record.hint,
                *_mutable(record)[:7],
                record.created_at,
                *_mutable(record)[7:],
            )
            await self.db.execute(
                "INSERT INTO llmgw_key_digests (digest, key_id, valid_until) VALUES (?, ?, NULL)",
                digest,
                record.key_id,
            )

    async def get(self, key_id: str) -> KeyRecord | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM llmgw_keys k WHERE k.key_id = ?", key_id
        )
        return _record(row) if row is not None else None

    async def list(
        self, *, include_revoked: bool = False, limit: int | None = None, after: str | None = None
    ) -> list[KeyRecord]:
        where: list[str] = [] if include_revoked else ["k.revoked_at IS NULL"]
        args: list[Any] = []
        if after is not None:
            # Keyset pagination on (created_at, key_id), the listing order; written out
            # rather than as a row-value comparison, which older SQLite lacks.
            where.append(
                "(k.created_at > c.created_at OR (k.created_at = c.created_at"
                " AND k.key_id > c.key_id))"
            )
        sql = f"SELECT {_COLUMNS} FROM llmgw_keys k"
        if after is not None:
            sql += " JOIN llmgw_keys c ON c.key_id = ?"
            args.append(after)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY k.created_at, k.key_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = await self.db.fetch(sql, *args)
        return [_record(row) for row in rows]

    async def lookup(self, digest: str) -> KeyMatch | None:
        row = await self.db.fetchrow(
            f"SELECT d.digest AS d_digest, d.valid_until AS d_valid_until, {_COLUMNS}"
            " FROM llmgw_key_digests d JOIN llmgw_keys k ON k.key_id = d.key_id"
            " WHERE d.digest = ?",
            digest,
        )
        if row is None:
            return None
        return KeyMatch(
            record=_record(row), digest=row["d_digest"], valid_until=row["d_valid_until"]
        )

    async def update(self, record: KeyRecord) -> bool:
        async with self.db.transaction():
            if await self.get(record.key_id) is None:
                return False
            await self.db.execute(
                "UPDATE llmgw_keys SET name = ?, user_id = ?, team = ?, project = ?,"
                " allowed_models = ?, limits = ?, metadata = ?, updated_at = ?, expires_at = ?,"
                " revoked_at = ?, hint = ? WHERE key_id = ?",
                *_mutable(record),
                record.hint,
                record.key_id,
            )
            return True

    async def add_digest(
        self, key_id: str, digest: str, *, hint: str, retire_at: float, now: float
    ) -> bool:
        async with self.db.transaction():
            if await self.get(key_id) is None:
                return False
            await self.db.execute(
                "DELETE FROM llmgw_key_digests WHERE key_id = ? AND valid_until <= ?", key_id, now
            )
            await self.db.execute(
                "UPDATE llmgw_key_digests SET valid_until = ?"
                " WHERE key_id = ? AND (valid_until IS NULL OR valid_until > ?)",
                retire_at,
                key_id,
                retire_at,
            )
            await self.db.execute(
                "INSERT INTO llmgw_key_digests (digest, key_id, valid_until) VALUES (?, ?, NULL)",
                digest,
                key_id,
            )
            await self.db.execute(
                "UPDATE llmgw_keys SET hint = ?, updated_at = ? WHERE key_id = ?",
                hint,
                now,
                key_id,
            )
            return True


def _mutable(record: KeyRecord) -> tuple[Any, ...]:
    """name .. metadata, updated_at, expires_at, revoked_at, in column order."""
    models = None if record.allowed_models is None else json.dumps(list(record.allowed_models))
    return (
        record.name,
        record.user,
        record.team,
        record.project,
        models,
        json.dumps(dict(record.limits), sort_keys=True),
        json.dumps(dict(record.metadata), sort_keys=True),
        record.updated_at,
        record.expires_at,
        record.revoked_at,
    )


def _record(row: Mapping[str, Any]) -> KeyRecord:
    models = row["allowed_models"]
    return KeyRecord(
        key_id=row["key_id"],
        hint=row["hint"],
        name=row["name"],
        user=row["user_id"],
        team=row["team"],
        project=row["project"],
        allowed_models=None if models is None else tuple(json.loads(models)),
        limits=json.loads(row["limits"]),
        metadata=json.loads(row["metadata"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )
