"""Bedrock event-stream frames recognised by their bytes, for the usage tap's fast paths:
the prelude's lengths, the prefix every content-delta frame shares, and where a whole frame
starts again in a window whose beginning was let go; and what an exception frame says."""

from __future__ import annotations

import json
import zlib
from typing import Any

from .wire import EventStreamMessage, encode_bedrock_chunk
from .wire.eventstream import (
    _LENGTHS,
    _MIN_MESSAGE_SIZE,
    _PRELUDE_SIZE,
    _U32,
    DEFAULT_MAX_HEADERS_SIZE,
    DEFAULT_MAX_PAYLOAD_SIZE,
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
    "exception_info",
    "resync",
    "skip_frames",
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
        total, headers_size = LENGTHS.unpack_from(tail, start)
        if (
            headers_size == CHUNK_HEADERS_SIZE
            and MIN_FRAME <= total <= MAX_FRAME
            and zlib.crc32(tail[start : start + 8]) == U32.unpack_from(tail, start + 8)[0]
        ):
            return start
        at = tail.find(CHUNK_HEADER_BLOCK, at + 1)
    return -1


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
