"""The SQL sink (SQLite by default, PostgreSQL) on :class:`llmgw.storage.db.Database`.

``data`` holds the record's canonical JSON, which the hash covers; the other columns are
copies for filtering, and verification checks them against ``data`` so editing a column is
detected like editing the JSON. ``id`` is the storage order verification walks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..storage.db import Database, insert_rows
from .base import AuditQuery
from .chain import GENESIS, ReadEntry, SealedRecord, canonical

__all__ = ("SQLAuditSink",)

_COLUMNS = ("ts", "kind", "request_id", "key_id", "decision", "status")
_PAGE = 1000


class SQLAuditSink:
    def __init__(self, db: Database, *, table: str = "llmgw_audit") -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"invalid table name {table!r}")
        self.db = db
        self.table = table

    async def open(self) -> None:
        pk = (
            "id INTEGER PRIMARY KEY AUTOINCREMENT"
            if self.db.dialect == "sqlite"
            else "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        )
        t = self.table
        await self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {t} ({pk}, chain TEXT NOT NULL, seq BIGINT NOT NULL,"
            " ts DOUBLE PRECISION, kind TEXT NOT NULL, request_id TEXT, key_id TEXT,"
            " decision TEXT, status INTEGER, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,"
            " sig TEXT, data TEXT NOT NULL, UNIQUE (chain, seq))"
        )
        await self.db.execute(f"CREATE INDEX IF NOT EXISTS {t}_ts ON {t} (ts)")
        await self.db.execute(f"CREATE INDEX IF NOT EXISTS {t}_request ON {t} (request_id)")

    async def close(self) -> None:
        """The database belongs to the application; nothing to close here."""

    async def head(self, chain: str) -> tuple[int, str]:
        row = await self.db.fetchrow(
            f"SELECT seq, hash FROM {self.table} WHERE chain = ? ORDER BY seq DESC LIMIT 1", chain
        )
        return (0, GENESIS) if row is None else (int(row["seq"]), str(row["hash"]))

    async def write(self, records: Sequence[SealedRecord]) -> None:
        """Multi-row ``INSERT`` statements: a sync-mode group commit is usually one, so one
        round trip to the database thread or server."""
        await insert_rows(
            self.db,
            f"INSERT INTO {self.table} (chain, seq, ts, kind, request_id, key_id, decision,"
            " status, prev_hash, hash, sig, data)",
            [_row(r) for r in records],
        )

    async def _pages(self, where: str, args: list[Any]) -> AsyncIterator[dict[str, Any]]:
        last = -1
        while True:
            rows = await self.db.fetch(
                f"SELECT * FROM {self.table} WHERE id > ?{where} ORDER BY id LIMIT {_PAGE}",
                last,
                *args,
            )
            for row in rows:
                yield dict(row)
            if len(rows) < _PAGE:
                return
            last = int(rows[-1]["id"])

    async def entries(self) -> AsyncIterator[ReadEntry]:
        async for row in self._pages("", []):
            yield _entry(row)

    async def query(self, query: AuditQuery) -> AsyncIterator[SealedRecord]:
        where, args = "", []
        for column, op, value in (
            ("ts", ">=", query.since),
            ("ts", "<", query.until),
            ("kind", "=", query.kind),
            ("key_id", "=", query.key_id),
            ("request_id", "=", query.request_id),
            ("decision", "=", query.decision),
            ("status", "=", query.status),
            ("chain", "=", query.chain),
        ):
            if value is not None:
                where += f" AND {column} {op} ?"
                args.append(value)
        count = 0
        async for row in self._pages(where, args):
            entry = _entry(row)
            if entry.sealed is None:
                continue
            yield entry.sealed
            count += 1
            if query.limit is not None and count >= query.limit:
                return


def _row(r: SealedRecord) -> tuple[Any, ...]:
    rec = r.record
    ts = rec.get("ts")
    status = rec.get("status")
    return (
        r.chain,
        r.seq,
        float(ts) if isinstance(ts, int | float) else None,
        str(rec.get("kind")),
        rec.get("request_id"),
        rec.get("key_id"),
        rec.get("decision"),
        status if isinstance(status, int) else None,
        r.prev_hash,
        r.hash,
        r.sig,
        r.text if r.text is not None else canonical(rec),
    )


def _entry(row: dict[str, Any]) -> ReadEntry:
    position = int(row["id"])
    try:
        record = json.loads(row["data"])
        sealed = SealedRecord(
            chain=str(row["chain"]),
            seq=int(row["seq"]),
            prev_hash=str(row["prev_hash"]),
            hash=str(row["hash"]),
            sig=row["sig"],
            record=record,
        )
    except (ValueError, TypeError) as exc:
        return ReadEntry(position=position, problem=f"unreadable row: {exc}")
    if not isinstance(record, dict):
        return ReadEntry(position=position, problem="data is not a JSON object")
    stored = _row(sealed)
    expected = (
        row["ts"],
        row["kind"],
        row["request_id"],
        row["key_id"],
        row["decision"],
        row["status"],
    )
    for name, have, want in zip(_COLUMNS, expected, stored[2:8], strict=True):
        if have != want:
            return ReadEntry(
                position=position, sealed=sealed, problem=f"column {name} differs from the record"
            )
    return ReadEntry(position=position, sealed=sealed)
