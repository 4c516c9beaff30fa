"""The usage writer: journal on the request path, batched store writes off it.

``submit()`` appends the record state to the journal (one ``write()``, survives SIGKILL)
and to a bounded buffer; one task drains the buffer into the store in batches. When the
buffer is full the policy decides, and neither choice drops a record:

* ``block`` (default): ``submit()`` waits for room. Requests slow down to the store's
  pace; nothing is held in memory beyond the buffer.
* ``spill``: the record goes to a spill file next to the journal and is written when the
  buffer has drained. Requests never wait; the disk absorbs the backlog.

A store that fails is retried with backoff, forever; records stay in the journal meanwhile
and are replayed by the next start if the process dies first. On start, records the
journal still holds are written, and those that were never closed become ``incomplete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
from collections.abc import Sequence
from typing import Protocol

from ..log import relay_logger
from ..usage import Outcome
from .journal import Journal, SpillFile
from .record import UsageRecord
from .state import RecordEntry, settle
from .store import UsageStore

__all__ = ("FullQueuePolicy", "UsageSink", "UsageWriter")

_MAX_BACKOFF = 5.0


class FullQueuePolicy(enum.StrEnum):
    BLOCK = "block"
    SPILL = "spill"


class UsageSink(Protocol):
    """Takes record states from the metering middleware; must not block on storage."""

    async def submit(self, entry: RecordEntry) -> None: ...


class UsageWriter:
    """Owns the journal, the pending buffer and the task that writes batches to ``store``.

    Submitting appends to a list; the task is woken once per batch (by the first entry, a
    full batch or :meth:`flush`), not once per entry: an ``asyncio.Queue`` hand-off per
    record costs a task step each, more than the rest of a request's metering.
    """

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
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.checkpoint_bytes = checkpoint_bytes
        #: Submitted, not taken by the task yet (at most ``queue_size``).
        self._pending: list[RecordEntry] = []
        #: Set when the task should look at ``_pending`` (first entry, full batch, flush).
        self._wake = asyncio.Event()
        #: Set when the task took entries out (``block`` submitters wait for it).
        self._room = asyncio.Event()
        #: Set each time the task finished a round; :meth:`flush` waits for it.
        self._round = asyncio.Event()
        self._hurry = False
        self._busy = False
        #: Every record state the store does not hold yet, by request id (checkpoints).
        self._unsettled: dict[str, RecordEntry] = {}
        self._task: asyncio.Task[None] | None = None
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
        """Write everything submitted (for at most ``grace`` seconds), then stop the task.

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
            if not self._unsettled and not self._pending:
                self.journal.checkpoint(())
            self.journal.close()
        if self.spill is not None:
            self.spill.close()

    async def flush(self) -> None:
        """Return once every record submitted so far is in the store."""
        if self._task is None:
            raise RuntimeError("UsageWriter.flush(): the writer is not running")
        while self._pending or self._busy or (self.spill is not None and self.spill.pending):
            self._hurry = True
            self._round.clear()
            self._wake.set()
            await self._round.wait()

    # -- request path ------------------------------------------------------------------

    async def submit(self, entry: RecordEntry) -> None:
        """Journal ``entry`` and buffer it; waits only when the buffer is full (``block``)."""
        if self.journal is not None:
            self.journal.append(entry)
            self._unsettled[entry.request_id] = entry
        pending = self._pending
        size = len(pending)
        if size < self.queue_size:
            pending.append(entry)
            if size == 0 or size + 1 == self.batch_size:
                self._wake.set()
            return
        if self.on_full is FullQueuePolicy.SPILL:
            assert self.spill is not None
            self.spill.append(entry)
            self.spilled += 1
            if not entry.is_open:
                # On disk in the spill file now; the journal need not carry it too.
                self._unsettled.pop(entry.request_id, None)
            return
        while len(pending) >= self.queue_size:
            self._room.clear()
            self._wake.set()  # a full buffer is a batch: no point waiting for more
            await self._room.wait()
        pending.append(entry)
        self._wake.set()

    # -- writer task -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._round.set()
            if not self._pending:
                if self.spill is not None and self.spill.pending:
                    await self._drain_spill()
                    continue
                # Records spill only while the buffer is full, so the spill file is looked
                # at above before the buffer can run empty again: no polling needed.
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._hurry and len(self._pending) < self.batch_size:
                # Give the batch a flush interval to fill; a full batch or flush() cuts it.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval):
                        await self._wake.wait()
            if len(self._pending) <= self.batch_size:
                self._hurry = False
            batch = self._pending[: self.batch_size]
            del self._pending[: self.batch_size]
            self._room.set()
            if batch:
                self._busy = True
                try:
                    await self._commit(batch)
                finally:
                    self._busy = False

    async def _drain_spill(self) -> None:
        assert self.spill is not None
        self._busy = True
        try:
            records = settle(self.spill.take())
            for i in range(0, len(records), self.batch_size):
                await self._commit(records[i : i + self.batch_size])
            self.spill.drained()
        finally:
            self._busy = False

    async def _commit(self, batch: Sequence[RecordEntry]) -> None:
        """Write until it succeeds; a store outage must not lose records."""
        entries = settle(batch)
        assert self.store is not None
        backoff = 0.05
        while True:
            try:
                await self.store.write(entries)
                break
            except Exception as exc:
                relay_logger.warning(
                    "usage store write of %d records failed (%s: %s); retrying in %.2fs",
                    len(entries),
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
        self.committed += len(entries)
        if self.journal is None:
            return
        unsettled = self._unsettled
        for entry in entries:
            if not entry.is_open and unsettled.get(entry.request_id) is entry:
                del unsettled[entry.request_id]
        if self.journal.size > self.checkpoint_bytes or (not unsettled and self.journal.size):
            self.journal.checkpoint(unsettled.values())


def _as_incomplete(record: UsageRecord) -> UsageRecord:
    return dataclasses.replace(
        record,
        outcome=Outcome.INCOMPLETE.value,
        error=record.error or "the gateway stopped before this request finished",
    )
