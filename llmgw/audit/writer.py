"""Seals records into the chain and writes them, synchronously or in batches.

* ``sync``: :meth:`AuditWriter.append` (or :meth:`~AuditWriter.commit`, which also returns
  the record as sealed) returns once the record is in the sink. The middleware writes a
  start record before the handler runs and the completed record after, so a crash leaves
  a visible incomplete request, never a missing one. Concurrent appends
  are committed together (group commit): each enqueues its record and waits; one commit
  task seals everything waiting, in arrival order, writes it in one sink call and wakes
  every waiter with its sealed record, or with :class:`AuditUnavailableError` for all of
  them if the write failed. Sealing at commit time keeps chain order = commit order, and a
  failed commit rewinds the chain past the whole group so nothing links to a lost record.
* ``batched``: records are queued as they come (their order is the chain's); a background
  task seals what is queued and writes it every ``flush_interval`` seconds, or sooner when
  ``max_batch`` records wait. Sealing there rather than per request is the same work done a
  batch at a time, which costs a saturated gateway less CPU. A crash loses at most the
  records queued since the last flush: ``flush_interval`` seconds of traffic plus the write
  in progress. A failed write keeps the batch and retries it at the next flush; past
  ``max_queue`` queued records, appends wait for a flush (backpressure) instead of
  dropping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from ..errors import LlmgwError
from ..log import audit_logger
from ..typedefs import JSON
from .base import AuditSink
from .chain import Chain, SealedRecord

__all__ = ("MODES", "AuditUnavailableError", "AuditWriter")

MODES = ("sync", "batched")

#: Records sealed between two yields to the event loop (~0.3 ms of work, about one request).
_SEAL_STEP = 32
# A sync waiter's slot: resolved with its sealed record, or None when the commit failed.
_Waiter = tuple[JSON, asyncio.Future[SealedRecord | None]]


class AuditUnavailableError(LlmgwError):
    """Sync mode could not persist a record: the request is not served unaudited."""

    status_code = 503
    error_type = "api_error"


class AuditWriter:
    def __init__(
        self,
        sink: AuditSink,
        *,
        chain: str,
        mode: str = "batched",
        flush_interval: float = 1.0,
        max_batch: int = 1000,
        max_queue: int = 100_000,
        hmac_key: bytes | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        self.sink = sink
        self.chain_name = chain
        self.mode = mode
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._key = hmac_key
        self._chain: Chain | None = None
        self._lock = asyncio.Lock()
        #: Batched mode: records not sealed yet, then sealed ones not written yet.
        self._unsealed: deque[JSON] = deque()
        self._queue: deque[SealedRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waiting: list[_Waiter] = []
        self._committer: asyncio.Task[None] | None = None
        #: Sync mode: how many commits and records so far (group size = records / commits).
        self.commits = 0
        self.committed = 0

    @property
    def sync(self) -> bool:
        return self.mode == "sync"

    async def open(self) -> None:
        await self.sink.open()
        seq, head = await self.sink.head(self.chain_name)
        self._chain = Chain(self.chain_name, seq=seq, head=head, key=self._key)
        if not self.sync:
            self._task = asyncio.create_task(self._run(), name="llmgw-audit-flush")

    async def close(self) -> None:
        """Finish the commit in progress, flush everything queued (retrying once), then
        close the sink."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drained()
        for _ in range(2):
            if not (self._unsealed or self._queue):
                break
            await self.flush()
        if self._unsealed or self._queue:
            audit_logger.error(
                "audit: %d records could not be written at close",
                len(self._unsealed) + len(self._queue),
            )
        await self.sink.close()

    def _seal(self, record: JSON) -> SealedRecord:
        if self._chain is None:
            raise RuntimeError("AuditWriter.open() was not awaited")
        return self._chain.seal(record)

    async def append(self, record: JSON) -> None:
        """Persist (sync: returns once committed) or queue (batched) one record."""
        if self.sync:
            await self.commit(record)
            return
        if len(self._unsealed) + len(self._queue) >= self.max_queue:
            await self.flush()
        self.enqueue(record)

    async def commit(self, record: JSON) -> SealedRecord:
        """Sync mode: persist ``record`` with the group committing next, and return it as
        stored; :class:`AuditUnavailableError` when that group's write failed."""
        if not self.sync:
            raise RuntimeError("AuditWriter.commit() is for sync mode; batched mode appends")
        if self._chain is None:
            raise RuntimeError("AuditWriter.open() was not awaited")
        done: asyncio.Future[SealedRecord | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((record, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit(), name="llmgw-audit-commit")
        # A cancelled waiter cancels only its future: its record is still committed.
        sealed = await done
        if sealed is None:
            raise AuditUnavailableError("the audit log is unavailable")
        return sealed

    async def _commit(self) -> None:
        """Sync mode's commit task: write whatever waits, group by group, until none does."""
        chain = self._chain
        assert chain is not None
        while self._waiting:
            group = self._waiting[: self.max_batch]
            del self._waiting[: len(group)]
            seq, head = chain.seq, chain.hash
            sealed = [chain.seal(record) for record, _ in group]
            try:
                await self.sink.write(sealed)
            except BaseException as exc:
                for _, done in group:
                    if not done.done():
                        done.set_result(None)
                if not isinstance(exc, Exception):
                    # Cancelled (the loop is going away): whether the group was stored is
                    # unknown, so the chain is not rewound (a gap is reported by verify as
                    # missing records; a reused seq would fail every later write), and
                    # everyone still waiting is failed rather than left hanging.
                    for _, done in self._waiting:
                        if not done.done():
                            done.set_result(None)
                    self._waiting.clear()
                    raise
                chain.reset(seq, head)
                audit_logger.error(
                    "audit write of %d records failed: %s: %s",
                    len(group),
                    type(exc).__name__,
                    exc,
                )
                continue
            self.commits += 1
            self.committed += len(group)
            for (_, done), record in zip(group, sealed, strict=True):
                if not done.done():
                    done.set_result(record)

    async def _drained(self) -> None:
        while self._committer is not None and not self._committer.done():
            await asyncio.wait({self._committer})

    def enqueue(self, record: JSON) -> None:
        """Batched mode's non-blocking append; the record is sealed by the next flush."""
        if self._chain is None:
            raise RuntimeError("AuditWriter.open() was not awaited")
        self._unsealed.append(record)
        if len(self._unsealed) >= self.max_batch:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything queued so far, in order; on failure keep it for the next try.

        In sync mode: wait for the commit in progress (nothing else is ever queued)."""
        await self._drained()
        async with self._lock:
            await self._seal_unsealed()
            while self._queue:
                batch = [self._queue[i] for i in range(min(self.max_batch, len(self._queue)))]
                try:
                    await self.sink.write(batch)
                except Exception as exc:
                    audit_logger.error(
                        "audit flush of %d records failed, will retry: %s: %s",
                        len(batch),
                        type(exc).__name__,
                        exc,
                    )
                    return
                for _ in batch:
                    self._queue.popleft()

    async def _seal_unsealed(self) -> None:
        """Seal the queued records in arrival order (the chain's), yielding to the event
        loop between steps so a large backlog never stalls the requests in flight."""
        unsealed, queue, seal = self._unsealed, self._queue, self._seal
        while unsealed:
            for _ in range(min(len(unsealed), _SEAL_STEP)):
                record = unsealed.popleft()
                try:
                    queue.append(seal(record))
                except (TypeError, ValueError) as exc:  # not JSON: it could never be stored
                    audit_logger.error(
                        "audit record of %s dropped, it cannot be sealed: %s",
                        record.get("request_id"),
                        exc,
                    )
            if unsealed:
                await asyncio.sleep(0)

    @property
    def pending(self) -> int:
        return len(self._unsealed) + len(self._queue) + len(self._waiting)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()
