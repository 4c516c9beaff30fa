"""The usage writer: journal on the request path, batched store writes off it.

``submit()`` appends the record to the journal (a few microseconds, survives SIGKILL) and
puts it on a bounded queue; one task drains the queue into the store in batches. When the
queue is full the policy decides, and neither choice drops a record:

* ``block`` (default): ``submit()`` waits for room. Requests slow down to the store's
  pace; nothing is held in memory beyond the queue.
* ``spill``: the record goes to a spill file next to the journal and is written when the
  queue has drained. Requests never wait; the disk absorbs the backlog.

A store that fails is retried with backoff, forever; records stay in the journal meanwhile
and are replayed by the next start if the process dies first. On start, records the
journal still holds are written, and those that were never closed become ``incomplete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
from collections.abc import Iterable, Sequence
from typing import Protocol

from ..log import relay_logger
from ..usage import Outcome
from .journal import Journal, SpillFile
from .record import UsageRecord
from .store import UsageStore

__all__ = ("FullQueuePolicy", "UsageSink", "UsageWriter", "settle")

_MAX_BACKOFF = 5.0


class FullQueuePolicy(enum.StrEnum):
    BLOCK = "block"
    SPILL = "spill"


class UsageSink(Protocol):
    """Takes record states from the metering middleware; must not block on storage."""

    async def submit(self, record: UsageRecord) -> None: ...


def settle(records: Iterable[UsageRecord]) -> list[UsageRecord]:
    """One state per request: a closed state beats an open one, else the later wins."""
    latest: dict[str, UsageRecord] = {}
    for record in records:
        current = latest.get(record.request_id)
        if current is not None and not current.is_open and record.is_open:
            continue
        latest[record.request_id] = record
    return list(latest.values())


class UsageWriter:
    """Owns the journal, the queue and the task that writes batches to ``store``."""

    def __init__(
        self,
        store: UsageStore | None,
        *,
        journal: Journal | None = None,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.1,
        on_full: FullQueuePolicy | str = FullQueuePolicy.BLOCK,
        spill: SpillFile | None = None,
        checkpoint_bytes: int = 4 << 20,
    ) -> None:
        on_full = FullQueuePolicy(on_full)
        if on_full is FullQueuePolicy.SPILL and spill is None:
            raise ValueError("the spill policy needs a spill file")
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        self.store: UsageStore | None = store
        self.journal = journal
        self.spill = spill
        self.on_full = on_full
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.checkpoint_bytes = checkpoint_bytes
        #: ``None`` is a wake-up: the batch being collected is written without waiting.
        self._queue: asyncio.Queue[UsageRecord | None] = asyncio.Queue(queue_size)
        #: Every record state the store does not hold yet, by request id (checkpoints).
        self._unsettled: dict[str, UsageRecord] = {}
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.committed = 0
        self.spilled = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> int:
        """Replay what a previous process left, then start writing; returns records replayed."""
        if self.store is None:
            raise RuntimeError("UsageWriter.start(): bind a store first")
        store = self.store
        recovered: list[UsageRecord] = []
        if self.journal is not None:
            recovered += self.journal.recover()
        if self.spill is not None:
            recovered += self.spill.recover()
        replay = [_as_incomplete(r) if r.is_open else r for r in settle(recovered)]
        for i in range(0, len(replay), self.batch_size):
            await store.write(replay[i : i + self.batch_size])
        if replay:
            stale = sum(1 for r in replay if r.outcome == Outcome.INCOMPLETE.value)
            relay_logger.warning(
                "usage journal: replayed %d records, %d left in flight by the previous "
                "process marked incomplete",
                len(replay),
                stale,
            )
        if self.spill is not None:
            self.spill.discard_recovered()
        if self.journal is not None:
            self.journal.checkpoint(())
            self.journal.open()
        self._task = asyncio.create_task(self._run(), name="llmgw-usage-writer")
        return len(replay)

    async def stop(self, *, grace: float = 10.0) -> None:
        """Write everything queued (for at most ``grace`` seconds), then stop the task.

        Whatever could not be written stays in the journal for the next start.
        """
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.journal is not None:
            if not self._unsettled and self._queue.empty():
                self.journal.checkpoint(())
            self.journal.close()
        if self.spill is not None:
            self.spill.close()

    async def flush(self) -> None:
        """Return once every record submitted so far is in the store."""
        if self._task is None:
            raise RuntimeError("UsageWriter.flush(): the writer is not running")
        while True:
            with contextlib.suppress(asyncio.QueueFull):  # a full queue needs no wake-up
                self._queue.put_nowait(None)
            await self._queue.join()
            await self._idle.wait()
            if self._queue.empty() and not (self.spill is not None and self.spill.pending):
                return
            await asyncio.sleep(self.flush_interval)

    # -- request path ------------------------------------------------------------------

    async def submit(self, record: UsageRecord) -> None:
        """Journal ``record`` and queue it; waits only when the queue is full (``block``)."""
        if self.journal is not None:
            self.journal.append(record)
            self._unsettled[record.request_id] = record
        try:
            self._queue.put_nowait(record)
            return
        except asyncio.QueueFull:
            pass
        if self.on_full is FullQueuePolicy.SPILL:
            assert self.spill is not None
            self.spill.append(record)
            self.spilled += 1
            if not record.is_open:
                # On disk in the spill file now; the journal need not carry it too.
                self._unsettled.pop(record.request_id, None)
            return
        await self._queue.put(record)

    # -- writer task -------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._queue.empty() and self.spill is not None and self.spill.pending:
                await self._drain_spill()
                continue
            try:
                async with asyncio.timeout(self.flush_interval if self.spill else None):
                    first = await self._queue.get()
            except TimeoutError:
                continue
            self._idle.clear()
            hurry = first is None
            taken = 1
            batch = [] if first is None else [first]
            deadline = loop.time() + self.flush_interval
            while len(batch) < self.batch_size:
                item: UsageRecord | None
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if hurry or remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            item = await self._queue.get()
                    except TimeoutError:
                        break
                taken += 1
                if item is None:
                    hurry = True
                else:
                    batch.append(item)
            if batch:
                await self._commit(batch)
            for _ in range(taken):
                self._queue.task_done()
            self._idle.set()

    async def _drain_spill(self) -> None:
        assert self.spill is not None
        self._idle.clear()
        records = settle(self.spill.take())
        for i in range(0, len(records), self.batch_size):
            await self._commit(records[i : i + self.batch_size])
        self.spill.drained()
        self._idle.set()

    async def _commit(self, batch: Sequence[UsageRecord]) -> None:
        """Write until it succeeds; a store outage must not lose records."""
        rows = settle(batch)
        assert self.store is not None
        backoff = 0.05
        while True:
            try:
                await self.store.write(rows)
                break
            except Exception as exc:
                relay_logger.warning(
                    "usage store write of %d records failed (%s: %s); retrying in %.2fs",
                    len(rows),
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
        self.committed += len(rows)
        if self.journal is None:
            return
        for record in rows:
            if not record.is_open and self._unsettled.get(record.request_id) is record:
                del self._unsettled[record.request_id]
        if self.journal.size > self.checkpoint_bytes or (not self._unsettled and self.journal.size):
            self.journal.checkpoint(self._unsettled.values())


def _as_incomplete(record: UsageRecord) -> UsageRecord:
    return dataclasses.replace(
        record,
        outcome=Outcome.INCOMPLETE.value,
        error=record.error or "the gateway stopped before this request finished",
    )
