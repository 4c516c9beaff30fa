"""The usage tap of an Anthropic SSE stream (Anthropic and Vertex upstreams, and the SSE
leg of the translators).

Like every tap it reads a view of the bytes the client is sent and never changes, delays or
holds them; a stream it cannot parse flags the usage instead of failing.
"""

from __future__ import annotations

from typing import Any

from ._json import loads
from ._tail import TailWindow
from .log import relay_logger
from .usage import _BYTES_PER_TOKEN, _DELTA_OVERHEAD, Usage, usage_from_message
from .wire import ProtocolError
from .wire.sse import SSEDecoder

__all__ = ("SSEUsageTap",)

# The SSE tap's modes: decoding the first event, skimming, or decoding every event.
_HEAD, _SKIM, _DECODE = range(3)
#: The canonical head of the first event of an Anthropic stream.
_START = b"event: message_start\ndata: "
_START_LEN = len(_START)
#: A first event still unfinished after this many bytes is not one the tap skims past.
_HEAD_LIMIT = 1 << 20
#: Chunks of whole events up to this size are accounted as they pass, not kept.
_SMALL = 4096
#: Bytes of a stream's end kept (chunk references) for its usage events and estimates.
_TAIL_KEEP = 64 << 10
#: Anthropic sends ``message_delta`` (then ``message_stop``), or an ``error``, last: they
#: are looked for in this many final bytes.
_TAIL_SCAN = 16 << 10
_DELTA_LINE = b"\nevent: message_delta\n"
_ERROR_LINE = b"\nevent: error\n"
_DELTA_EVENT = b"event: message_delta\ndata: "
#: A content delta, the usual chunk of a trickling stream: its framing, around its data.
_CONTENT_DELTA = b"event: content_block_delta\ndata: "
_CONTENT_DELTA_LEN = len(_CONTENT_DELTA)
_CONTENT_DELTA_FRAMING = _CONTENT_DELTA_LEN + 2
_STOP_EVENT = b'\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'
#: What parsing a malformed event raises; the tap flags it, never the stream.
_PARSE_ERRORS = (ProtocolError, ValueError, TypeError, KeyError, AttributeError)


class SSEUsageTap:
    """Usage from an Anthropic SSE stream (Anthropic and Vertex upstreams).

    An Anthropic stream carries usage in its first event (``message_start``) and in its
    last ones (``message_delta``, or an ``error`` that ends it); everything between is
    content. So the tap decodes the first event, and then:

    * a small chunk of whole events (how a stream trickles: an event or a few per read)
      is accounted at once (deltas by size, usage events parsed) and not kept;
    * any other chunk is only *kept*: references to the last ``_TAIL_KEEP`` bytes, no
      copy, no scan, so a big chunk costs what a small one does. At the end the tap
      decodes the kept tail from its last ``message_delta`` or ``error`` on. A stream cut
      before ``message_delta`` gets its output estimated from the size of the deltas in
      the tail, scaled to all the bytes that were only kept.

    A stream whose first event is not a canonical ``event: message_start`` / ``data:``
    pair (another first event, CR line ends, comments, a BOM) is decoded event by event
    instead, with every event accounted as it comes.
    """

    __slots__ = (
        "_carry",
        "_decoder",
        "_delta_bytes",
        "_failed",
        "_mode",
        "_tail_read",
        "_window",
        "error",
        "usage",
    )

    def __init__(self, usage: Usage | None = None) -> None:
        self.usage = Usage() if usage is None else usage
        self.error: dict[str, Any] | None = None
        self._decoder: SSEDecoder | None = None  # decode mode only: most streams skim
        self._delta_bytes = 0
        self._failed = False
        self._mode = _HEAD
        self._carry = b""  # head mode: the bytes of an unfinished first event
        # skim mode: the last chunks (at least _TAIL_KEEP bytes of them, when there were),
        # from the first chunk kept on (a trickling stream keeps none).
        self._window: TailWindow | None = None
        self._tail_read = False

    @property
    def pending(self) -> bool:
        """True when the bytes seen so far end inside an unfinished event."""
        if self._mode == _HEAD:
            return bool(self._carry)
        if self._mode == _DECODE:
            return self._decoder is not None and self._decoder.pending
        window = self._window
        if window is None or not window.chunks:
            return False
        chunks = window.chunks
        end = chunks[-1][-4:]
        if len(end) < 4 and len(chunks) > 1:
            end = (chunks[-2][-4:] + end)[-4:]
        if end.endswith(b"\n\n"):
            return False
        if end.find(b"\r") < 0:
            return True
        tail = window.tail()  # CR line ends mid-stream: let a decoder judge
        probe = SSEDecoder()
        probe.feed(b"\n")  # past the BOM check
        probe.feed(tail[self._boundary_before(tail, len(tail)) :])
        return probe.pending

    def feed(self, chunk: bytes) -> None:
        if self._failed or not chunk:
            return
        if self._mode == _SKIM:
            window = self._window
            if window is None or not window.chunks:
                # One content delta (no line end in its data, no CR, which could start a
                # line of its own), a trickling stream's usual chunk: sized where it lies.
                # (find(), a memchr, not count(), which walks the chunk byte by byte; and its
                # last byte indexed, as a bytes method costs ~1,000 instructions a call.)
                size = len(chunk) - _CONTENT_DELTA_FRAMING
                if (
                    chunk.startswith(_CONTENT_DELTA)
                    and chunk.find(b"\n", _CONTENT_DELTA_LEN) == size + _CONTENT_DELTA_LEN
                    and chunk[-1] == 10
                    and chunk.find(b"\r") < 0
                ):
                    size -= _DELTA_OVERHEAD
                    self._delta_bytes += size if size > 1 else 1
                    return None
                if len(chunk) <= _SMALL and chunk.endswith(b"\n\n"):
                    # Other whole events: accounted now, nothing held.
                    return self._account(chunk)
            elif (
                len(chunk) <= _SMALL
                and chunk.endswith(b"\n\n")
                and window.whole
                and window.size <= _SMALL
            ):
                # A window that starts at a boundary is drained the same way.
                window.add(chunk)
                return self._account(window.take())
            if window is None:
                window = self._window = TailWindow(_TAIL_KEEP)
            window.add(chunk)  # the hot path of big chunks: a reference, looked at later
            return None
        try:
            if self._mode == _HEAD:
                self._head(chunk)
            else:
                self._decode(chunk)
        except _PARSE_ERRORS as exc:
            self._fail(exc)

    def _account(self, data: bytes) -> None:
        """Whole events met while skimming: deltas by size, usage events parsed."""
        try:
            for name, payload in _events(data):
                if name != "message_start":  # only ever the first event, read by _head
                    self.on_event(name, payload)
        except _PARSE_ERRORS as exc:
            self._fail(exc)

    def _head(self, chunk: bytes) -> None:
        data = self._carry + chunk if self._carry else chunk
        self._carry = b""
        end = data.find(b"\n\n") + 2
        if end < 2:
            if len(data) > _HEAD_LIMIT or data.find(b"\r") >= 0:
                self._mode = _DECODE
                self._decode(data)
            else:
                self._carry = data
            return
        # Canonical: the two lines of _START, the data line ending where the event does,
        # and no CR (a CR line end would make it another event than it looks like).
        if (
            not data.startswith(_START)
            or data.find(b"\n", _START_LEN, end) != end - 2
            or data.find(b"\r", 0, end) >= 0
        ):
            self._mode = _DECODE
            self._decode(data)
            return
        self.on_event("message_start", data[_START_LEN : end - 2])
        self._mode = _SKIM
        if end < len(data):
            self.feed(data[end:])

    def _decode(self, data: bytes) -> None:
        if self._decoder is None:
            self._decoder = SSEDecoder()
        for event in self._decoder.feed(data):
            self.on_event(event.event, event.data)

    def on_event(self, name: str, data: bytes) -> None:
        """Account one Anthropic event (also used by the Bedrock tap for inner events)."""
        if name == "content_block_delta":
            self._delta_bytes += max(len(data) - _DELTA_OVERHEAD, 1)
        elif name == "message_start":
            message = loads(data)["message"]
            usage_from_message(message, self.usage)
            self.usage.final = False
        elif name == "message_delta":
            self.on_message_delta(loads(data))
        elif name == "error":
            payload = loads(data)
            self.error = payload.get("error") if isinstance(payload, dict) else None
            kind = self.error.get("type") if isinstance(self.error, dict) else None
            self.usage.upstream_error = kind if isinstance(kind, str) else "error"

    def on_message_delta(self, payload: Any) -> None:
        """Account a parsed ``message_delta``: its usage is cumulative, the last one wins."""
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.usage.update(usage)
            self.usage.final = True
            self.usage.estimated = False
        stop = payload.get("delta", {}).get("stop_reason")
        if isinstance(stop, str):
            self.usage.stop_reason = stop

    def close(self) -> None:
        """End of stream (clean or not): read the tail, and estimate output if the final
        usage never came."""
        if self._mode == _SKIM and not self._tail_read:
            self._tail_read = True
            tail = self._window.tail() if self._window is not None else b""
            # After a parse failure nothing more is parsed, but the cut stream's deltas
            # are still sized for the estimate.
            steps = (self._sample_tail,) if self._failed else (self._read_tail, self._sample_tail)
            for step in steps:
                if self.usage.final:
                    break
                try:
                    step(tail)
                except _PARSE_ERRORS as exc:
                    self._fail(exc)
        usage = self.usage
        if not usage.final and self._delta_bytes:
            estimate = -(-self._delta_bytes // _BYTES_PER_TOKEN)
            if estimate > usage.output_tokens:
                usage.output_tokens = estimate
                usage.estimated = True

    def _read_tail(self, tail: bytes) -> None:
        # The last message_delta, else the last error: both come at the very end, so the
        # backward search for the delta is short, and only a stream without one pays for
        # scanning _TAIL_SCAN bytes for an error.
        start = self._last_line(tail, _DELTA_LINE)
        if start < 0:
            start = self._last_line(tail, _ERROR_LINE)
        elif self._canonical_end(tail, start):
            return
        if start >= 0:
            for name, data in _events(tail[self._boundary_before(tail, start, start) :]):
                if name == "message_delta" or name == "error":
                    self.on_event(name, data)

    def _canonical_end(self, tail: bytes, start: int) -> bool:
        """How nearly every stream ends: a ``message_delta`` at ``start`` (an event
        boundary), then only Anthropic's exact ``message_stop`` event. Its data is read
        in place; anything else is left to :func:`_events`."""
        at = start + len(_DELTA_EVENT)
        end = tail.find(b"\n", at)
        if (
            end < 0
            or not tail.startswith(_DELTA_EVENT, start)
            or (start and not tail.startswith(b"\n\n", start - 2))
            or tail.find(b"\r", start) >= 0
        ):
            return False
        rest = len(tail) - end
        if (rest == 2 and tail.endswith(b"\n\n")) or (
            rest == len(_STOP_EVENT) and tail.endswith(_STOP_EVENT)
        ):
            self.on_event("message_delta", tail[at:end])
            return True
        return False

    def _sample_tail(self, tail: bytes) -> None:
        # Cut short: size the deltas on the tail and scale to everything skimmed.
        window = self._window
        if window is None:
            return
        whole = window.whole
        start = 0 if whole else tail.find(b"\n\n") + 2
        if (start < 2 and not whole) or start >= len(tail):
            return
        sampled = sum(
            max(len(data) - _DELTA_OVERHEAD, 1)
            for name, data in _events(tail[start:])
            if name == "content_block_delta"
        )
        self._delta_bytes += sampled * window.skimmed // (len(tail) - start)

    def _last_line(self, tail: bytes, line: bytes) -> int:
        """Offset of the last ``line`` (``\\n`` + field + ``\\n``) in the scanned end of
        ``tail``, or -1."""
        found = tail.rfind(line, max(0, len(tail) - _TAIL_SCAN))
        if found >= 0:
            return found + 1
        return 0 if self._whole and tail.startswith(line[1:]) else -1

    def _boundary_before(self, tail: bytes, offset: int, default: int = 0) -> int:
        """The last event boundary at or before ``offset``: after any ``\\n\\n`` (a blank
        line, whatever the line ends), or the tail's start when it is one."""
        found = tail.rfind(b"\n\n", 0, offset)
        if found >= 0:
            return found + 2
        return 0 if self._whole else default

    @property
    def _whole(self) -> bool:
        """The kept tail starts where skimming did (an event boundary)."""
        return self._window is None or self._window.whole

    def _fail(self, exc: Exception) -> None:
        self._failed = True
        self.usage.parse_error = f"{type(exc).__name__}: {exc}"
        relay_logger.warning("usage tap stopped parsing: %s", self.usage.parse_error)


def _events(data: bytes) -> list[tuple[str, bytes]]:
    """The whole events of ``data``, which starts at an event boundary mid-stream.

    Canonical ``event:``/``data:`` pairs are split at C speed; anything else goes through
    the decoder.
    """
    blocks = data.split(b"\n\n")[:-1]  # the last piece is empty or an unfinished event
    events = []
    # (find() and count(), not ``in``: on CPython 3.11 ``bytes in bytes`` first tries the
    # needle as an int and raises and clears a TypeError, ~2,000 instructions each time.)
    if data.find(b"\r") < 0:
        for block in blocks:
            if block.count(b"\n") != 1 or not block.startswith(b"event: "):
                break
            name, sep, payload = block.partition(b"\ndata: ")
            if not sep:
                break
            events.append((name[7:].decode(), payload))
        else:
            return events
    decoder = SSEDecoder()
    decoder.feed(b"\n")  # past the stream-start BOM rule
    return [(event.event, event.data) for event in decoder.feed(data)]
