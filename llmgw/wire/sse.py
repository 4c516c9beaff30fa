"""Server-Sent Events codec (WHATWG HTML "server-sent events" parsing rules), sans-IO.

The relay taps every chunk of every stream through `SSEDecoder`, so the decoder is built for
speed: a chunk is split into lines by one C call (`bytes.splitlines` breaks on exactly CRLF, LF
and CR, the three SSE line ends), only the unterminated last line is carried over in a
`bytearray`, and `data` stays raw bytes so JSON is parsed lazily, only for the events a caller
cares about.
"""

import json
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from ._errors import ProtocolError

__all__ = ("SSEDecoder", "SSEEvent", "encode_event")

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event; `data` is the raw UTF-8 bytes so relaying never re-encodes."""

    event: str
    data: bytes
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


# The frozen dataclass __init__ goes through object.__setattr__ per field and costs more than
# parsing the event's lines; setting the slots directly builds an identical event ~2.5x faster.
_new = object.__new__
_set_event = vars(SSEEvent)["event"].__set__
_set_data = vars(SSEEvent)["data"].__set__
_set_id = vars(SSEEvent)["id"].__set__
_set_retry = vars(SSEEvent)["retry"].__set__


def _make_event(event: str, data: bytes, id: str | None, retry: int | None) -> SSEEvent:
    ev = _new(SSEEvent)
    _set_event(ev, event)
    _set_data(ev, data)
    _set_id(ev, id)
    _set_retry(ev, retry)
    return ev


class SSEDecoder:
    """Incremental SSE parser: `feed()` any split of the stream, get the completed events.

    `id` follows the spec's "last event ID": once set it stays on every later event until an
    `id` line changes it. `retry` is reported on the event whose block carried it. An event
    block without any `data` line is not dispatched (spec), so a lone `retry:` block is dropped.
    """

    __slots__ = (
        "_closed",
        "_data",
        "_error",
        "_event",
        "_id",
        "_in_event",
        "_max_event",
        "_max_line",
        "_retry",
        "_size",
        "_skip_lf",
        "_started",
        "_tail",
    )

    def __init__(self, *, max_line_size: int = 1 << 20, max_event_size: int = 16 << 20) -> None:
        if max_line_size < 1 or max_event_size < 1:
            raise ValueError("max_line_size and max_event_size must be positive")
        self._max_line = max_line_size
        self._max_event = max_event_size
        # The unterminated last line (or, before the first line, a possible BOM prefix).
        self._tail = bytearray()
        self._started = False  # past the place where a BOM may appear
        # The previous chunk ended in CR: a LF opening the next chunk is the rest of a CRLF.
        self._skip_lf = False
        self._data: list[bytes] = []
        # sum(len(line) + 1) over the data lines, i.e. len(joined data) + 1 once there is data.
        self._size = 0
        self._event = b""
        self._id: str | None = None
        self._retry: int | None = None
        self._in_event = False  # a field line of the current block has been seen
        self._error: ProtocolError | None = None
        self._closed = False

    @property
    def pending(self) -> bool:
        """True when an unfinished event (or line) is buffered: the stream was cut mid-event.

        Still answers after `close()`, so a tap may ask either before or after closing.
        """
        return self._in_event or bool(self._tail)

    def feed(self, data: bytes | bytearray | memoryview) -> list[SSEEvent]:
        if self._error is not None:
            raise ProtocolError(self._error.reason)
        if self._closed:
            raise RuntimeError("SSEDecoder.feed() after close()")
        if type(data) is not bytes:
            data = bytes(data)
        if not data:
            return []
        tail = self._tail
        if not self._started:
            tail += data
            if len(tail) < len(_BOM) and _BOM.startswith(tail):
                return []  # the BOM may still be arriving
            self._started = True
            data = bytes(tail[3:] if tail.startswith(_BOM) else tail)
            tail.clear()
            if not data:
                return []
        if self._skip_lf:
            self._skip_lf = False
            if data[0] == _LF:
                data = data[1:]
                if not data:
                    return []
        if b"\n" not in data and b"\r" not in data:
            # Still inside one line: append only, so a long line fed in pieces stays linear.
            tail += data
            self._check_tail()
            return []
        if tail:
            tail += data
            data = bytes(tail)
            tail.clear()
        lines = data.splitlines()
        last = data[-1]
        if last == _CR:
            # A CR ends the line now (no waiting for the next byte); only a LF right after it is
            # swallowed, so CR-only streams dispatch without delay.
            self._skip_lf = True
        elif last != _LF:
            tail += lines.pop()
        max_line = self._max_line
        if len(data) > max_line and lines and max(map(len, lines)) > max_line:
            raise self._fail(f"SSE line longer than {max_line} bytes")

        events: list[SSEEvent] = []
        dlines = self._data
        size = self._size
        name = self._event
        retry = self._retry
        last_id = self._id
        in_event = self._in_event
        size_limit = self._max_event + 1  # `size` counts one separator more than the joined data
        for line in lines:
            if not line:
                if dlines:
                    events.append(
                        _make_event(
                            name.decode("utf-8", "replace") if name else "message",
                            b"\n".join(dlines),
                            last_id,
                            retry,
                        )
                    )
                    dlines = []
                    size = 0
                name = b""
                retry = None
                in_event = False
                continue
            if line.startswith(b"data: "):  # the hot paths: one slice, no field split
                value = line[6:]
            elif line.startswith(b"event: "):
                name = line[7:]
                in_event = True
                continue
            else:
                colon = line.find(b":")
                if colon == 0:
                    continue  # comment
                in_event = True
                if colon < 0:
                    field = line
                    value = b""
                else:
                    field = line[:colon]
                    start = colon + 2 if line[colon + 1 : colon + 2] == b" " else colon + 1
                    value = line[start:]
                if field != b"data":
                    if field == b"event":
                        name = value
                    elif field == b"id":
                        if b"\0" not in value:
                            last_id = value.decode("utf-8", "replace")
                    elif field == b"retry" and value.isdigit():
                        # More digits than sys.get_int_max_str_digits(): unusable anyway.
                        with suppress(ValueError):
                            retry = int(value)
                    continue
            in_event = True
            dlines.append(value)
            size += len(value) + 1
            if size > size_limit:
                raise self._fail(f"SSE event data larger than {self._max_event} bytes")
        self._data = dlines
        self._size = size
        self._event = name
        self._retry = retry
        self._id = last_id
        self._in_event = in_event
        if tail:
            self._check_tail()
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: an unterminated event is discarded (spec), so this returns no events.

        Check `pending` to learn whether the stream was cut mid-event.
        """
        if self._error is not None:
            raise ProtocolError(self._error.reason)
        self._closed = True
        return []

    def _check_tail(self) -> None:
        n = len(self._tail)
        if n > self._max_line:
            raise self._fail(f"SSE line longer than {self._max_line} bytes")
        # Counted as if the unfinished line were all data: rejects a growing event early.
        if self._size + n > self._max_event + 1:
            raise self._fail(f"SSE event data larger than {self._max_event} bytes")

    def _fail(self, reason: str) -> ProtocolError:
        self._error = ProtocolError(reason)
        return self._error


def encode_event(
    event: str | None,
    data: bytes | str,
    *,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Serialise one event; `SSEDecoder` yields it back unchanged.

    Each line of `data` becomes its own `data:` line. CR, LF and CRLF inside `data` all count as
    line breaks (SSE cannot carry a CR in data), so they decode as LF. `event=None` omits the
    field (the event decodes as "message").
    """
    parts: list[bytes] = []
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError("SSE event name must not contain CR or LF")
        parts.append(b"event: " + event.encode() + b"\n")
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise ValueError("SSE id must not contain CR, LF or NUL")
        parts.append(b"id: " + id.encode() + b"\n")
    if retry is not None:
        if retry < 0 or isinstance(retry, bool):
            raise ValueError("SSE retry must be a non-negative int")
        parts.append(b"retry: %d\n" % retry)
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if b"\n" in raw:
        parts.append(b"".join(b"data: " + line + b"\n" for line in raw.split(b"\n")))
    else:
        parts.append(b"data: " + raw + b"\n")
    parts.append(b"\n")
    return b"".join(parts)
