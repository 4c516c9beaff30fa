"""Where virtual keys live: the record, the ``KeyStore`` contract and an in-memory store.

A key has one record and one or more digests. Rotation adds a digest and gives the old ones
a ``valid_until`` (the grace period); revocation marks the record, so every digest of the
key stops matching at once. The SQL store (:mod:`llmgw.auth.sql`) keeps the same contract
on SQLite and PostgreSQL; the contract tests run against all three.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

__all__ = ("KeyMatch", "KeyRecord", "KeyStore", "MemoryKeyStore")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRecord:
    """Everything known about a virtual key except the key itself."""

    key_id: str
    hint: str
    created_at: float
    updated_at: float
    name: str | None = None
    user: str | None = None
    team: str | None = None
    project: str | None = None
    #: ``None``: every model; otherwise exact names or ``fnmatch`` patterns.
    allowed_models: tuple[str, ...] | None = None
    #: Free-form limit and budget references read by the limits middleware
    #: (``rpm``, ``tpm``, ``max_concurrency``, ``budgets``...).
    limits: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    expires_at: float | None = None
    revoked_at: float | None = None

    def public(self) -> dict[str, Any]:
        """The JSON shape the admin API and CLI show (no digest, no secret)."""
        return {
            "id": self.key_id,
            "hint": self.hint,
            "name": self.name,
            "user": self.user,
            "team": self.team,
            "project": self.project,
            "allowed_models": list(self.allowed_models)
            if self.allowed_models is not None
            else None,
            "limits": dict(self.limits),
            "metadata": dict(self.metadata),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyMatch:
    """A digest lookup hit: the record, the stored digest and that digest's grace end."""

    record: KeyRecord
    digest: str
    valid_until: float | None = None


class KeyStore(Protocol):
    """Persistence for virtual keys; digests only, never keys."""

    async def open(self) -> None:
        """Create the schema if needed (idempotent, safe from several instances)."""

    async def close(self) -> None: ...

    async def create(self, record: KeyRecord, digest: str) -> None: ...

    async def get(self, key_id: str) -> KeyRecord | None: ...

    async def list(
        self, *, include_revoked: bool = False, limit: int | None = None, after: str | None = None
    ) -> list[KeyRecord]:
        """Records ordered by (creation time, key id); at most ``limit``, starting after the
        key ``after`` (keyset pagination: stable while keys are added; an unknown ``after``
        gives an empty page)."""
        ...

    async def lookup(self, digest: str) -> KeyMatch | None:
        """The key a digest belongs to, revoked or not (the caller decides)."""
        ...

    async def update(self, record: KeyRecord) -> bool:
        """Overwrite the record's mutable fields; ``False`` if the key does not exist."""
        ...

    async def add_digest(
        self, key_id: str, digest: str, *, hint: str, retire_at: float, now: float
    ) -> bool:
        """Rotation: older digests stay valid until ``retire_at``, ``digest`` is added and
        ``hint`` replaces the record's; digests past their grace are dropped."""
        ...


class MemoryKeyStore:
    """Dicts behind a lock; for tests and single-process setups that need no persistence."""

    def __init__(self) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._digests: dict[str, tuple[str, float | None]] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create(self, record: KeyRecord, digest: str) -> None:
        async with self._lock:
            if record.key_id in self._records:
                raise ValueError(f"key {record.key_id} already exists")
            self._records[record.key_id] = record
            self._digests[digest] = (record.key_id, None)

    async def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    async def list(
        self, *, include_revoked: bool = False, limit: int | None = None, after: str | None = None
    ) -> list[KeyRecord]:
        records = sorted(self._records.values(), key=lambda r: (r.created_at, r.key_id))
        if after is not None:
            cursor = self._records.get(after)
            if cursor is None:
                return []
            records = [r for r in records if (r.created_at, r.key_id) > (cursor.created_at, after)]
        records = [r for r in records if include_revoked or r.revoked_at is None]
        return records if limit is None else records[:limit]

    async def lookup(self, digest: str) -> KeyMatch | None:
        hit = self._digests.get(digest)
        if hit is None:
            return None
        key_id, valid_until = hit
        return KeyMatch(record=self._records[key_id], digest=digest, valid_until=valid_until)

    async def update(self, record: KeyRecord) -> bool:
        async with self._lock:
            if record.key_id not in self._records:
                return False
            self._records[record.key_id] = record
            return True

    async def add_digest(
        self, key_id: str, digest: str, *, hint: str, retire_at: float, now: float
    ) -> bool:
        async with self._lock:
            record = self._records.get(key_id)
            if record is None:
                return False
            for d, (kid, until) in list(self._digests.items()):
                if kid != key_id:
                    continue
                if until is not None and until <= now:
                    del self._digests[d]
                else:
                    self._digests[d] = (kid, retire_at if until is None else min(until, retire_at))
            self._digests[digest] = (key_id, None)
            self._records[key_id] = replace(record, hint=hint, updated_at=now)
            return True
