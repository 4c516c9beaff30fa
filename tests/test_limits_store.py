"""The limit-policy store on SQLite and the real PostgreSQL, and the cache every gateway
reads it through (a change reaches every instance within ``ttl``)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from llmgw.errors import ConfigError
from llmgw.limits import Tier, parse_limit_set
from llmgw.limits.source import CachedPolicies
from llmgw.limits.store import LimitPolicyStore, check_scope
from llmgw.storage.db import Database, open_database

PG_ROOT = "postgresql://postgres@127.0.0.1:5432/test"
TEAM = parse_limit_set({"rpm": 60, "budgets": [{"usd": 25, "period": "daily"}]}, "t")
USER = parse_limit_set({"tpm": 1000}, "u")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    schema = None
    if request.param == "sqlite":
        database: Database = open_database(f"sqlite:///{tmp_path / 'limits.db'}")
    else:
        schema = "llmgw_limits_" + secrets.token_hex(6)
        conn = await asyncpg.connect(PG_ROOT)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
        finally:
            await conn.close()
        database = open_database(f"{PG_ROOT}?options=-csearch_path%3D{schema}")
    await database.open()
    try:
        yield database
    finally:
        await database.close()
        if schema is not None:
            conn = await asyncpg.connect(PG_ROOT)
            try:
                await conn.execute(f"DROP SCHEMA {schema} CASCADE")
            finally:
                await conn.close()


@pytest.fixture
async def store(db: Database) -> LimitPolicyStore:
    s = LimitPolicyStore(db)
    await s.open()
    await s.open()  # idempotent: every instance opens it at start
    return s


async def test_put_get_list_delete_round_trip(store: LimitPolicyStore) -> None:
    assert await store.get(Tier.TEAM, "core") is None
    await store.put(Tier.TEAM, "core", TEAM)
    await store.put(Tier.USER, "ada", USER)
    got = await store.get(Tier.TEAM, "core")
    assert got is not None and got.limits == TEAM and got.updated_at > 0
    assert [(p.tier, p.name) for p in await store.list()] == [
        (Tier.TEAM, "core"),
        (Tier.USER, "ada"),
    ]
    assert [p.name for p in await store.list(Tier.USER)] == ["ada"]

    await store.put(Tier.TEAM, "core", USER)  # replaces, never merges
    replaced = await store.get(Tier.TEAM, "core")
    assert replaced is not None and replaced.limits == USER

    removed = await store.delete(Tier.TEAM, "core")
    assert removed is not None and removed.limits == USER
    assert await store.delete(Tier.TEAM, "core") is None
    assert await store.get(Tier.TEAM, "core") is None


async def test_every_change_bumps_the_version_and_reads_do_not(store: LimitPolicyStore) -> None:
    v0 = await store.version()
    await store.put(Tier.PROJECT, "gw", TEAM)
    v1 = await store.version()
    await store.get(Tier.PROJECT, "gw")
    await store.list()
    assert await store.version() == v1 > v0
    await store.delete(Tier.PROJECT, "gw")
    v2 = await store.version()
    assert v2 > v1
    await store.delete(Tier.PROJECT, "gw")  # nothing removed, nothing to reload
    assert await store.version() == v2


async def test_a_change_reaches_another_instance_within_the_ttl(db: Database) -> None:
    store = LimitPolicyStore(db)
    await store.open()
    clock = Clock()
    here = CachedPolicies(LimitPolicyStore(db), ttl=5.0, clock=clock)
    there = CachedPolicies(LimitPolicyStore(db), ttl=5.0, clock=clock)
    assert await there.get(Tier.TEAM, "core") is None  # loaded: empty

    await here.put(Tier.TEAM, "core", TEAM)
    assert await here.get(Tier.TEAM, "core") == TEAM  # the writer enforces it at once
    clock.now += 4.9
    assert await there.get(Tier.TEAM, "core") is None  # still inside its ttl
    clock.now += 0.1
    assert await there.get(Tier.TEAM, "core") == TEAM  # at the ttl: every instance

    await store.delete(Tier.TEAM, "core")  # e.g. `llmgw limits delete` on another host
    clock.now += 5.0
    assert await here.get(Tier.TEAM, "core") is None
    assert await there.get(Tier.TEAM, "core") is None


async def test_unchanged_limit_sets_keep_their_object_across_reloads(db: Database) -> None:
    clock = Clock()
    store = LimitPolicyStore(db)
    await store.open()
    cache = CachedPolicies(store, ttl=1.0, clock=clock)
    await cache.put(Tier.TEAM, "core", TEAM)
    before = await cache.get(Tier.TEAM, "core")
    await cache.put(Tier.USER, "ada", USER)
    clock.now += 1.0
    assert await cache.get(Tier.TEAM, "core") is before  # the limiter skips recompiling it
    assert await cache.get(Tier.USER, "ada") == USER


async def test_an_unreachable_store_keeps_the_last_snapshot(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'gone.db'}")
    await db.open()
    clock = Clock()
    cache = CachedPolicies(LimitPolicyStore(db), ttl=1.0, clock=clock)
    assert cache.store is not None
    await cache.store.open()
    await cache.put(Tier.TEAM, "core", TEAM)
    await db.close()  # every query fails from now on
    clock.now += 1.0
    assert await cache.get(Tier.TEAM, "core") == TEAM


async def test_unbound_cache_answers_tier_defaults_only() -> None:
    assert await CachedPolicies().get(Tier.TEAM, "core") is None


def test_scope_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^tier: unknown tier 'org'"):
        check_scope("org", "x")
    with pytest.raises(ConfigError, match=r"^name: the global tier has one entry, named '\*'"):
        check_scope("global", "all")
    with pytest.raises(ConfigError, match=r"^name: must be 1 to 256 characters"):
        check_scope("team", "x" * 257)
    assert check_scope("global", "*") is Tier.GLOBAL
