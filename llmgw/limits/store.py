"""Per-entity limit sets in the shared SQL database (admin API and ``llmgw limits``).

One row per ``(tier, name)`` holds the limit set as JSON (what
:func:`~llmgw.limits.policy.parse_limit_set` reads). Every change also bumps a single
version number in the same transaction, so a gateway learns that nothing changed from
one tiny query and rereads the table only after a change.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..storage.db import Database, Row
from .policy import LimitSet, Tier, parse_limit_set

__all__ = ("LimitPolicy", "LimitPolicyStore", "check_scope", "parse_row", "parse_tier")

log = logging.getLogger("llmgw.limits")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS llmgw_limit_policies (
        tier TEXT NOT NULL,
        name TEXT NOT NULL,
        limits TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (tier, name)
    )""",
    """CREATE TABLE IF NOT EXISTS llmgw_limit_policy_version (
        id INTEGER PRIMARY KEY,
        version BIGINT NOT NULL
    )""",
    "INSERT INTO llmgw_limit_policy_version (id, version) VALUES (1, 0)"
    " ON CONFLICT (id) DO NOTHING",
)
_BUMP = "UPDATE llmgw_limit_policy_version SET version = version + 1 WHERE id = 1"
_MAX_NAME = 256


def parse_tier(tier: str) -> Tier:
    try:
        return Tier(tier)
    except ValueError:
        tiers = ", ".join(t.value for t in Tier)
        raise ConfigError(f"tier: unknown tier {tier!r} (expected one of {tiers})") from None


def check_scope(tier: str, name: str) -> Tier:
    """The tier named ``tier``, with ``name`` checked for it; errors name ``tier``/``name``."""
    parsed = parse_tier(tier)
    if parsed is Tier.GLOBAL and name != "*":
        raise ConfigError("name: the global tier has one entry, named '*'")
    if not name or len(name) > _MAX_NAME:
        raise ConfigError(f"name: must be 1 to {_MAX_NAME} characters")
    return parsed


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitPolicy:
    """The limit set of one key, user, team, project or session (or the global tier)."""

    tier: Tier
    name: str
    limits: LimitSet
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier.value,
            "name": self.name,
            "limits": self.limits.to_json(),
            "updated_at": self.updated_at,
        }


class LimitPolicyStore:
    """Rows of ``llmgw_limit_policies``; the database is opened and closed by its owner."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    async def open(self) -> None:
        async with self.db.transaction():
            if self.db.dialect == "postgres":
                # Two instances starting together would race on CREATE TABLE IF NOT EXISTS.
                await self.db.execute("SELECT pg_advisory_xact_lock(7400216)")
            for statement in _SCHEMA:
                await self.db.execute(statement)

    async def version(self) -> int:
        """Changes with every put and delete (from any instance or the CLI)."""
        row = await self.db.fetchrow("SELECT version FROM llmgw_limit_policy_version WHERE id = 1")
        return int(row["version"]) if row is not None else 0

    async def get(self, tier: Tier, name: str) -> LimitPolicy | None:
        row = await self.db.fetchrow(
            "SELECT tier, name, limits, updated_at FROM llmgw_limit_policies"
            " WHERE tier = ? AND name = ?",
            tier.value,
            name,
        )
        return _policy(row) if row is not None else None

    async def list(self, tier: Tier | None = None) -> list[LimitPolicy]:
        """Every stored policy (of ``tier``), by tier and name; unreadable rows are skipped."""
        return [p for p in map(_policy, await self.rows(tier)) if p is not None]

    async def rows(self, tier: Tier | None = None) -> builtins.list[Row]:
        """The raw rows (``tier``, ``name``, ``limits`` as JSON text, ``updated_at``)."""
        sql = "SELECT tier, name, limits, updated_at FROM llmgw_limit_policies"
        if tier is None:
            return await self.db.fetch(sql + " ORDER BY tier, name")
        return await self.db.fetch(sql + " WHERE tier = ? ORDER BY name", tier.value)

    async def put(self, tier: Tier, name: str, limits: LimitSet) -> LimitPolicy:
        """Create or replace the limit set of ``(tier, name)``."""
        policy = LimitPolicy(tier=tier, name=name, limits=limits, updated_at=self._clock())
        text = json.dumps(limits.to_json(), sort_keys=True)
        async with self.db.transaction():
            await self.db.execute(
                "INSERT INTO llmgw_limit_policies (tier, name, limits, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (tier, name) DO UPDATE"
                " SET limits = excluded.limits, updated_at = excluded.updated_at",
                tier.value,
                name,
                text,
                policy.updated_at,
            )
            await self.db.execute(_BUMP)
        return policy

    async def delete(self, tier: Tier, name: str) -> LimitPolicy | None:
        """Remove ``(tier, name)``'s limit set; the removed policy, ``None`` if there was none."""
        async with self.db.transaction():
            old = await self.get(tier, name)
            if old is None:
                return None
            await self.db.execute(
                "DELETE FROM llmgw_limit_policies WHERE tier = ? AND name = ?", tier.value, name
            )
            await self.db.execute(_BUMP)
        return old


def parse_row(row: Row) -> LimitSet:
    """A row's limit set; raises ``ValueError`` (naming the row) when it does not parse."""
    where = f"{row['tier']}/{row['name']}"
    try:
        data = json.loads(row["limits"])
    except ValueError:
        raise ConfigError(f"{where}: limits are not valid JSON") from None
    return parse_limit_set(data, where)


def _policy(row: Row) -> LimitPolicy | None:
    try:
        tier = Tier(row["tier"])
        limits = parse_row(row)
    except ValueError as exc:
        log.warning("skipping unreadable limit policy: %s", exc)
        return None
    return LimitPolicy(
        tier=tier, name=row["name"], limits=limits, updated_at=float(row["updated_at"])
    )
