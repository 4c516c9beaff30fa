"""An append-only JSON Lines file sink, one sealed envelope per line.

Durability is the ``fsync`` policy: ``always`` fsyncs every write (a batch in batched mode),
``interval`` at most every ``fsync_interval`` seconds and at close, ``never`` leaves it to
the OS. A killed *process* loses nothing that was written under any policy (the page cache
survives it); the policy only matters for an OS crash or power loss.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO

from ..log import audit_logger
from .base import AuditQuery, matches
from .chain import GENESIS, ReadEntry, SealedRecord, canonical

__all__ = ("FSYNC_POLICIES", "JSONLAuditSink")

FSYNC_POLICIES = ("always", "interval", "never")
_TAIL = 1 << 20


class JSONLAuditSink:
    def __init__(self, path: str | Path, *, fsync: str = "interval", fsync_interval: float = 1.0):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync: expected one of {FSYNC_POLICIES}, got {fsync!r}")
        self.path = Path(path)
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self._file: IO[bytes] | None = None
        self._synced = time.monotonic()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("ab")
        if f.tell() > 0:
            with self.path.open("rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    # A write cut by a crash: start on a fresh line; verify reports the torn one.
                    audit_logger.warning("audit file %s ends in a torn line", self.path)
                    f.write(b"\n")
                    f.flush()
        self._file = f

    async def close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            await asyncio.to_thread(self._close, f)

    def _close(self, f: IO[bytes]) -> None:
        f.flush()
        if self.fsync != "never":
            os.fsync(f.fileno())
        f.close()

    async def head(self, chain: str) -> tuple[int, str]:
        return await asyncio.to_thread(self._head, chain)

    def _head(self, chain: str) -> tuple[int, str]:
        if not self.path.exists():
            return 0, GENESIS
        with self.path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL))
            found = _last_of(f.read().splitlines(), chain)
            if found is None and size > _TAIL:
                f.seek(0)
                found = _last_of(f.read().splitlines(), chain)
        return found or (0, GENESIS)

    async def write(self, records: Sequence[SealedRecord]) -> None:
        data = b"".join(canonical(r.envelope()).encode() + b"\n" for r in records)
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        f = self._file
        if f is None:
            raise RuntimeError("audit file sink is not open")
        f.write(data)
        f.flush()
        now = time.monotonic()
        if self.fsync == "always" or (
            self.fsync == "interval" and now - self._synced >= self.fsync_interval
        ):
            os.fsync(f.fileno())
            self._synced = now

    async def _lines(self) -> AsyncIterator[bytes]:
        if not self.path.exists():
            return
        f = await asyncio.to_thread(self.path.open, "rb")
        try:
            while batch := await asyncio.to_thread(f.readlines, _TAIL):
                for line in batch:
                    yield line
        finally:
            f.close()

    async def entries(self) -> AsyncIterator[ReadEntry]:
        position = 0
        async for line in self._lines():
            position += 1
            if not line.strip():
                continue
            try:
                sealed = SealedRecord.from_envelope(json.loads(line))
            except ValueError as exc:
                yield ReadEntry(position=position, problem=f"line {position}: {exc}")
                continue
            yield ReadEntry(position=position, sealed=sealed)

    async def query(self, query: AuditQuery) -> AsyncIterator[SealedRecord]:
        count = 0
        async for entry in self.entries():
            if entry.sealed is not None and matches(query, entry.sealed):
                yield entry.sealed
                count += 1
                if query.limit is not None and count >= query.limit:
                    return


def _last_of(lines: list[bytes], chain: str) -> tuple[int, str] | None:
    for line in reversed(lines):
        try:
            sealed = SealedRecord.from_envelope(json.loads(line))
        except ValueError:
            continue
        if sealed.chain == chain:
            return sealed.seq, sealed.hash
    return None
