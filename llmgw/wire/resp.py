"""RESP2, the Redis protocol: commands encoded, replies decoded incrementally (sans-IO).

Just what a client needs: commands are arrays of bulk strings; replies are simple strings,
errors, integers, bulk strings (``None`` for the null bulk) and arrays of those.
"""

from __future__ import annotations

from typing import TypeAlias

from ._errors import ProtocolError

__all__ = ("Reply", "RespError", "RespParser", "encode_command")


class RespError(Exception):
    """An error reply (``-ERR ...``, ``-NOSCRIPT ...``): the server refused the command."""

    @property
    def kind(self) -> str:
        """The error's first word (``ERR``, ``NOSCRIPT``, ``WRONGTYPE``...)."""
        return str(self).partition(" ")[0]


Reply: TypeAlias = "str | int | bytes | RespError | list[Reply] | None"

#: A bulk reply larger than this is a broken or hostile peer, not an answer to a script.
MAX_BULK = 512 << 20


def encode_command(*args: bytes | str | int) -> bytes:
    """One command as RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RespParser:
    """Feed the bytes a server sends; get back every reply they complete, in order."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Reply]:
        buf = self._buf
        buf += data
        replies: list[Reply] = []
        pos = 0
        while pos < len(buf):
            parsed = self._parse(pos)
            if parsed is None:
                break
            reply, pos = parsed
            replies.append(reply)
        del buf[:pos]
        return replies

    def _parse(self, pos: int) -> tuple[Reply, int] | None:
        """The reply starting at ``pos`` and the offset after it; ``None`` if incomplete."""
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > 64 << 10:
                raise ProtocolError("RESP: a reply line over 64 KiB")
            return None
        kind = buf[pos]
        line = bytes(buf[pos + 1 : end])
        after = end + 2
        try:
            if kind == 0x2B:  # +
                return line.decode(), after
            if kind == 0x2D:  # -
                return RespError(line.decode("utf-8", "replace")), after
            if kind == 0x3A:  # :
                return int(line), after
            if kind == 0x24:  # $
                size = int(line)
                if size < 0:
                    return None, after
                if size > MAX_BULK:
                    raise ProtocolError(f"RESP: a bulk reply of {size} bytes")
                stop = after + size
                if len(buf) < stop + 2:
                    return None
                return bytes(buf[after:stop]), stop + 2
            if kind == 0x2A:  # *
                count = int(line)
                if count < 0:
                    return None, after
                items: list[Reply] = []
                for _ in range(count):
                    parsed = self._parse(after)
                    if parsed is None:
                        return None
                    item, after = parsed
                    items.append(item)
                return items, after
        except ValueError:
            raise ProtocolError(f"RESP: malformed reply line {line[:40]!r}") from None
        raise ProtocolError(f"RESP: unknown reply type {chr(kind)!r}")
