"""The sink protocol audit records are written through, and the query a reader answers.

A sink that only exports (a SIEM forwarder) implements :class:`AuditSink`; the writer keeps
the chain head in memory and asks the sink for it once, at open (``head`` may return
``(0, GENESIS)`` when the sink cannot read back). Sinks that can be read back
(SQL, JSON Lines) also implement :class:`AuditReader`, for ``verify``, ``export`` and
``GET /admin/audit``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .chain import ReadEntry, SealedRecord

__all__ = ("AuditQuery", "AuditReader", "AuditSink", "matches")


@runtime_checkable
class AuditSink(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def head(self, chain: str) -> tuple[int, str]:
        """(last seq, last hash) of ``chain`` as stored."""
        ...

    async def write(self, records: Sequence[SealedRecord]) -> None:
        """Persist ``records`` in order, durably per the sink's policy, or raise."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditQuery:
    since: float | None = None
    until: float | None = None
    kind: str | None = None
    key_id: str | None = None
    request_id: str | None = None
    decision: str | None = None
    status: int | None = None
    chain: str | None = None
    limit: int | None = None


def matches(query: AuditQuery, sealed: SealedRecord) -> bool:
    rec = sealed.record
    ts = rec.get("ts")
    if query.since is not None and not (isinstance(ts, int | float) and ts >= query.since):
        return False
    if query.until is not None and not (isinstance(ts, int | float) and ts < query.until):
        return False
    if query.chain is not None and sealed.chain != query.chain:
        return False
    for name in ("kind", "key_id", "request_id", "decision", "status"):
        wanted = getattr(query, name)
        if wanted is not None and rec.get(name) != wanted:
            return False
    return True


@runtime_checkable
class AuditReader(Protocol):
    def entries(self) -> AsyncIterator[ReadEntry]:
        """Every stored entry in storage order, for verification."""
        ...

    def query(self, query: AuditQuery) -> AsyncIterator[SealedRecord]:
        """Records matching ``query`` in storage order."""
        ...
