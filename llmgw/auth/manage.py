"""Key lifecycle (create, update, rotate, revoke): the one implementation behind the admin
API and ``llmgw keys``. Secrets leave only in the return value of ``create``/``rotate``."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidRequestError, NotFoundError
from .keys import KeyHasher, NewKey, new_key_id
from .store import KeyRecord, KeyStore

__all__ = ("UPDATABLE_FIELDS", "KeyManager", "KeySpec")

#: What ``update`` may change (the rest is identity or history).
UPDATABLE_FIELDS = (
    "name",
    "user",
    "team",
    "project",
    "allowed_models",
    "limits",
    "metadata",
    "expires_at",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySpec:
    """What a new key is for; every field optional."""

    name: str | None = None
    user: str | None = None
    team: str | None = None
    project: str | None = None
    allowed_models: Sequence[str] | None = None
    limits: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    expires_at: float | None = None


class KeyManager:
    """``on_change(key_id)`` runs after every change (``Authenticator.invalidate``)."""

    def __init__(
        self,
        store: KeyStore,
        hasher: KeyHasher,
        *,
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.hasher = hasher
        self._on_change = on_change
        self._clock = clock

    async def create(self, spec: KeySpec) -> tuple[KeyRecord, NewKey]:
        now = self._clock()
        new = self.hasher.new_key()
        record = KeyRecord(
            key_id=new_key_id(),
            hint=new.hint,
            created_at=now,
            updated_at=now,
            name=spec.name,
            user=spec.user,
            team=spec.team,
            project=spec.project,
            allowed_models=tuple(spec.allowed_models) if spec.allowed_models is not None else None,
            limits=dict(spec.limits),
            metadata=dict(spec.metadata),
            expires_at=spec.expires_at,
        )
        await self.store.create(record, new.digest)
        return record, new

    async def get(self, key_id: str) -> KeyRecord:
        record = await self.store.get(key_id)
        if record is None:
            raise NotFoundError(f"key {key_id!r} not found")
        return record

    async def list(self, *, include_revoked: bool = False) -> list[KeyRecord]:
        return await self.store.list(include_revoked=include_revoked)

    async def page(
        self, *, limit: int, after: str | None = None, include_revoked: bool = False
    ) -> tuple[builtins.list[KeyRecord], bool]:
        """Up to ``limit`` records after the key ``after``, and whether more follow.

        An ``after`` that names no key is a 400: an empty page would read as "no more keys".
        """
        if limit < 1:
            raise InvalidRequestError("limit: must be at least 1")
        if after is not None and await self.store.get(after) is None:
            raise InvalidRequestError(f"after: no key with id {after!r}")
        records = await self.store.list(
            include_revoked=include_revoked, limit=limit + 1, after=after
        )
        return records[:limit], len(records) > limit

    async def update(self, key_id: str, changes: Mapping[str, Any]) -> KeyRecord:
        unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
        if unknown:
            raise InvalidRequestError(f"{unknown[0]}: not an updatable field")
        record = await self.get(key_id)
        values = dict(changes)
        if values.get("allowed_models") is not None:
            values["allowed_models"] = tuple(values["allowed_models"])
        record = replace(record, **values, updated_at=self._clock())
        await self._save(record)
        return record

    async def rotate(self, key_id: str, *, grace: float) -> tuple[KeyRecord, NewKey, float]:
        """A new secret for the same key; the old one keeps working for ``grace`` seconds."""
        record = await self.get(key_id)
        if record.revoked_at is not None:
            raise InvalidRequestError(f"key {key_id!r} is revoked and cannot be rotated")
        now = self._clock()
        new = self.hasher.new_key()
        retire_at = now + max(0.0, grace)
        if not await self.store.add_digest(
            key_id, new.digest, hint=new.hint, retire_at=retire_at, now=now
        ):
            raise NotFoundError(f"key {key_id!r} not found")
        self._changed(key_id)
        return await self.get(key_id), new, retire_at

    async def revoke(self, key_id: str) -> KeyRecord:
        """Idempotent; a revoked key never matches again (every digest of it)."""
        record = await self.get(key_id)
        if record.revoked_at is None:
            now = self._clock()
            record = replace(record, revoked_at=now, updated_at=now)
            await self._save(record)
        else:
            self._changed(key_id)
        return record

    async def _save(self, record: KeyRecord) -> None:
        if not await self.store.update(record):
            raise NotFoundError(f"key {record.key_id!r} not found")
        self._changed(record.key_id)

    def _changed(self, key_id: str) -> None:
        if self._on_change is not None:
            self._on_change(key_id)
