"""One KeyStore contract, run against the memory store, SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from llmgw.auth import KeyHasher, KeyManager, KeySpec
from llmgw.auth.sql import SQLKeyStore
from llmgw.auth.store import KeyStore, MemoryKeyStore
from llmgw.errors import InvalidRequestError, NotFoundError
from llmgw.storage.db import Database, open_database

PG_ROOT = "postgresql://postgres@127.0.0.1:5432/test"
HASHER = KeyHasher(b"store-contract-secret-0123456789")


async def pg_schema_dsn() -> tuple[str, str]:
    """A fresh schema and a DSN whose search_path points at it."""
    schema = "llmgw_auth_" + secrets.token_hex(6)
    conn = await asyncpg.connect(PG_ROOT)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return schema, f"{PG_ROOT}?options=-csearch_path%3D{schema}"


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(PG_ROOT)
    try:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    if request.param == "memory":
        yield MemoryKeyStore()
        return
    schema = None
    if request.param == "sqlite":
        db: Database = open_database(f"sqlite:///{tmp_path / 'keys.db'}")
    else:
        schema, dsn = await pg_schema_dsn()
        db = open_database(dsn)
    await db.open()
    sql = SQLKeyStore(db)
    await sql.open()
    await sql.open()  # idempotent
    try:
        yield sql
    finally:
        await db.close()
        if schema is not None:
            await drop_schema(schema)


async def test_created_key_is_found_by_digest_with_every_field(store: KeyStore) -> None:
    manager = KeyManager(store, HASHER)
    spec = KeySpec(
        name="ci",
        user="ada",
        team="core",
        project="gw",
        allowed_models=["claude-haiku-*"],
        limits={"rpm": 60, "budgets": [{"period": "day", "usd": 5}]},
        metadata={"ticket": "OPS-1"},
        expires_at=2_000_000_000.5,
    )
    record, new = await manager.create(spec)
    assert new.secret.startswith("sk-llmgw-") and len(new.secret) >= 9 + 43
    match = await store.lookup(HASHER.digest(new.secret))
    assert match is not None
    assert match.record == record
    assert match.valid_until is None
    assert record.allowed_models == ("claude-haiku-*",)
    assert record.limits == {"rpm": 60, "budgets": [{"period": "day", "usd": 5}]}
    assert await store.get(record.key_id) == record
    assert await store.lookup(HASHER.digest(new.secret + "x")) is None


async def test_list_orders_by_creation_and_hides_revoked_unless_asked(store: KeyStore) -> None:
    manager = KeyManager(store, HASHER)
    a, _ = await manager.create(KeySpec(name="a"))
    b, _ = await manager.create(KeySpec(name="b"))
    await manager.revoke(a.key_id)
    assert [r.key_id for r in await store.list()] == [b.key_id]
    listed = await store.list(include_revoked=True)
    assert [r.key_id for r in listed] == [a.key_id, b.key_id]
    assert listed[0].revoked_at is not None


async def test_update_changes_limits_models_and_expiry(store: KeyStore) -> None:
    manager = KeyManager(store, HASHER)
    record, new = await manager.create(KeySpec())
    updated = await manager.update(
        record.key_id, {"limits": {"tpm": 1000}, "allowed_models": ["m"], "expires_at": 5.0}
    )
    assert (await store.get(record.key_id)) == updated
    match = await store.lookup(HASHER.digest(new.secret))
    assert match is not None and match.record.limits == {"tpm": 1000}
    assert match.record.allowed_models == ("m",) and match.record.expires_at == 5.0
    cleared = await manager.update(record.key_id, {"allowed_models": None})
    assert cleared.allowed_models is None
    with pytest.raises(InvalidRequestError) as refused:
        await manager.update(record.key_id, {"hint": "x"})
    assert refused.value.message == "hint: not an updatable field"
    with pytest.raises(NotFoundError):
        await manager.update("key_missing", {"name": "x"})


async def test_rotation_gives_old_digest_a_grace_end(store: KeyStore) -> None:
    manager = KeyManager(store, HASHER)
    record, old = await manager.create(KeySpec())
    rotated, new, until = await manager.rotate(record.key_id, grace=100)
    assert rotated.hint == new.hint != record.hint
    old_match = await store.lookup(HASHER.digest(old.secret))
    new_match = await store.lookup(HASHER.digest(new.secret))
    assert old_match is not None and old_match.valid_until == pytest.approx(until)
    assert new_match is not None and new_match.valid_until is None
    # A second rotation never extends the first grace, and drops digests past theirs.
    _, newer, _ = await manager.rotate(record.key_id, grace=1000)
    again = await store.lookup(HASHER.digest(old.secret))
    assert again is not None and again.valid_until == pytest.approx(until)
    await manager.rotate(record.key_id, grace=0)
    assert await store.lookup(HASHER.digest(newer.secret)) is not None  # grace 0: until now
    await manager.rotate(record.key_id, grace=0)
    assert await store.lookup(HASHER.digest(newer.secret)) is None  # expired ones are purged


async def test_revoked_key_cannot_be_rotated_and_revoke_is_idempotent(store: KeyStore) -> None:
    manager = KeyManager(store, HASHER)
    record, _ = await manager.create(KeySpec())
    first = await manager.revoke(record.key_id)
    assert (await manager.revoke(record.key_id)).revoked_at == first.revoked_at
    with pytest.raises(InvalidRequestError) as refused:
        await manager.rotate(record.key_id, grace=10)
    assert "revoked" in refused.value.message
    with pytest.raises(NotFoundError):
        await manager.revoke("key_missing")


@pytest.mark.postgres
async def test_postgres_dump_holds_digests_never_keys(tmp_path: Path) -> None:
    schema, dsn = await pg_schema_dsn()
    db = open_database(dsn)
    await db.open()
    try:
        store = SQLKeyStore(db)
        await store.open()
        manager = KeyManager(store, HASHER)
        record, new = await manager.create(KeySpec(name="dumped"))
        await manager.rotate(record.key_id, grace=60)
    finally:
        await db.close()
    try:
        proc = await asyncio.create_subprocess_exec(
            *("pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-n", schema, "test"),
            stdout=asyncio.subprocess.PIPE,
        )
        dump, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
    finally:
        await drop_schema(schema)
    assert record.key_id.encode() in dump
    assert HASHER.digest(new.secret).encode() in dump
    assert new.secret.encode() not in dump
    assert new.secret[len("sk-llmgw-") :].encode() not in dump


async def test_pages_walk_every_key_once_in_creation_order(store: KeyStore) -> None:
    clock = iter(float(t) for t in (100, 100, 100, 101, 102, 103))  # ties on created_at
    manager = KeyManager(store, HASHER, clock=lambda: next(clock))
    made = [(await manager.create(KeySpec(name=f"k{i}")))[0] for i in range(5)]
    expected = [r.key_id for r in sorted(made, key=lambda r: (r.created_at, r.key_id))]
    await manager.revoke(expected[1])  # the last clock read

    seen: list[str] = []
    after: str | None = None
    while True:
        page, more = await manager.page(limit=2, after=after, include_revoked=True)
        seen += [r.key_id for r in page]
        if not more:
            break
        after = page[-1].key_id
    assert seen == expected

    active, more = await manager.page(limit=10, after=expected[0])
    assert [r.key_id for r in active] == expected[2:] and not more
    # A revoked key is still a valid cursor: the next page of active keys follows it.
    active, _ = await manager.page(limit=1, after=expected[1])
    assert [r.key_id for r in active] == expected[2:3]
    with pytest.raises(InvalidRequestError) as refused:
        await manager.page(limit=2, after="key_missing")
    assert refused.value.message == "after: no key with id 'key_missing'"
