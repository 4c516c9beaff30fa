"""The kept end of a skimmed stream: what the SSE and Bedrock usage taps hold instead of
parsing every chunk of a fast stream."""

from __future__ import annotations

__all__ = ("TailWindow",)


class TailWindow:
    """The last chunks of a stream, kept by reference (no copy, no scan): at least
    ``keep`` bytes of them when there were that many. A chunk costs an append whatever its
    size; the tap reads the tail once, at the end."""

    __slots__ = ("_keep", "chunks", "size", "skimmed", "whole")

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self.chunks: list[bytes] = []
        #: Bytes held now, and bytes ever added (the held ones included).
        self.size = 0
        self.skimmed = 0
        #: Nothing was let go yet: the window starts where skimming started (a boundary).
        self.whole = True

    def add(self, chunk: bytes) -> None:
        chunks = self.chunks
        chunks.append(chunk)
        self.skimmed += len(chunk)
        size = self.size + len(chunk)
        while size - len(chunks[0]) >= self._keep:
            size -= len(chunks.pop(0))
            self.whole = False
        self.size = size

    def take(self) -> bytes:
        """Everything held, joined; the window is empty afterwards (``skimmed`` minus it)."""
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.skimmed -= self.size
        self.size = 0
        return data

    def tail(self) -> bytes:
        return b"".join(self.chunks)
