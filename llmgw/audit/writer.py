"""Seals records into the chain and writes them, synchronously or in batches.

* ``sync``: :meth:`AuditWriter.append` returns once the record is in the sink. The
  middleware writes a start record before the handler runs and the completed record after,
  so a crash leaves a visible incomplete request, never a missing one.
* ``batched``: records are sealed at once (their order is the chain's) and queued; a
  background task writes the queue every ``flush_interval`` seconds, or sooner when
  ``max_batch`` records wait. A crash loses at most the records queued since the last
  flush: ``flush_interval`` seconds of traffic plus the write in progress. A failed write
  keeps the batch and retries it at the next flush; past ``max_queue`` queued records,
  appends wait for a flush (backpressure) instead of dropping.
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
        self._queue: deque[SealedRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

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
        """Flush everything queued (retrying once), then close the sink."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _ in range(2):
            if not self._queue:
                break
            await self.flush()
        if self._queue:
            audit_logger.error("audit: %d records could not be written at close", len(self._queue))
        await self.sink.close()

    def _seal(self, record: JSON) -> SealedRecord:
        if self._chain is None:
            raise RuntimeError("AuditWriter.open() was not awaited")
        return self._chain.seal(record)

    async def append(self, record: JSON) -> SealedRecord:
        """Seal and persist (sync) or queue (batched) one record."""
        if not self.sync:
            if len(self._queue) >= self.max_queue:
                await self.flush()
            return self.enqueue(record)
        async with self._lock:
            sealed = self._seal(record)
            try:
                await self.sink.write([sealed])
            except Exception as exc:
                assert self._chain is not None
                self._chain.rewind(sealed)
                audit_logger.error("audit write failed: %s: %s", type(exc).__name__, exc)
                raise AuditUnavailableError("the audit log is unavailable") from None
        return sealed

    def enqueue(self, record: JSON) -> SealedRecord:
        """Batched mode's non-blocking append."""
        sealed = self._seal(record)
        self._queue.append(sealed)
        if len(self._queue) >= self.max_batch:
            self._wake.set()
        return sealed

    async def flush(self) -> None:
        """Write everything queued so far, in order; on failure keep it for the next try."""
        async with self._lock:
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

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()
