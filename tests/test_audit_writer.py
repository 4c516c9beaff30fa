"""Sync mode's group commit: concurrent appends share one write, each returns only once its
record is stored, and the chain's order is the order records were committed in. Batched
mode seals at flush time, in arrival order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from llmgw.audit import GENESIS, AuditUnavailableError, AuditWriter, SQLAuditSink, verify
from llmgw.audit.chain import ReadEntry, SealedRecord
from llmgw.storage.db import open_database


class GatedSink:
    """Keeps what it is given, one list per write; a write waits while ``gate`` is clear,
    and the writes numbered in ``fail`` raise instead of storing."""

    def __init__(self, *, fail: Sequence[int] = ()) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.writes: list[list[SealedRecord]] = []
        self.stored: list[SealedRecord] = []
        self.fail = set(fail)
        self.entered = asyncio.Event()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def head(self, chain: str) -> tuple[int, str]:
        return 0, GENESIS

    async def write(self, records: Sequence[SealedRecord]) -> None:
        self.writes.append(list(records))
        self.entered.set()
        await self.gate.wait()
        if len(self.writes) in self.fail:
            raise OSError("disk full")
        self.stored.extend(records)


def entries(records: list[SealedRecord]) -> list[ReadEntry]:
    return [ReadEntry(position=i, sealed=r) for i, r in enumerate(records, 1)]


async def sync_writer(sink: GatedSink | SQLAuditSink) -> AuditWriter:
    writer = AuditWriter(sink, chain="g", mode="sync")
    await writer.open()
    return writer


async def test_appends_waiting_on_a_commit_are_written_together_in_arrival_order() -> None:
    sink = GatedSink()
    writer = await sync_writer(sink)
    sink.gate.clear()
    first = asyncio.create_task(writer.commit({"kind": "t", "n": 0}))
    await sink.entered.wait()  # the first commit is in progress...
    rest = [asyncio.create_task(writer.commit({"kind": "t", "n": n})) for n in range(1, 20)]
    await asyncio.sleep(0)
    sink.gate.set()  # ...and the 19 appends behind it become the next one
    sealed = [await first, *await asyncio.gather(*rest)]
    assert [len(w) for w in sink.writes] == [1, 19]
    assert [s.record["n"] for s in sealed] == list(range(20))
    assert [s.seq for s in sealed] == list(range(1, 21))
    assert sink.stored == sealed  # stored order = chain order
    assert verify(entries(sink.stored)).ok
    assert (writer.commits, writer.committed) == (2, 20)
    await writer.close()


async def test_an_append_returns_only_after_its_record_is_written() -> None:
    sink = GatedSink()
    writer = await sync_writer(sink)
    sink.gate.clear()
    task = asyncio.create_task(writer.commit({"kind": "t"}))
    await sink.entered.wait()
    await asyncio.sleep(0.01)
    assert not task.done() and sink.stored == []
    sink.gate.set()
    assert (await task).seq == 1 and len(sink.stored) == 1
    await writer.close()


async def test_a_failed_commit_fails_its_whole_group_and_the_chain_skips_it() -> None:
    sink = GatedSink(fail=[2])
    writer = await sync_writer(sink)
    assert (await writer.commit({"kind": "t", "n": 0})).seq == 1
    sink.gate.clear()
    group = [asyncio.create_task(writer.commit({"kind": "t", "n": n})) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    sink.gate.set()
    results = await asyncio.gather(*group, return_exceptions=True)
    assert all(isinstance(r, AuditUnavailableError) and r.status == 503 for r in results)
    after = await writer.commit({"kind": "t", "n": 4})
    assert after.seq == 2  # nothing links to the lost group
    assert [s.record["n"] for s in sink.stored] == [0, 4]
    assert verify(entries(sink.stored)).ok
    await writer.close()


async def test_a_cancelled_append_still_has_its_record_committed() -> None:
    sink = GatedSink()
    writer = await sync_writer(sink)
    sink.gate.clear()
    task = asyncio.create_task(writer.commit({"kind": "t", "n": 0}))
    await sink.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sink.gate.set()
    assert (await writer.commit({"kind": "t", "n": 1})).seq == 2
    assert [s.record["n"] for s in sink.stored] == [0, 1]
    await writer.close()


async def test_close_waits_for_the_commit_in_progress() -> None:
    sink = GatedSink()
    writer = await sync_writer(sink)
    sink.gate.clear()
    task = asyncio.create_task(writer.commit({"kind": "t"}))
    await sink.entered.wait()
    closing = asyncio.create_task(writer.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    sink.gate.set()
    await closing
    assert (await task).seq == 1 and len(sink.stored) == 1


@pytest.mark.parametrize("count", [1, 50, 200])
async def test_concurrent_appends_on_sqlite_verify_and_share_transactions(
    tmp_path: Path, count: int
) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'audit.db'}")
    await db.open()
    try:
        sink = SQLAuditSink(db)
        writer = await sync_writer(sink)
        sealed = await asyncio.gather(*(writer.commit({"kind": "t", "n": n}) for n in range(count)))
        await writer.close()
        stored = [e async for e in sink.entries()]
        assert [e.sealed for e in stored] == sorted(sealed, key=lambda s: s.seq)
        assert verify(stored).ok
        assert writer.committed == count and (count == 1 or writer.commits < count)
    finally:
        await db.close()


async def test_batched_records_are_sealed_at_flush_in_arrival_order_and_a_bad_one_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = GatedSink(fail=[1])
    writer = AuditWriter(sink, chain="b", mode="batched", flush_interval=3600)
    await writer.open()
    for n in range(300):  # more than one sealing step: the loop is yielded to in between
        await writer.append({"kind": "t", "n": n, "bad": object() if n == 7 else None})
    assert writer.pending == 300 and not sink.writes  # queued, not sealed yet
    await writer.flush()  # the first write fails: the sealed batch is kept for the next
    assert len(sink.writes) == 1 and not sink.stored and writer.pending == 299
    await writer.flush()
    assert [s.record["n"] for s in sink.stored] == [n for n in range(300) if n != 7]
    assert [s.seq for s in sink.stored] == list(range(1, 300))
    assert verify(entries(sink.stored)).ok
    assert "cannot be sealed" in caplog.text
    with pytest.raises(RuntimeError, match="sync mode"):
        await writer.commit({"kind": "t"})
    await writer.close()
