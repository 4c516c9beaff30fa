"""The off-path writer: batches, the bounded queue's two policies, store outages, and the
journal that lets a restart find every record a dead process left."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from llmgw.context import Identity, RequestContext
from llmgw.metering import (
    Journal,
    MemoryUsageStore,
    PendingRecord,
    SpillFile,
    UsageGroup,
    UsageRecord,
    UsageWriter,
)
from llmgw.metering.journal import read_records
from llmgw.metering.state import RecordEntry, close_snapshot, open_snapshot
from llmgw.typedefs import ApiFormat, Operation
from llmgw.usage import Outcome, Usage

T0 = 1_780_000_000.0


def snapshot(request_id: str) -> tuple[object, ...]:
    """An open snapshot as the middleware takes it (see test_metering_state.py)."""
    ctx = RequestContext(
        request_id=request_id,
        started_at=T0,
        started_mono=0.0,
        client_format=ApiFormat.ANTHROPIC,
        identity=Identity(key_id="k1"),
    )
    return open_snapshot(ctx)


def closed_snapshot(request_id: str, *, tokens: int) -> tuple[object, ...]:
    ctx = RequestContext(
        request_id=request_id,
        started_at=T0,
        started_mono=0.0,
        finished_mono=1.0,
        client_format=ApiFormat.ANTHROPIC,
        operation=Operation.MESSAGES,
        outcome=Outcome.COMPLETE,
        usage=Usage(input_tokens=tokens, final=True),
    )
    return close_snapshot(ctx, 0)


def rec(request_id: str, outcome: str = "in_flight", **fields: object) -> UsageRecord:
    values: dict[str, object] = {"request_id": request_id, "started_at": T0, "outcome": outcome}
    values.update(fields)
    return UsageRecord(**values)  # type: ignore[arg-type]


class GatedStore(MemoryUsageStore):
    """A store whose writes wait for ``gate`` and fail while ``failures`` is positive."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures = 0
        self.batches: list[int] = []

    async def write(self, records: Sequence[RecordEntry]) -> None:
        await self.gate.wait()
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("database unavailable")
        self.batches.append(len(records))
        await super().write(records)

    async def aggregate(self, by: str, *, since: float, until: float) -> list[UsageGroup]:
        return await super().aggregate(by, since=since, until=until)


async def all_rows(store: MemoryUsageStore) -> dict[str, str]:
    return {r.request_id: r.outcome for r in await store.records(since=0, until=math.inf)}


async def test_records_are_written_in_batches(tmp_path: Path) -> None:
    store = GatedStore()
    writer = UsageWriter(store, batch_size=50, flush_interval=0.05)
    await writer.start()
    for i in range(120):
        await writer.submit(rec(f"r{i}", "complete"))
    await writer.flush()
    assert len(await all_rows(store)) == 120
    assert store.batches == [50, 50, 20]
    await writer.stop()


async def test_open_and_close_in_one_batch_write_one_closed_row() -> None:
    store = GatedStore()
    writer = UsageWriter(store, flush_interval=0.05)
    await writer.start()
    await writer.submit(rec("r1"))
    await writer.submit(rec("r1", "complete", input_tokens=3))
    await writer.flush()
    assert store.batches == [1]
    assert await all_rows(store) == {"r1": "complete"}
    await writer.stop()


async def test_full_queue_blocks_submit_until_the_store_catches_up() -> None:
    store = GatedStore()
    store.gate.clear()
    writer = UsageWriter(store, queue_size=2, batch_size=1, flush_interval=0.001)
    await writer.start()
    for i in range(3):  # one taken by the writer (stuck in write), two fill the queue
        await writer.submit(rec(f"r{i}", "complete"))
    await asyncio.sleep(0.01)
    blocked = asyncio.create_task(writer.submit(rec("r3", "complete")))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    store.gate.set()
    await asyncio.wait_for(blocked, 2)
    await writer.flush()
    assert set(await all_rows(store)) == {"r0", "r1", "r2", "r3"}
    await writer.stop()


async def test_full_queue_spills_to_disk_without_waiting_and_loses_nothing(
    tmp_path: Path,
) -> None:
    store = GatedStore()
    store.gate.clear()
    spill = SpillFile(tmp_path / "usage.spill")
    writer = UsageWriter(
        store,
        journal=Journal(tmp_path / "usage.journal"),
        spill=spill,
        on_full="spill",
        queue_size=2,
        batch_size=1,
        flush_interval=0.001,
    )
    await writer.start()
    for i in range(20):
        await asyncio.wait_for(writer.submit(rec(f"r{i}", "complete")), 0.5)
    assert writer.spilled >= 15
    assert len(read_records(spill.path)) == writer.spilled
    store.gate.set()
    await asyncio.wait_for(writer.flush(), 5)
    assert set(await all_rows(store)) == {f"r{i}" for i in range(20)}
    assert not spill.path.exists() and not spill.draining_path.exists()
    await writer.stop()


async def test_store_outage_is_retried_until_it_succeeds() -> None:
    store = GatedStore()
    store.failures = 3
    writer = UsageWriter(store, flush_interval=0.01)
    await writer.start()
    await writer.submit(rec("r1", "complete"))
    await asyncio.wait_for(writer.flush(), 5)
    assert await all_rows(store) == {"r1": "complete"}
    await writer.stop()


async def test_journal_shrinks_to_the_requests_still_in_flight(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "usage.journal")
    writer = UsageWriter(
        MemoryUsageStore(), journal=journal, flush_interval=0.01, checkpoint_bytes=0
    )
    await writer.start()
    await writer.submit(rec("done"))
    await writer.submit(rec("live"))
    await writer.submit(rec("done", "complete"))
    await writer.flush()
    assert [(r.request_id, r.outcome) for r in read_records(journal.path)] == [
        ("live", "in_flight")
    ]
    await writer.submit(rec("live", "timeout"))
    await writer.flush()
    assert journal.path.read_bytes() == b""
    await writer.stop()


async def test_restart_marks_records_left_open_incomplete_and_keeps_closed_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage.journal"
    dead = Journal(path)  # what a killed process left: appended, never written to the store
    dead.open()
    dead.append(rec("finished"))
    dead.append(rec("finished", "complete", input_tokens=9, cost_micros=27))
    dead.append(rec("cut", key_id="k1", session_id="s1"))
    dead.close()
    with path.open("ab") as f:
        f.write(b'{"request_id": "torn", "sta')  # killed mid-write
    store = MemoryUsageStore()
    writer = UsageWriter(store, journal=Journal(path))
    assert await writer.start() == 2
    finished, cut = await store.get("finished"), await store.get("cut")
    assert finished is not None and (finished.outcome, finished.cost_micros) == ("complete", 27)
    assert cut is not None and (cut.outcome, cut.key_id, cut.session_id) == (
        "incomplete",
        "k1",
        "s1",
    )
    assert cut.error is not None
    assert path.read_bytes() == b""
    await writer.stop()


async def test_stop_with_the_store_down_keeps_records_for_the_next_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage.journal"
    store = GatedStore()
    store.failures = 10**6
    writer = UsageWriter(store, journal=Journal(path), flush_interval=0.01)
    await writer.start()
    await writer.submit(rec("r1"))
    await writer.submit(rec("r1", "complete", output_tokens=4))
    await writer.stop(grace=0.1)
    assert await all_rows(store) == {}
    healthy = MemoryUsageStore()
    again = UsageWriter(healthy, journal=Journal(path))
    await again.start()
    assert await all_rows(healthy) == {"r1": "complete"}
    await again.stop()


def test_spill_policy_needs_a_spill_file() -> None:
    with pytest.raises(ValueError, match="spill"):
        UsageWriter(MemoryUsageStore(), on_full="spill")


async def test_a_journal_killed_while_mapped_is_recovered_with_its_snapshots(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage.journal"
    dead = Journal(path)
    dead.open()
    opened = PendingRecord(snapshot("finished"))
    dead.append(opened)
    dead.append(PendingRecord(opened.opened, closed_snapshot("finished", tokens=7)))
    dead.append(PendingRecord(snapshot("cut")))
    # Not closed (SIGKILL): the file still ends in the zeros of its reserved capacity.
    assert path.stat().st_size > dead.size
    store = MemoryUsageStore()
    writer = UsageWriter(store, journal=Journal(path))
    assert await writer.start() == 2
    finished, cut = await store.get("finished"), await store.get("cut")
    assert finished is not None and (finished.outcome, finished.input_tokens) == ("complete", 7)
    assert (finished.key_id, finished.client_format) == ("k1", "anthropic")
    assert cut is not None and cut.outcome == "incomplete"
    await writer.stop()
    dead.close()


async def test_journal_appends_past_its_reserved_capacity(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "usage.journal")
    journal.open()
    big = rec("big", error="x" * 3_000_000)  # larger than one reservation step
    journal.append(PendingRecord(snapshot("a")))
    journal.append(big)
    journal.append(PendingRecord(snapshot("b")))
    journal.close()
    assert journal.path.stat().st_size == journal.size  # the reserved tail is cut off
    assert [r.request_id for r in read_records(journal.path)] == ["a", "big", "b"]
