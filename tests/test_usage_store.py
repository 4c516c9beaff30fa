"""The usage-store contract, run against memory, SQLite and the machine's PostgreSQL."""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmgw.metering import (
    DISCARDED,
    MemoryUsageStore,
    SQLUsageStore,
    UsageRecord,
    UsageStore,
)
from llmgw.storage.db import open_database

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
DAY = 86_400.0
T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UsageStore]:
    if request.param == "memory":
        yield MemoryUsageStore()
        return
    if request.param == "sqlite":
        db = open_database(f"sqlite:///{tmp_path}/usage.db")
        await db.open()
        sql = SQLUsageStore(db)
        await sql.open()
        yield sql
        await db.close()
        return
    asyncpg = pytest.importorskip("asyncpg")
    schema = "usage_" + secrets.token_hex(6)
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f"CREATE SCHEMA {schema}")
    db = open_database(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        await db.open()
        sql = SQLUsageStore(db)
        await sql.open()
        yield sql
    finally:
        await db.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


def record(request_id: str, **fields: object) -> UsageRecord:
    values: dict[str, object] = {"request_id": request_id, "started_at": T0}
    values.update(fields)
    return UsageRecord(**values)  # type: ignore[arg-type]


FULL = record(
    "req_full",
    outcome="complete",
    finished_at=T0 + 2.5,
    key_id="key_1",
    user="ada",
    team="core",
    project="llmgw",
    session_id="sess",
    agent_id="agent",
    client_format="anthropic",
    operation="messages",
    stream=True,
    provider="bedrock",
    deployment="bedrock/us.anthropic.claude-sonnet-4-6",
    attempts=(
        {"deployment": "a", "provider": "anthropic", "status": 529, "error": None, "duration": 0.1},
        {"deployment": "b", "provider": "bedrock", "status": 200, "error": None, "duration": 2.0},
    ),
    requested_model="claude-sonnet-4-6",
    upstream_model="us.anthropic.claude-sonnet-4-6",
    input_tokens=10,
    output_tokens=20,
    cache_creation_tokens=3_000_000_000,  # beyond 32 bits
    cache_creation_5m_tokens=1_000_000_000,
    cache_creation_1h_tokens=2_000_000_000,
    cache_read_tokens=40,
    thinking_tokens=7,
    server_tool_use={"web_search_requests": 2},
    estimated=True,
    parse_error=None,
    stop_reason="end_turn",
    message_id="msg_1",
    ttfb=0.25,
    duration=2.5,
    bytes_out=12345,
    status=200,
    error=None,
    cost_micros=987_654_321_012,
)


async def test_every_field_round_trips(store: UsageStore) -> None:
    await store.write([FULL])
    assert await store.get("req_full") == FULL
    assert await store.records(since=T0, until=T0 + 1) == [FULL]


async def test_closed_record_is_never_reopened_by_a_late_open_state(store: UsageStore) -> None:
    opened = record("r1")
    closed = record("r1", outcome="complete", input_tokens=5, cost_micros=15)
    await store.write([opened])
    assert (await store.get("r1")) == opened
    await store.write([closed])
    await store.write([opened])  # e.g. a spilled open written after its close
    assert await store.get("r1") == closed


async def test_a_closed_record_is_not_replaced_by_another_close(store: UsageStore) -> None:
    closed = record("r1", outcome="complete", input_tokens=5)
    await store.write([closed])
    await store.write([record("r1", outcome="incomplete")])  # a replay after a crash
    assert await store.get("r1") == closed


async def test_discarded_requests_stay_out_of_reports(store: UsageStore) -> None:
    await store.write([record("r1"), record("r2", outcome="complete", input_tokens=3)])
    await store.write([record("r1", outcome=DISCARDED)])
    rows = await store.records(since=0, until=math.inf)
    assert [r.request_id for r in rows] == ["r2"]
    assert [g.requests for g in await store.aggregate("key", since=0, until=math.inf)] == [1]


async def test_aggregate_groups_sums_and_orders_by_cost(store: UsageStore) -> None:
    rows = [
        record(
            "a",
            team="core",
            outcome="complete",
            input_tokens=100,
            cache_read_tokens=300,
            output_tokens=5,
            cost_micros=50,
        ),
        record(
            "b",
            team="core",
            outcome="client_disconnected",
            input_tokens=100,
            cache_creation_tokens=100,
            output_tokens=7,
            cost_micros=70,
        ),
        record("c", team="web", outcome="complete", input_tokens=1, cost_micros=1000),
        record("d", team=None, outcome="complete", cost_micros=None, upstream_model="x"),
        record("old", team="core", started_at=T0 - 2 * DAY, cost_micros=10**9),
    ]
    await store.write(rows)
    groups = await store.aggregate("team", since=T0 - DAY, until=T0 + DAY)
    assert [g.group for g in groups] == ["web", "core", None]
    core = groups[1]
    assert (core.requests, core.input_tokens, core.output_tokens) == (2, 200, 12)
    assert (core.cache_creation_tokens, core.cache_read_tokens, core.cost_micros) == (100, 300, 120)
    assert core.not_complete == 1
    assert core.cache_hit_ratio == pytest.approx(300 / 600)
    assert groups[2].unpriced == 1


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("key", {"k1": 2, "k2": 1}),
        ("user", {"ada": 2, "bob": 1}),
        ("project", {"p": 3}),
        ("session", {"s1": 1, "s2": 2}),
        ("model", {"claude-opus-4-8": 1, "us.anthropic.claude-haiku-4-5": 2}),
        ("provider", {"anthropic": 1, "bedrock": 2}),
        ("day", {"2026-05-28": 2, "2026-05-29": 1}),
        ("outcome", {"complete": 2, "timeout": 1}),
    ],
)
async def test_aggregate_by_every_dimension(
    store: UsageStore, by: str, expected: dict[str, int]
) -> None:
    common = {"project": "p", "outcome": "complete"}
    await store.write(
        [
            record(
                "1",
                key_id="k1",
                user="ada",
                session_id="s1",
                requested_model="claude-opus-4-8",
                provider="anthropic",
                **common,
            ),
            record(
                "2",
                key_id="k1",
                user="ada",
                session_id="s2",
                provider="bedrock",
                upstream_model="us.anthropic.claude-haiku-4-5",
                requested_model="h",
                **common,
            ),
            record(
                "3",
                key_id="k2",
                user="bob",
                session_id="s2",
                provider="bedrock",
                upstream_model="us.anthropic.claude-haiku-4-5",
                started_at=T0 + 4 * 3600,
                project="p",
                outcome="timeout",
            ),
        ]
    )
    groups = await store.aggregate(by, since=0, until=math.inf)
    assert {g.group: g.requests for g in groups} == expected


async def test_aggregate_rejects_unknown_groups(store: UsageStore) -> None:
    with pytest.raises(ValueError, match="cannot group"):
        await store.aggregate("password; DROP TABLE x", since=0, until=1)


async def test_batches_with_many_rows(store: UsageStore) -> None:
    rows = [record(f"r{i}", outcome="complete", input_tokens=i) for i in range(1200)]
    await store.write(rows)
    (total,) = await store.aggregate("outcome", since=0, until=math.inf)
    assert (total.requests, total.input_tokens) == (1200, sum(range(1200)))


async def test_a_batch_holding_both_states_of_a_request_keeps_the_closed_one(
    store: UsageStore,
) -> None:
    # One multi-row statement may not touch a row twice on PostgreSQL.
    closed = record("r1", outcome="complete", input_tokens=5)
    await store.write([record("r1"), closed, record("r2"), record("r1")])
    assert await store.get("r1") == closed
    assert await store.get("r2") == record("r2")


async def test_in_flight_rows_are_visible_with_their_identity(store: UsageStore) -> None:
    await store.write([record("live", key_id="k", session_id="s")])
    got = await store.get("live")
    assert got is not None and got.is_open
    assert dataclasses.replace(got, key_id="k") == got
