"""A thin async SQL handle over SQLite (aiosqlite) or PostgreSQL (asyncpg).

Stores write their SQL once, with ``?`` placeholders; the PostgreSQL handle rewrites them
to ``$1, $2 ...``. Keep the SQL portable (``INTEGER``/``BIGINT``/``TEXT``/``DOUBLE
PRECISION``; ``ON CONFLICT`` upserts; no ``RETURNING *`` tricks) and each store's schema
in ``CREATE TABLE IF NOT EXISTS`` statements run by its ``open()``.

Drivers are optional extras imported here on first use, with an error naming the extra.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError

__all__ = ("Database", "PostgresDatabase", "SQLiteDatabase", "insert_rows", "open_database")

Row = Mapping[str, Any]

#: Parameters one statement may bind: SQLite's limit (999 before 3.32), under PostgreSQL's.
_MAX_PARAMS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
#: Rows per multi-row ``INSERT``: few distinct statement texts for the statement caches.
_MAX_ROWS = 100


class Database(Protocol):
    """What the stores need from a SQL engine."""

    #: ``"sqlite"`` or ``"postgres"``, for the rare statement that must differ.
    dialect: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def execute(self, sql: str, *args: Any) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    def transaction(self) -> Any:
        """``async with db.transaction():`` — statements inside commit together."""
        ...


class SQLiteDatabase:
    """One aiosqlite connection in WAL mode; a lock serialises transactions."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: Any = None
        self._lock = asyncio.Lock()
        # Task-local: only the task that opened the transaction runs inside it.
        self._in_tx: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"llmgw.sqlite.tx.{id(self)}", default=False
        )

    async def open(self) -> None:
        try:
            import aiosqlite
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigError(
                "SQLite storage needs the 'sqlite' extra: pip install llmgw[sqlite]"
            ) from None
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = await aiosqlite.connect(self.path, isolation_level=None)
        self._conn.row_factory = aiosqlite.Row
        await self._conn.execute("PRAGMA busy_timeout=5000")
        await self._conn.execute("PRAGMA synchronous=NORMAL")
        # WAL is a property of the file: set it once. Switching modes needs an exclusive
        # lock and SQLite may answer "database is locked" at once, without waiting, when
        # another process (a second gateway, the CLI) has the file open: retry briefly.
        for attempt in range(50):
            async with self._conn.execute("PRAGMA journal_mode") as cur:
                row = await cur.fetchone()
            if row is None or str(row[0]).lower() in ("wal", "memory"):
                break
            try:
                await self._conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def execute(self, sql: str, *args: Any) -> None:
        if self._in_tx.get():
            await self._conn.execute(sql, args)
            return
        async with self._lock:
            await self._conn.execute(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._conn.execute(sql, args) as cur:
            return [dict(row) for row in await cur.fetchall()]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._conn.execute(sql, args) as cur:
            row = await cur.fetchone()
        return dict(row) if row is not None else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self._in_tx.get():  # nested: join the outer transaction
            yield
            return
        async with self._lock:
            token = self._in_tx.set(True)
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            else:
                await self._conn.execute("COMMIT")
            finally:
                self._in_tx.reset(token)


_PLACEHOLDER = re.compile(r"'[^']*'|\?")


def _to_dollar(sql: str) -> str:
    """``?`` → ``$n`` outside string literals."""
    counter = 0

    def repl(match: re.Match[str]) -> str:
        nonlocal counter
        if match.group() != "?":
            return match.group()
        counter += 1
        return f"${counter}"

    return _PLACEHOLDER.sub(repl, sql)


class PostgresDatabase:
    """An asyncpg pool; each transaction holds one connection."""

    dialect = "postgres"

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn = dsn
        self._pool: Any = None
        self._min = min_size
        self._max = max_size
        self._tx_conn: contextvars.ContextVar[Any] = contextvars.ContextVar(
            f"llmgw.pg.tx.{id(self)}", default=None
        )
        self._sql_cache: dict[str, str] = {}

    async def open(self) -> None:
        try:
            import asyncpg
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigError(
                "PostgreSQL storage needs the 'postgres' extra: pip install llmgw[postgres]"
            ) from None
        self._pool = await asyncpg.create_pool(self.dsn, min_size=self._min, max_size=self._max)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _sql(self, sql: str) -> str:
        cached = self._sql_cache.get(sql)
        if cached is None:
            cached = self._sql_cache[sql] = _to_dollar(sql)
        return cached

    async def execute(self, sql: str, *args: Any) -> None:
        conn = self._tx_conn.get()
        if conn is not None:
            await conn.execute(self._sql(sql), *args)
            return
        await self._pool.execute(self._sql(sql), *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        target = self._tx_conn.get() or self._pool
        return [dict(r) for r in await target.fetch(self._sql(sql), *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        target = self._tx_conn.get() or self._pool
        row = await target.fetchrow(self._sql(sql), *args)
        return dict(row) if row is not None else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self._tx_conn.get() is not None:  # nested: join the outer transaction
            yield
            return
        async with self._pool.acquire() as conn, conn.transaction():
            token = self._tx_conn.set(conn)
            try:
                yield
            finally:
                self._tx_conn.reset(token)


async def insert_rows(
    db: Database, head: str, rows: Sequence[Sequence[Any]], *, tail: str = ""
) -> None:
    """``{head} VALUES (?, ...), (?, ...) {tail}`` for every row of ``rows`` (all of one
    width): statements of up to 100 rows (fewer where the parameter limit says so), one
    transaction when there are several.

    Not ``executemany``: aiosqlite runs SQLite in a thread, and ``executemany`` steps
    there once per row, handing the GIL to and from the event loop each time. With
    batches of ~250 usage rows that cost the loop ~60 µs of latency per request; one
    statement binds its rows at once and runs them in one step with the GIL released.
    """
    if not rows:
        return
    width = len(rows[0])
    per = max(1, min(_MAX_ROWS, _MAX_PARAMS // width))
    row_marks = "(" + ", ".join(["?"] * width) + ")"

    async def insert(chunk: Sequence[Sequence[Any]]) -> None:
        marks = ", ".join([row_marks] * len(chunk))
        await db.execute(f"{head} VALUES {marks} {tail}", *(v for row in chunk for v in row))

    if len(rows) <= per:
        await insert(rows)
        return
    async with db.transaction():
        for i in range(0, len(rows), per):
            await insert(rows[i : i + per])


def open_database(url: str) -> Database:
    """A database handle for ``sqlite:///path``, ``sqlite://:memory:`` or ``postgresql://...``.

    The handle is not connected yet: call ``await db.open()`` (``make_app`` does it in its
    cleanup context).
    """
    if url.startswith("sqlite://"):
        # SQLAlchemy's convention: sqlite:///rel.db, sqlite:////abs/path.db, sqlite://:memory:
        path = url.removeprefix("sqlite://")
        path = path.removeprefix("/")
        return SQLiteDatabase(path or ":memory:")
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    raise ConfigError(f"storage.url: unsupported database URL scheme in {url.split(':', 1)[0]!r}")
