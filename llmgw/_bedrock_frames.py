"""Bedrock event-stream frames recognised by their bytes, for the usage tap's fast paths:
the prelude's lengths, the prefix every content-delta frame shares, where a whole frame
starts again in a window whose beginning was let go, the frames that carry a stream's usage
(its ``message_start``, its last ``message_delta``) and a compact chunk read in place; and
what an exception frame says."""

from __future__ import annotations

import binascii
import json
import zlib
from typing import Any

from ._json import loads
from .usage import _DELTA_OVERHEAD
from .wire import EventStreamMessage, encode_bedrock_chunk
from .wire.eventstream import (
    _CHUNK_PREFIX_SIZE,
    _LENGTHS,
    _MIN_MESSAGE_SIZE,
    _PRELUDE_SIZE,
    _TAILS,
    _U32,
    DEFAULT_MAX_HEADERS_SIZE,
    DEFAULT_MAX_PAYLOAD_SIZE,
    _compact_base64,
    compact_tail,
)

__all__ = (
    "BASE64_START",
    "BLOCK_MARK",
    "BLOCK_MARK_END",
    "CHUNK_HEADERS_SIZE",
    "CHUNK_HEADER_BLOCK",
    "DELTA_HEAD",
    "DELTA_MARK",
    "DELTA_MARK_END",
    "LENGTHS",
    "MAX_FRAME",
    "MESSAGE_DELTA_MARK",
    "MESSAGE_START_MARK",
    "MIN_FRAME",
    "PAD",
    "PRELUDE_SIZE",
    "PROBE",
    "U32",
    "compact_event",
    "content_frame",
    "exception_info",
    "final_usage",
    "resync",
    "skip_frames",
    "through_message_start",
)

# The delta tap's fast path. A frame: 12-byte prelude (total length, headers length, CRC),
# header block, payload, 4-byte CRC; a frame of the content delta head alone gives the bytes
# every delta frame shares from offset 12: the chunk header block, {"bytes":" and the head's
# base64 (its 30 bytes encode to 40 characters, which do not depend on what follows).
PRELUDE_SIZE = _PRELUDE_SIZE


def _mark(head: bytes) -> bytes:
    """What every chunk frame whose event JSON starts with ``head`` (a multiple of 3 bytes,
    so its base64 does not depend on what follows) has from the end of its prelude on."""
    frame = encode_bedrock_chunk(head)
    return frame[PRELUDE_SIZE : frame.rindex(b'"')]


DELTA_HEAD = b'{"type":"content_block_delta",'
PROBE = encode_bedrock_chunk(DELTA_HEAD)
LENGTHS = _LENGTHS
U32 = _U32
CHUNK_HEADERS_SIZE = U32.unpack_from(PROBE, 4)[0]
DELTA_MARK = _mark(DELTA_HEAD)
DELTA_MARK_END = PRELUDE_SIZE + len(DELTA_MARK)
#: The same for ``{"type":"content_block_s`` (24 bytes, 32 characters): the start and stop of
#: a content block, frames that carry nothing the tap counts.
BLOCK_MARK = _mark(b'{"type":"content_block_s')
BLOCK_MARK_END = PRELUDE_SIZE + len(BLOCK_MARK)
#: And for ``{"type":"message_start",`` and ``{"type":"message_delta",`` (24 bytes each):
#: the usage at a stream's two ends, found by their bytes.
MESSAGE_START_MARK = _mark(b'{"type":"message_start",')
MESSAGE_DELTA_MARK = _mark(b'{"type":"message_delta",')
BASE64_START = DELTA_MARK_END - 40
PAD = ord("=")
MIN_FRAME = _MIN_MESSAGE_SIZE
MAX_FRAME = _MIN_MESSAGE_SIZE + DEFAULT_MAX_HEADERS_SIZE + DEFAULT_MAX_PAYLOAD_SIZE


#: What every Bedrock chunk frame has after its prelude: a resync point in a cut window.
CHUNK_HEADER_BLOCK = PROBE[PRELUDE_SIZE : PRELUDE_SIZE + CHUNK_HEADERS_SIZE]


def skip_frames(data: bytes, pos: int) -> int:
    """Past the whole frames of ``data`` from ``pos`` (a frame boundary), by their lengths
    alone: where the unfinished rest begins, or -1 when a length makes no sense."""
    end = len(data)
    while end - pos >= PRELUDE_SIZE:
        total = U32.unpack_from(data, pos)[0]
        if not MIN_FRAME <= total <= MAX_FRAME:
            return -1
        if pos + total > end:
            return pos
        pos += total
    return pos


def resync(tail: bytes) -> int:
    """Where the first whole chunk frame of ``tail`` starts (its header block found and its
    prelude CRC right, so a payload cannot fake one), or -1."""
    at = tail.find(CHUNK_HEADER_BLOCK, PRELUDE_SIZE)
    while at >= 0:
        start = at - PRELUDE_SIZE
        if _chunk_frame_size(tail, start):
            return start
        at = tail.find(CHUNK_HEADER_BLOCK, at + 1)
    return -1


def _chunk_frame_size(data: bytes, pos: int) -> int:
    """The length of the chunk frame whose prelude is at ``pos`` (a chunk's headers size,
    a length in range, the prelude CRC right), or 0."""
    total: int
    headers_size: int
    total, headers_size = LENGTHS.unpack_from(data, pos)
    if (
        headers_size == CHUNK_HEADERS_SIZE
        and MIN_FRAME <= total <= MAX_FRAME
        and zlib.crc32(data[pos : pos + 8]) == U32.unpack_from(data, pos + 8)[0]
    ):
        return total
    return 0


def through_message_start(chunk: bytes) -> int:
    """Where the frame after the first ``message_start`` chunk frame of ``chunk`` (which
    starts at a frame boundary) begins, or 0; found by its bytes, checked by its prelude."""
    at = chunk.find(MESSAGE_START_MARK, PRELUDE_SIZE)
    if at < 0:
        return 0
    total = _chunk_frame_size(chunk, at - PRELUDE_SIZE)
    return at - PRELUDE_SIZE + total if total else 0


def content_frame(data: bytes, pos: int, end: int) -> int:
    """For the whole chunk frame ``data[pos:end]``: the delta bytes of a compact content
    delta (as :meth:`~llmgw.usage_sse.SSEUsageTap.on_event` counts them), 0 for a compact
    content block start or stop, -1 for anything else (that is read in full).

    A content frame is recognised by its bytes alone (see
    :class:`~llmgw.usage_bedrock.BedrockUsageTap`); its size comes from the base64 length,
    which Bedrock never splits or escapes."""
    delta = data.startswith(DELTA_MARK, pos + 12)
    if not delta and not data.startswith(BLOCK_MARK, pos + 12):
        return -1
    payload_end = end - 4
    after = pos + (DELTA_MARK_END if delta else BLOCK_MARK_END)
    quote = data.find(b'"', after, payload_end)
    if quote < 0:
        return -1
    tail = data[quote:payload_end]
    if (tail not in _TAILS and not compact_tail(tail)) or data.find(b"\\", after, quote) >= 0:
        return -1  # not Bedrock's compact layout, or a JSON escape
    if not delta:
        return 0
    size = (quote - pos - BASE64_START) // 4 * 3
    if data[quote - 1] == PAD:
        size -= 2 if data[quote - 2] == PAD else 1
    return size - _DELTA_OVERHEAD if size > _DELTA_OVERHEAD else 1


def compact_event(data: bytes, pos: int, end: int) -> bytes | None:
    """The inner event JSON of the whole frame ``data[pos:end]`` when it is a chunk with
    Bedrock's own header block and compact payload and both its CRCs hold: what the full
    decoder reads the same way, without its per-stream machinery. ``None`` leaves the
    frame to the decoder (which also says what is wrong with it)."""
    payload = pos + PRELUDE_SIZE + CHUNK_HEADERS_SIZE
    if (
        not data.startswith(CHUNK_HEADER_BLOCK, pos + PRELUDE_SIZE)
        or zlib.crc32(data[pos : pos + 8]) != U32.unpack_from(data, pos + 8)[0]
        or zlib.crc32(data[pos : end - 4]) != U32.unpack_from(data, end - 4)[0]
    ):
        return None
    quote = _compact_base64(data, payload, end - 4)
    if quote < 0:
        return None
    try:
        return binascii.a2b_base64(data[payload + _CHUNK_PREFIX_SIZE : quote], strict_mode=True)
    except binascii.Error:
        return None


def final_usage(tail: bytes, start: int) -> tuple[int, dict[str, Any]] | None:
    """The last ``message_delta`` of ``tail`` (from ``start``) that carries a usage object,
    found from the end by its bytes (the chunk header block and the base64 of the event's
    head) and read as the full decoder would: where its frame ends, and the parsed event.
    ``None`` otherwise."""
    mark = MESSAGE_DELTA_MARK
    at = tail.rfind(mark, start + PRELUDE_SIZE)
    while at >= 0:
        pos = at - PRELUDE_SIZE
        end = pos + _chunk_frame_size(tail, pos)
        if pos < end <= len(tail):
            event = compact_event(tail, pos, end)
            if event is not None:
                try:
                    delta = loads(event)
                    usage = delta.get("usage")
                except (ValueError, AttributeError):
                    usage = None
                if isinstance(usage, dict):
                    return end, delta
        at = tail.rfind(mark, start + PRELUDE_SIZE, at)
    return None


def exception_info(message: EventStreamMessage) -> dict[str, Any]:
    """``{"type": exceptionType, "message": text}`` of an exception or error frame."""
    if message.message_type == "error":
        code = message.headers.get(":error-code")
        text = message.headers.get(":error-message")
        return {"type": str(code or "error"), "message": str(text or "")}
    text = ""
    try:
        payload = json.loads(message.payload or b"{}")
        if isinstance(payload, dict):
            text = str(payload.get("message") or payload.get("Message") or "")
    except ValueError:
        text = message.payload.decode("utf-8", "replace")
    return {"type": message.exception_type or "internalServerException", "message": text}
