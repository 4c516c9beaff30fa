"""Usage from Bedrock responses: event-stream frames, InvokeModel JSON and its headers.

The stream tap decodes a *view* of the frames (base64 ``bytes`` → the inner Anthropic event)
and feeds the same accounting as :class:`~llmgw.usage_sse.SSEUsageTap`; the client's bytes are
never touched. Bedrock's own ``amazon-bedrock-invocationMetrics`` (on ``message_stop``) and
``X-Amzn-Bedrock-*-Token-Count`` headers are what AWS bills, so they win when present.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._bedrock_frames import (
    CHUNK_HEADERS_SIZE,
    LENGTHS,
    MAX_FRAME,
    MIN_FRAME,
    PRELUDE_SIZE,
    U32,
    compact_event,
    content_frame,
    exception_info,
    final_usage,
    resync,
    skip_frames,
    through_message_start,
)
from ._json import loads
from ._tail import TailWindow
from ._translate_errors import anthropic_error_type
from .log import relay_logger
from .usage import _BYTES_PER_TOKEN, _DELTA_OVERHEAD, Usage
from .usage_sse import SSEUsageTap
from .wire import (
    EventStreamDecoder,
    EventStreamMessage,
    ProtocolError,
    decode_bedrock_chunk,
)

__all__ = (
    "BedrockUsageTap",
    "apply_invocation_metrics",
    "event_type",
    "exception_info",
)

METRICS_KEY = "amazon-bedrock-invocationMetrics"
_TYPE = re.compile(rb'\{\s*"type"\s*:\s*"([a-z_]+)"')
_METRICS = (
    ("inputTokenCount", "input_tokens"),
    ("outputTokenCount", "output_tokens"),
    ("cacheReadInputTokenCount", "cache_read_input_tokens"),
    ("cacheWriteInputTokenCount", "cache_creation_input_tokens"),
)


#: Chunks larger than this are kept by reference, not walked (after ``message_start``).
_SMALL = 4096
#: Bytes of the last chunks kept while skimming: the final frames are well within it.
_TAIL_KEEP = 64 << 10
#: What parsing a malformed event raises; the tap flags it, never the stream.
_PARSE_ERRORS = (ProtocolError, ValueError, TypeError, KeyError, AttributeError)


def event_type(data: bytes) -> str:
    """The ``type`` of an Anthropic event JSON, read from its first bytes when it leads."""
    match = _TYPE.match(data, 0, 64)
    if match is not None:
        return match.group(1).decode()
    value = loads(data).get("type")
    return value if isinstance(value, str) else ""


def apply_invocation_metrics(usage: Usage, metrics: Mapping[str, Any]) -> None:
    """Bedrock's billed counts replace what the inner events said."""
    reported = {
        ours: metrics[theirs] for theirs, ours in _METRICS if isinstance(metrics.get(theirs), int)
    }
    if reported:
        usage.update(reported)
        usage.final = True
        usage.estimated = False


class BedrockUsageTap:
    """Usage from an InvokeModelWithResponseStream body (a view; never alters the bytes).

    Frames are walked by their prelude lengths. A content delta, ~all of a stream's frames, is
    recognised by its bytes alone: the fixed chunk header block, then ``{"bytes":"`` and the
    base64 of ``{"type":"content_block_delta",`` (30 bytes, so 40 characters that do not depend
    on what follows), then the base64 and Bedrock's compact tail. Its size is read off the base64
    length, with no CRC, base64 or JSON work: the client checks the frames it decodes, the tap
    only observes. Every other frame (message_start, message_delta, message_stop with the
    invocation metrics, exceptions, anything laid out differently) goes through the full
    decoder, so it is accounted exactly as before.

    As in :class:`~llmgw.usage_sse.SSEUsageTap`, once the frames through ``message_start``
    are read (a big first chunk is split there), a chunk over ``_SMALL`` bytes (a fast
    stream's reads, or a short stream arriving whole) starts *skimming*: chunks are only
    kept, by reference, for the last ``_TAIL_KEEP`` bytes. At the end the last
    ``message_delta`` with usage is found in that tail by its bytes, from the end, and read
    with everything after it (the invocation metrics, an exception): exact usage without a
    walk through the deltas. A stream cut before one has the tail walked as above (found
    again by a chunk frame's header block and prelude CRC when older chunks were let go),
    its deltas sized there and scaled to the skimmed bytes. A malformed or exception frame
    in the skimmed middle goes unseen.
    """

    __slots__ = (
        "_buf",
        "_decoder",
        "_delta_bytes",
        "_events",
        "_failed",
        "_lost",
        "_need",
        "_started",
        "_window",
        "error",
        "usage",
    )

    def __init__(self, usage: Usage | None = None) -> None:
        self._events = SSEUsageTap(usage)
        self.usage = self._events.usage
        self.error: dict[str, Any] | None = None
        # Only for frames not read in place (most streams need none; ~0.3 KB each held).
        self._decoder: EventStreamDecoder | None = None
        self._delta_bytes = 0  # as SSEUsageTap counts them, for the estimate of a cut stream
        self._failed = False  # parsing stopped; frame boundaries are still followed
        self._lost = False  # frame boundaries unknown: a length field made no sense
        # The bytes after the last whole frame, and how many must be buffered to go on.
        self._buf = bytearray()
        self._need = PRELUDE_SIZE
        self._started = False  # a whole frame was walked (the first: message_start)
        self._window: TailWindow | None = None  # skimming (after the first big chunk)

    @property
    def pending(self) -> bool:
        """True when the bytes seen so far end inside a frame (or where, is unknown)."""
        if self._window is not None:
            return self._window_pending()
        return bool(self._buf) or self._lost

    def feed(self, chunk: bytes) -> None:
        if self._lost:
            return
        if self._window is not None:
            self._window.add(chunk)  # the hot path of big chunks: a reference, looked at later
            return
        if len(chunk) > _SMALL and not self._started and not self._buf and not self._failed:
            # A big first chunk (a short stream arrives whole): its frames up to
            # message_start are read now, the rest skimmed like any later big chunk.
            rest = self._read_head(chunk)
            if rest is None:
                return
            chunk = rest
        if len(chunk) > _SMALL and self._started and not self._failed:
            self._window = TailWindow(_TAIL_KEEP)
            if self._buf:  # an unfinished frame: where the window starts is a boundary
                self._window.add(bytes(self._buf))
                self._buf.clear()
            self._window.add(chunk)
            return
        buf = self._buf
        if not buf and self._started and not self._failed and len(chunk) >= PRELUDE_SIZE:
            # One whole content frame, a trickling stream's usual chunk: no walk to set up.
            total, headers_size = LENGTHS.unpack_from(chunk)
            if total == len(chunk) <= MAX_FRAME and headers_size == CHUNK_HEADERS_SIZE:
                counted = content_frame(chunk, 0, total)
                if counted >= 0:
                    self._delta_bytes += counted
                    return
        if buf:
            buf += chunk
            if len(buf) < self._need:
                return
            data = bytes(buf)
            buf.clear()
        else:
            data = chunk if type(chunk) is bytes else bytes(chunk)
        try:
            pos = self._follow(data, 0) if self._failed else self._walk(data)
        except Exception as exc:  # the safety net: a tap never raises into the relay
            self._fail(exc)
            self._lost = True
            return
        if pos:
            self._started = True
        if pos < len(data) and not self._lost:
            buf += data[pos:]

    def _read_head(self, chunk: bytes) -> bytes | None:
        """Walk ``chunk``'s frames through ``message_start``; the rest, or ``None`` when
        that walk lost the frame boundaries (nothing more is read then)."""
        head = through_message_start(chunk)
        if not 0 < head < len(chunk):
            return chunk
        self.feed(chunk[:head])
        return None if self._lost else chunk[head:]

    def _walk(self, data: bytes) -> int:
        """Account the whole frames of ``data``; return where the incomplete rest begins."""
        end = len(data)
        pos = 0
        delta_bytes = 0
        unpack = LENGTHS.unpack_from
        try:
            while end - pos >= PRELUDE_SIZE:
                total, headers_size = unpack(data, pos)
                if not MIN_FRAME <= total <= MAX_FRAME:
                    self._lose(data[pos:])
                    return end
                next_pos = pos + total
                if next_pos > end:
                    self._need = total
                    return pos
                if headers_size == CHUNK_HEADERS_SIZE:
                    counted = content_frame(data, pos, next_pos)
                    if counted >= 0:
                        delta_bytes += counted
                        pos = next_pos
                        continue
                event = (
                    compact_event(data, pos, next_pos)
                    if headers_size == CHUNK_HEADERS_SIZE
                    else None
                )
                if event is None:
                    self._full(data[pos:next_pos])
                else:
                    self._event(event)
                pos = next_pos
                if self._failed:
                    return self._follow(data, pos)
            self._need = PRELUDE_SIZE
            return pos
        finally:
            self._delta_bytes += delta_bytes

    def _follow(self, data: bytes, pos: int) -> int:
        """Walk frame boundaries only (after a parse failure), so ``pending`` stays true."""
        pos = skip_frames(data, pos)
        if pos < 0:
            self._lost = True
            return len(data)
        rest = len(data) - pos
        self._need = U32.unpack_from(data, pos)[0] if rest >= PRELUDE_SIZE else PRELUDE_SIZE
        return pos

    def _full(self, frame: bytes) -> None:
        """Decode and account one frame (or fail on what cannot be decoded)."""
        try:
            # A compact chunk comes back as its inner event, with no message object built.
            if self._decoder is None:
                self._decoder = EventStreamDecoder()
            for item in self._decoder.feed_chunks(frame):
                if isinstance(item, bytes):
                    self.on_event(event_type(item), item)
                else:
                    self.on_message(item)
        except _PARSE_ERRORS as exc:
            self._fail(exc)

    def _event(self, event: bytes) -> None:
        """Account one inner event read in place (or fail on what cannot be parsed)."""
        try:
            self.on_event(event_type(event), event)
        except _PARSE_ERRORS as exc:
            self._fail(exc)

    def _lose(self, rest: bytes) -> None:
        self._full(rest)  # the decoder says what is wrong with the prelude
        if not self._failed:  # pragma: no cover - the decoder refuses every such prelude
            self._fail(ProtocolError("event-stream frame length out of range"))
        self._lost = True

    def _fail(self, exc: Exception) -> None:
        self._failed = True
        self.usage.parse_error = f"{type(exc).__name__}: {exc}"
        relay_logger.warning("bedrock usage tap stopped parsing: %s", self.usage.parse_error)

    def on_message(self, message: EventStreamMessage) -> None:
        """Account one decoded frame."""
        kind = message.message_type
        if kind == "event" and message.event_type == "chunk":
            inner = decode_bedrock_chunk(message)
            self.on_event(event_type(inner), inner)
        elif kind in ("exception", "error"):
            self.error = exception_info(message)
            self.usage.upstream_error = anthropic_error_type(self.error["type"])

    def on_event(self, name: str, data: bytes) -> None:
        """Account one inner Anthropic event (also used by the Bedrock → SSE translator)."""
        if name == "content_block_delta":
            self._delta_bytes += max(len(data) - _DELTA_OVERHEAD, 1)
        elif name == "message_stop":
            metrics = loads(data).get(METRICS_KEY)
            if isinstance(metrics, dict):
                apply_invocation_metrics(self.usage, metrics)
        else:
            self._events.on_event(name, data)

    def on_deltas(self, events: list[bytes]) -> None:
        """Account ``content_block_delta`` event JSONs, as :meth:`on_event` one by one would."""
        sizes = list(map(len, events))
        if sizes and min(sizes) > _DELTA_OVERHEAD:
            self._delta_bytes += sum(sizes) - _DELTA_OVERHEAD * len(sizes)
        else:
            self._delta_bytes += sum(max(size - _DELTA_OVERHEAD, 1) for size in sizes)

    def _window_pending(self) -> bool:
        assert self._window is not None
        tail = self._window.tail()
        start = 0 if self._window.whole else resync(tail)
        # No frame boundary found, or a length that makes no sense: where frames are is unknown.
        return start < 0 or skip_frames(tail, start) != len(tail)

    def _read_tail(self) -> None:
        """After skimming: account the kept tail's frames exactly (the final
        ``message_delta``, the invocation metrics, an exception), and scale the deltas
        sized there to every skimmed byte (exact when the window kept them all)."""
        window, self._window = self._window, None
        assert window is not None
        tail = window.tail()
        start = 0 if window.whole else resync(tail)
        if start < 0 or self._failed:
            return
        final = final_usage(tail, start)
        if final is not None:
            # The final usage, and what follows it (message_stop's invocation metrics, an
            # exception), read exactly; the deltas before it are not walked at all, as in
            # the SSE tap: a frame in that skimmed middle goes unseen.
            end, delta = final
            self._events.on_message_delta(delta)
            try:
                self._walk(tail[end:])
            except Exception as exc:  # the safety net, as in feed()
                self._fail(exc)
            return
        before, self._delta_bytes = self._delta_bytes, 0
        try:
            walked = self._walk(tail[start:] if start else tail)
        except Exception as exc:  # the safety net, as in feed()
            self._fail(exc)
            walked = 0
        sampled, self._delta_bytes = self._delta_bytes, before
        if window.whole:
            self._delta_bytes += sampled
        elif walked:
            self._delta_bytes += sampled * window.skimmed // walked

    def close(self) -> None:
        """End of stream: read a skimmed tail, and estimate output from the deltas if the
        final usage never came."""
        if self._window is not None:
            self._read_tail()
        self._events.close()
        usage = self.usage
        if not usage.final and self._delta_bytes:
            estimate = -(-self._delta_bytes // _BYTES_PER_TOKEN)
            if estimate > usage.output_tokens:
                usage.output_tokens = estimate
                usage.estimated = True
