"""Where usage records live: a protocol, an in-memory store and one SQL store.

``write`` is an upsert keyed by request id with one rule every backend keeps: a closed
row is final (never reopened by a late open state, never replaced by a crash replay), so
batches may arrive in any order. Requests that never became a proxied call are kept as
``discarded`` rows (a late open state cannot resurrect them) and left out of every report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..storage.db import Database, insert_rows
from .record import DISCARDED, FIELD_NAMES, UsageRecord, utc_day
from .report import GROUP_BY, UsageGroup, aggregate_records
from .state import RecordEntry, settle

__all__ = ("MemoryUsageStore", "SQLUsageStore", "UsageStore")


class UsageStore(Protocol):
    """What the writer, the reports and the CLI need from a usage backend."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, records: Sequence[RecordEntry]) -> None:
        """Upsert by request id; a closed row is final and left as it is."""
        ...

    async def get(self, request_id: str) -> UsageRecord | None: ...

    async def records(self, *, since: float, until: float) -> list[UsageRecord]:
        """Records started in ``[since, until)``, oldest first."""
        ...

    async def aggregate(self, by: str, *, since: float, until: float) -> list[UsageGroup]:
        """Totals per ``by`` group (one of :data:`GROUP_BY`), dearest first."""
        ...


class MemoryUsageStore:
    """A dict; for tests and for gateways that ship usage elsewhere."""

    def __init__(self) -> None:
        self._rows: dict[str, UsageRecord] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def write(self, records: Sequence[RecordEntry]) -> None:
        for entry in records:
            current = self._rows.get(entry.request_id)
            if current is not None and not current.is_open:
                continue
            self._rows[entry.request_id] = entry.record()

    async def get(self, request_id: str) -> UsageRecord | None:
        return self._rows.get(request_id)

    async def records(self, *, since: float, until: float) -> list[UsageRecord]:
        rows = [
            r
            for r in self._rows.values()
            if since <= r.started_at < until and r.outcome != DISCARDED
        ]
        return sorted(rows, key=lambda r: r.started_at)

    async def aggregate(self, by: str, *, since: float, until: float) -> list[UsageGroup]:
        return aggregate_records(await self.records(since=since, until=until), by)


#: Record field → column, where the field name is reserved in SQL (``user`` in PostgreSQL).
_RENAMED = {"user": "user_name"}
_JSON_FIELDS = ("attempts", "server_tool_use")
_BOOL_FIELDS = ("stream", "estimated")
_AT_ATTEMPTS, _AT_TOOLS = FIELD_NAMES.index("attempts"), FIELD_NAMES.index("server_tool_use")
_AT_STREAM, _AT_ESTIMATED = FIELD_NAMES.index("stream"), FIELD_NAMES.index("estimated")
_AT_STARTED = FIELD_NAMES.index("started_at")
_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
_COLUMNS = (*(_RENAMED.get(name, name) for name in FIELD_NAMES), "day")
_SQL_TYPES: Mapping[str, str] = {
    "request_id": "TEXT PRIMARY KEY",
    "started_at": "DOUBLE PRECISION NOT NULL",
    "finished_at": "DOUBLE PRECISION",
    "ttfb": "DOUBLE PRECISION",
    "duration": "DOUBLE PRECISION",
    "outcome": "TEXT NOT NULL",
    "stream": "INTEGER NOT NULL",
    "estimated": "INTEGER NOT NULL",
    "status": "INTEGER",
    "thinking_tokens": "BIGINT",
    "cost_micros": "BIGINT",
    "bytes_out": "BIGINT NOT NULL",
}
_INT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
)
#: Report group → SQL expression (whitelisted: ``by`` never reaches SQL as text).
_GROUP_SQL: Mapping[str, str] = {
    "key": "key_id",
    "user": "user_name",
    "team": "team",
    "project": "project",
    "session": "session_id",
    "model": "COALESCE(upstream_model, requested_model)",
    "provider": "provider",
    "day": "day",
    "outcome": "outcome",
}
assert set(_GROUP_SQL) == set(GROUP_BY)


def _column_type(column: str) -> str:
    if column in _SQL_TYPES:
        return _SQL_TYPES[column]
    if column in _INT_FIELDS:
        return "BIGINT NOT NULL"
    return "TEXT"


class SQLUsageStore:
    """Usage in one table of a :class:`~llmgw.storage.db.Database` (SQLite or PostgreSQL)."""

    def __init__(self, db: Database, *, table: str = "llmgw_usage") -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"invalid table name {table!r}")
        self.db = db
        self.table = table
        cols = ", ".join(_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "request_id")
        self._insert = f"INSERT INTO {table} ({cols})"
        self._on_conflict = (
            f"ON CONFLICT (request_id) DO UPDATE SET {updates} WHERE {table}.outcome = 'in_flight'"
        )
        self._select = f"SELECT {cols} FROM {table}"

    async def open(self) -> None:
        columns = ",\n  ".join(f"{c} {_column_type(c)}" for c in _COLUMNS)
        await self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (\n  {columns}\n)")
        await self.db.execute(
            f"CREATE INDEX IF NOT EXISTS {self.table}_started ON {self.table} (started_at)"
        )

    async def close(self) -> None:
        return None  # the Database belongs to whoever opened it

    async def write(self, records: Sequence[RecordEntry]) -> None:
        # One state per request: a multi-row upsert may not touch a row twice (PostgreSQL).
        rows = [_row(r) for r in settle(records)]
        await insert_rows(self.db, self._insert, rows, tail=self._on_conflict)

    async def get(self, request_id: str) -> UsageRecord | None:
        row = await self.db.fetchrow(f"{self._select} WHERE request_id = ?", request_id)
        return _record(row) if row is not None else None

    async def records(self, *, since: float, until: float) -> list[UsageRecord]:
        rows = await self.db.fetch(
            f"{self._select} WHERE started_at >= ? AND started_at < ? AND outcome <> ? "
            "ORDER BY started_at",
            since,
            until,
            DISCARDED,
        )
        return [_record(row) for row in rows]

    async def aggregate(self, by: str, *, since: float, until: float) -> list[UsageGroup]:
        if by not in _GROUP_SQL:
            raise ValueError(f"cannot group usage by {by!r}; choose one of {', '.join(GROUP_BY)}")
        sums = ", ".join(
            f"CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}"
            for c in (*_INT_FIELDS[:3], "cache_read_tokens", "cost_micros")
        )
        sql = (
            f"SELECT {_GROUP_SQL[by]} AS grp, COUNT(*) AS requests, {sums}, "
            "CAST(SUM(CASE WHEN outcome = 'complete' THEN 0 ELSE 1 END) AS BIGINT) AS partial, "
            "CAST(SUM(CASE WHEN cost_micros IS NULL AND outcome <> 'in_flight' THEN 1 ELSE 0 END)"
            " AS BIGINT) AS unpriced "
            f"FROM {self.table} WHERE started_at >= ? AND started_at < ? AND outcome <> ? "
            "GROUP BY grp"
        )
        rows = await self.db.fetch(sql, since, until, DISCARDED)
        groups = [
            UsageGroup(
                group=None if row["grp"] is None else str(row["grp"]),
                requests=int(row["requests"]),
                input_tokens=int(row["input_tokens"]),
                output_tokens=int(row["output_tokens"]),
                cache_creation_tokens=int(row["cache_creation_tokens"]),
                cache_read_tokens=int(row["cache_read_tokens"]),
                cost_micros=int(row["cost_micros"]),
                not_complete=int(row["partial"]),
                unpriced=int(row["unpriced"]),
            )
            for row in rows
        ]
        return sorted(groups, key=UsageGroup.sort_key)


def _row(entry: RecordEntry) -> list[Any]:
    # Runs for every record in the writer task, on the event loop: the field values come
    # straight from the snapshots (no record object), then four slots are encoded.
    values = list(entry.values())
    attempts, tools = values[_AT_ATTEMPTS], values[_AT_TOOLS]
    values[_AT_ATTEMPTS] = _ENCODE(list(attempts)) if attempts else "[]"
    values[_AT_TOOLS] = _ENCODE(tools) if tools else "{}"
    values[_AT_STREAM] = int(values[_AT_STREAM])
    values[_AT_ESTIMATED] = int(values[_AT_ESTIMATED])
    values.append(utc_day(values[_AT_STARTED]))
    return values


def _record(row: Mapping[str, Any]) -> UsageRecord:
    values: dict[str, Any] = {}
    for name in FIELD_NAMES:
        value = row[_RENAMED.get(name, name)]
        if name in _JSON_FIELDS:
            value = json.loads(value) if value else None
        elif name in _BOOL_FIELDS:
            value = bool(value)
        values[name] = value
    return UsageRecord.from_json(values)
