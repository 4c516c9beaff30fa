"""AWS event-stream framing (``application/vnd.amazon.eventstream``), sans-IO.

Bedrock's InvokeModelWithResponseStream answers with these binary frames; the relay taps them and
the translator converts them to and from Anthropic SSE. See PROTOCOLS.md §3.6-3.7.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from zlib import crc32

from ._errors import ProtocolError
from ._eventheaders import (
    HeaderValue,
    Int8,
    Int16,
    Int32,
    Int64,
    Timestamp,
    encode_headers,
    header_block,
)

__all__ = (
    "DEFAULT_MAX_HEADERS_SIZE",
    "DEFAULT_MAX_PAYLOAD_SIZE",
    "EventStreamDecoder",
    "EventStreamMessage",
    "HeaderValue",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "Timestamp",
    "decode_bedrock_chunk",
    "encode_bedrock_chunk",
    "encode_bedrock_exception",
    "encode_message",
)

DEFAULT_MAX_HEADERS_SIZE = 128 * 1024
# botocore and aws-c-event-stream cap payloads at 16 MiB; Smithy allows 24 MiB.
DEFAULT_MAX_PAYLOAD_SIZE = 16 * 1024 * 1024

_PRELUDE_SIZE = 12
_PRELUDE_CACHE_SIZE = 4096
_TAIL_CACHE_SIZE = 256
#: Checked preludes by (max headers size, max payload size), and compact chunk tails seen:
#: facts about bytes, the same for every stream of the process.
_PRELUDES: dict[tuple[int, int], set[tuple[int, int, int]]] = {}
_TAILS: set[bytes] = set()
_MIN_MESSAGE_SIZE = 16  # prelude + message CRC

_PRELUDE = struct.Struct(">III")
_LENGTHS = struct.Struct(">II")
_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True, kw_only=True)
class EventStreamMessage:
    """One decoded frame. ``headers`` keeps wire order so re-encoding is byte-exact."""

    headers: Mapping[str, HeaderValue]
    payload: bytes

    @property
    def message_type(self) -> str | None:
        """``event``, ``exception`` or ``error``."""
        return self._str_header(":message-type")

    @property
    def event_type(self) -> str | None:
        return self._str_header(":event-type")

    @property
    def exception_type(self) -> str | None:
        return self._str_header(":exception-type")

    def _str_header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


# -- encoding ---------------------------------------------------------------------------------


def _frame(header_block: bytes, payload: bytes | bytearray | memoryview) -> bytes:
    payload_size = memoryview(payload).nbytes
    total = _MIN_MESSAGE_SIZE + len(header_block) + payload_size
    if total > 0xFFFFFFFF:
        raise ValueError(f"message of {total} bytes does not fit the uint32 length field")
    lengths = _LENGTHS.pack(total, len(header_block))
    prelude = lengths + _U32.pack(crc32(lengths))
    # Running CRC over the parts: one copy of the payload (the join), not two.
    crc = crc32(payload, crc32(header_block, crc32(prelude)))
    return b"".join((prelude, header_block, payload, _U32.pack(crc)))


def encode_message(
    headers: Mapping[str, HeaderValue], payload: bytes | bytearray | memoryview
) -> bytes:
    """Frame one message; header order follows the mapping's iteration order."""
    return _frame(encode_headers(headers), payload)


_CHUNK_HEADER_BLOCK = encode_headers(
    {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
)


def encode_bedrock_chunk(event: bytes, *, padding: str | None = None) -> bytes:
    """Wrap one Anthropic event JSON object as Bedrock sends it: ``{"bytes":"<base64>"}``.

    Real Bedrock adds a random ``"p"`` field to blur lengths; pass ``padding`` to imitate it.
    """
    parts = [b'{"bytes":"', base64.b64encode(event), b'"']
    if padding is not None:
        parts += (b',"p":', json.dumps(padding).encode())
    parts.append(b"}")
    return _frame(_CHUNK_HEADER_BLOCK, b"".join(parts))


def encode_bedrock_exception(exception_type: str, message: str) -> bytes:
    """An in-stream Bedrock exception such as ``throttlingException`` (PROTOCOLS.md §3.7)."""
    headers: dict[str, HeaderValue] = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    payload = json.dumps({"message": message}, separators=(",", ":")).encode()
    return encode_message(headers, payload)


_CHUNK_PREFIX = b'{"bytes":"'
_CHUNK_PREFIX_SIZE = len(_CHUNK_PREFIX)
# The padding tail exactly as Bedrock writes it; anything else takes the json.loads path.
_COMPACT_TAIL = re.compile(rb'"(?:,"p":"[^"\\\x00-\x1f]*")?}')


def compact_tail(tail: bytes) -> bool:
    """Whether a chunk payload ending so (from the quote closing the base64) has Bedrock's
    compact layout. Bedrock pads with prefixes of one string, so the few tails there are
    are remembered in ``_TAILS``, for every decoder and tap of the process (callers test
    ``tail in _TAILS`` first), rather than matched again."""
    if _COMPACT_TAIL.fullmatch(tail) is None:
        return False
    if len(_TAILS) >= _TAIL_CACHE_SIZE:
        _TAILS.clear()
    _TAILS.add(tail)
    return True


def _compact_base64(data: bytes, start: int, stop: int) -> int:
    """Where the base64 of the chunk payload ``data[start:stop]`` ends (it begins right after
    ``{"bytes":"``) when the payload has Bedrock's own compact layout, else -1.

    Only layouts json.loads reads identically qualify (no escapes: some encoders write "/" as
    "\\/"). Halves the cost per event versus json.loads followed by base64 of a fresh str.
    """
    if not data.startswith(_CHUNK_PREFIX, start):
        return -1
    begin = start + _CHUNK_PREFIX_SIZE
    quote = data.find(b'"', begin, stop)
    if quote < 0:
        return -1
    tail = data[quote:stop]
    if tail not in _TAILS and not compact_tail(tail):
        return -1
    if data.find(b"\\", begin, quote) >= 0:
        return -1
    return quote


def decode_bedrock_chunk(msg: EventStreamMessage) -> bytes:
    """The inner Anthropic event JSON carried by a Bedrock ``chunk`` event (padding ignored)."""
    if msg.message_type != "event" or msg.event_type != "chunk":
        raise ProtocolError(
            f"not a Bedrock chunk event (:message-type={msg.message_type!r}, "
            f":event-type={msg.event_type!r})"
        )
    payload = msg.payload
    quote = _compact_base64(payload, 0, len(payload))
    if quote >= 0:
        encoded = payload[_CHUNK_PREFIX_SIZE:quote]
    else:
        try:
            body = json.loads(payload)
        except ValueError:
            raise ProtocolError("Bedrock chunk payload is not valid JSON") from None
        text = body.get("bytes") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise ProtocolError('Bedrock chunk payload has no "bytes" string')
        encoded = text.encode("utf-8", "surrogatepass")
    try:
        return binascii.a2b_base64(encoded, strict_mode=True)
    except binascii.Error:
        raise ProtocolError('Bedrock chunk "bytes" is not valid base64') from None


# -- decoding ---------------------------------------------------------------------------------


class EventStreamDecoder:
    """Incremental decoder: ``feed()`` bytes split anywhere, get whole messages back.

    Both CRCs are checked. Once a ProtocolError is raised the decoder stays failed. Messages that
    were complete before a corrupt one in the same ``feed()`` are still returned, and the error is
    raised by the next ``feed()``/``close()``, so the output does not depend on how the bytes were
    split.
    """

    __slots__ = (
        "_buf",
        "_error",
        "_frame_size",
        "_headers_size",
        "_last_block",
        "_last_chunk",
        "_last_headers",
        "_max_headers_size",
        "_max_payload_size",
        "_preludes",
    )

    def __init__(
        self,
        *,
        max_headers_size: int = DEFAULT_MAX_HEADERS_SIZE,
        max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
    ) -> None:
        self._max_headers_size = max_headers_size
        self._max_payload_size = max_payload_size
        # The tail of the bytes fed so far that does not complete a message yet.
        self._buf = bytearray()
        # Sizes of the message whose prelude was validated but whose body is still arriving.
        self._frame_size = 0
        self._headers_size = 0
        self._error: ProtocolError | None = None
        # Bedrock repeats the same header block on every chunk: reuse the parsed mapping.
        self._last_block = b""
        self._last_headers: Mapping[str, HeaderValue] = MappingProxyType({})
        self._last_chunk = False  # the cached headers are a Bedrock chunk event's
        # Preludes already checked (their CRC and these limits): frame sizes repeat, within a
        # stream and across streams, and a set lookup is cheaper than hashing the 8 bytes
        # again. Shared by every decoder with the same limits, as the compact tails are.
        self._preludes = _PRELUDES.setdefault((max_headers_size, max_payload_size), set())

    @property
    def pending(self) -> bool:
        """True while part of a message is buffered."""
        return bool(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[EventStreamMessage]:
        out: list[EventStreamMessage] = []
        self._feed(data, out, chunks=False)
        return out

    def feed_chunks(self, data: bytes | bytearray | memoryview) -> list[bytes | EventStreamMessage]:
        """:meth:`feed` for a Bedrock stream: a ``chunk`` event in Bedrock's compact layout comes
        back as its inner event JSON (what :func:`decode_bedrock_chunk` returns), any other
        message as itself. Same checks (both CRCs) and failure rules; no message object is built
        for the chunks, which is most of the cost of translating a stream.
        """
        out: list[bytes | EventStreamMessage] = []
        self._feed(data, out, chunks=True)
        return out

    def close(self) -> None:
        """Signal end of stream: a failed decoder or a partial message is an error."""
        if self._error is not None:
            raise ProtocolError(self._error.reason)
        if self._buf:
            raise ProtocolError(
                f"stream truncated: {len(self._buf)} bytes of an incomplete message buffered"
            )

    def _feed(self, data: bytes | bytearray | memoryview, out: list[Any], *, chunks: bool) -> None:
        if self._error is not None:
            raise ProtocolError(self._error.reason)
        buf = self._buf
        if buf:
            buf += data
            # Appending is amortised linear; decoding waits until the awaited bytes are there.
            if len(buf) < (self._frame_size or _PRELUDE_SIZE):
                return
            src = bytes(buf)
            buf.clear()
        else:
            src = data if type(data) is bytes else bytes(data)
        try:
            with memoryview(src) as view:
                pos = self._decode_from(src, view, out, chunks)
        except ProtocolError as exc:
            self._error = exc
            if not out:
                raise
            return
        if pos < len(src):
            buf += src[pos:]

    def _decode_from(self, src: bytes, view: memoryview, out: list[Any], chunks: bool) -> int:
        """Decode whole messages from ``src`` into ``out``; return where the rest begins.

        One loop with the common case inlined and state in locals: at Bedrock's few hundred
        bytes a frame, per-frame Python overhead rather than the C-speed CRC is what a stream
        costs.
        """
        end = len(src)
        pos = 0
        preludes = self._preludes
        tails = _TAILS
        block = self._last_block
        is_chunk = chunks and self._last_chunk
        chunk_head = block + _CHUNK_PREFIX  # a chunk's header block and payload start
        # A message whose prelude an earlier feed() already checked.
        size = self._frame_size
        headers_size = self._headers_size
        self._frame_size = 0
        while True:
            if size == 0:
                if end - pos < _PRELUDE_SIZE:
                    return pos
                prelude = _PRELUDE.unpack_from(src, pos)
                if prelude not in preludes:
                    self._check_prelude(src, pos)
                    if len(preludes) >= _PRELUDE_CACHE_SIZE:
                        preludes.clear()
                    preludes.add(prelude)
                size, headers_size, _ = prelude
            if end - pos < size:
                self._frame_size = size
                self._headers_size = headers_size
                return pos
            crc_pos = pos + size - 4
            if crc32(view[pos:crc_pos]) != _U32.unpack_from(src, crc_pos)[0]:
                raise ProtocolError("message CRC mismatch")
            headers_start = pos + _PRELUDE_SIZE
            headers_end = headers_start + headers_size
            pos += size
            size = 0
            # The common case in one comparison: the same chunk headers, a compact payload.
            compact = (
                is_chunk
                and headers_size == len(block)
                and src.startswith(chunk_head, headers_start)
            )
            if not compact:
                if headers_size != len(block) or not src.startswith(block, headers_start):
                    block = src[headers_start:headers_end]
                    self._last_headers, self._last_chunk = header_block(block)
                    self._last_block = block
                    is_chunk = chunks and self._last_chunk
                    chunk_head = block + _CHUNK_PREFIX
                compact = is_chunk and src.startswith(_CHUNK_PREFIX, headers_end)
            if compact:
                # _compact_base64 inlined; no backslash check: strict base64 refuses one.
                begin = headers_end + _CHUNK_PREFIX_SIZE
                quote = src.find(b'"', begin, crc_pos)
                if quote > 0 and (src[quote:crc_pos] in tails or compact_tail(src[quote:crc_pos])):
                    try:
                        out.append(binascii.a2b_base64(src[begin:quote], strict_mode=True))
                        continue
                    except binascii.Error:
                        pass  # the message, so decode_bedrock_chunk says what is wrong
            out.append(
                EventStreamMessage(headers=self._last_headers, payload=src[headers_end:crc_pos])
            )

    def _check_prelude(self, src: bytes, pos: int) -> None:
        """Validate a prelude the moment its 12 bytes exist, before buffering the body."""
        total: int
        headers_size: int
        total, headers_size, prelude_crc = _PRELUDE.unpack_from(src, pos)
        if crc32(src[pos : pos + 8]) != prelude_crc:
            raise ProtocolError("prelude CRC mismatch")
        if total < _MIN_MESSAGE_SIZE:
            raise ProtocolError(f"total length {total} is below the 16-byte minimum")
        if headers_size > self._max_headers_size:
            raise ProtocolError(
                f"headers length {headers_size} exceeds the limit of {self._max_headers_size}"
            )
        payload_size = total - _MIN_MESSAGE_SIZE - headers_size
        if payload_size < 0:
            raise ProtocolError(
                f"total length {total} is too short for headers length {headers_size}"
            )
        if payload_size > self._max_payload_size:
            raise ProtocolError(
                f"payload length {payload_size} exceeds the limit of {self._max_payload_size}"
            )
