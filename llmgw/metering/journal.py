"""Append-only files of usage records: what a SIGKILL cannot take.

A ``write()`` to a regular file is in the kernel's page cache when it returns, so a killed
process loses nothing it wrote (a power cut can; SQLite with ``synchronous=NORMAL`` makes
the same trade). Appending one ~1 KB line costs a few microseconds, against ~0.1 ms for a
SQLite insert and a network round trip for PostgreSQL, which is why the request path
journals and the store is written in batches later.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..log import relay_logger
from .record import UsageRecord
from .state import RecordEntry, parse_lines

__all__ = ("Journal", "SpillFile", "read_records")


def read_records(path: Path) -> list[UsageRecord]:
    """Every whole line of ``path`` as a record; a torn last line (killed mid-write) is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return parse_lines(data.splitlines(), str(path))


def _open_append(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


class Journal:
    """Every record state not yet settled in the store; rewritten smaller at checkpoints.

    The writer calls :meth:`checkpoint` with the records still unsettled; the new file holds
    exactly those, so the journal stays about as large as the number of requests in flight.
    """

    __slots__ = ("_fd", "path", "size")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.size = 0

    def recover(self) -> list[UsageRecord]:
        """What a previous process left (call before :meth:`open`)."""
        return read_records(self.path)

    def open(self) -> None:
        self._fd = _open_append(self.path)
        self.size = os.fstat(self._fd).st_size

    def append(self, entry: RecordEntry) -> None:
        assert self._fd is not None, "Journal.open() first"
        line = entry.journal_line()
        os.write(self._fd, line)
        self.size += len(line)

    def checkpoint(self, unsettled: Iterable[RecordEntry]) -> None:
        """Replace the file by one holding only ``unsettled``; atomic (rename)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = b"".join(r.snapshot_lines() for r in unsettled)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = _open_append(self.path)
        self.size = len(data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
