"""Append-only files of usage records: what a SIGKILL cannot take.

Bytes stored into a shared memory map of a file, like those of a ``write()``, are in the
kernel's page cache at once, so a killed process loses nothing it appended (a power cut
can; SQLite with ``synchronous=NORMAL`` makes the same trade). The journal appends that way:
a line is a memory copy, not a system call (a ``write()`` costs 1-5 µs here, twice per
request), against ~0.1 ms for a SQLite insert and a network round trip for PostgreSQL,
which is why the request path journals and the store is written in batches later.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from pathlib import Path

from .record import UsageRecord
from .state import RecordEntry, parse_lines

__all__ = ("Journal", "SpillFile", "read_records")


def read_records(path: Path) -> list[UsageRecord]:
    """Every whole line of ``path`` as a record; a torn last line (killed mid-write) is skipped."""
    try:
        # A journal killed while mapped ends in the zeros of its unused capacity.
        data = path.read_bytes().rstrip(b"\0")
    except FileNotFoundError:
        return []
    return parse_lines(data.splitlines(), str(path))


def _open_append(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


#: Journal capacity is reserved in steps of this size (a checkpoint keeps files small).
_CHUNK = 1 << 20


def _reserve(fd: int, length: int) -> None:
    """Allocate the file's blocks up to ``length``: a store into a mapped hole on a full disk
    would be a SIGBUS, an allocation that fails here is an ``OSError``."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        allocate(fd, 0, length)
        return
    size = os.fstat(fd).st_size  # pragma: no cover - macOS
    if size < length:  # pragma: no cover
        os.pwrite(fd, bytes(length - size), size)


class Journal:
    """Every record state not yet settled in the store; rewritten smaller at checkpoints.

    The writer calls :meth:`checkpoint` with the records still unsettled; the new file holds
    exactly those, so the journal stays about as large as the number of requests in flight.
    Capacity is reserved ahead (zeros past :attr:`size`, cut off again by :meth:`close`).
    """

    __slots__ = ("_capacity", "_fd", "_map", "path", "size")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._capacity = 0
        #: Bytes of lines in the file (where the next line goes).
        self.size = 0

    def recover(self) -> list[UsageRecord]:
        """What a previous process left (call before :meth:`open`)."""
        return read_records(self.path)

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with open(self._fd, "rb", closefd=False) as f:
            held = f.read().rstrip(b"\0")
        self.size = len(held)
        if held and not held.endswith(b"\n"):  # a torn line: never glue the next one to it
            os.pwrite(self._fd, b"\n", self.size)
            self.size += 1

    def append(self, entry: RecordEntry) -> None:
        line = entry.journal_line()
        start = self.size
        end = start + len(line)
        if end > self._capacity:
            self._reserve(end)
        assert self._map is not None
        self._map[start:end] = line
        self.size = end

    def _reserve(self, end: int) -> None:
        assert self._fd is not None, "Journal.open() first"
        capacity = -(-end // _CHUNK) * _CHUNK
        _reserve(self._fd, capacity)
        if self._map is not None:
            self._map.close()
        self._map = mmap.mmap(self._fd, capacity)
        self._capacity = capacity

    def checkpoint(self, unsettled: Iterable[RecordEntry]) -> None:
        """Replace the file by one holding only ``unsettled``; atomic (rename)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = b"".join(r.snapshot_lines() for r in unsettled)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path)
        was_open = self._fd is not None
        self._release(truncate=False)  # the old file is gone already
        if was_open:
            self._fd = os.open(self.path, os.O_RDWR)
        self.size = len(data)  # capacity is reserved again by the next append

    def close(self) -> None:
        self._release(truncate=True)

    def _release(self, *, truncate: bool) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            if truncate and self._capacity > self.size:
                os.ftruncate(self._fd, self.size)
            os.close(self._fd)
            self._fd = None
        self._capacity = 0


class SpillFile:
    """Where records go when the writer's queue is full and the policy is ``spill``.

    Draining renames the file first, so records spilled while a drain is being written go
    to a fresh file and are never lost to a truncate.
    """

    __slots__ = ("_fd", "count", "path")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.count = 0

    @property
    def draining_path(self) -> Path:
        return self.path.with_name(self.path.name + ".draining")

    def recover(self) -> list[UsageRecord]:
        return read_records(self.draining_path) + read_records(self.path)

    def discard_recovered(self) -> None:
        for path in (self.draining_path, self.path):
            path.unlink(missing_ok=True)

    def append(self, entry: RecordEntry) -> None:
        if self._fd is None:
            self._fd = _open_append(self.path)
        os.write(self._fd, entry.snapshot_lines())  # self-contained: drained on its own
        self.count += 1

    @property
    def pending(self) -> bool:
        return self.count > 0 or self.draining_path.exists()

    def take(self) -> list[UsageRecord]:
        """Move the spilled records out; the moved file stays until :meth:`drained`.

        A drain that failed earlier is retried first, so it is never overwritten.
        """
        if self.draining_path.exists():
            return read_records(self.draining_path)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.count = 0
        if not self.path.exists():
            return []
        os.replace(self.path, self.draining_path)
        return read_records(self.draining_path)

    def drained(self) -> None:
        self.draining_path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
