"""Sans-IO codecs: bytes in, events out. Nothing here imports aiohttp or asyncio."""

from ._errors import ProtocolError
from .eventstream import (
    EventStreamDecoder,
    EventStreamMessage,
    HeaderValue,
    Int8,
    Int16,
    Int32,
    Int64,
    Timestamp,
    decode_bedrock_chunk,
    encode_bedrock_chunk,
    encode_bedrock_exception,
    encode_message,
)
from .sse import SSEDecoder, SSEEvent, encode_event

__all__ = (
    "EventStreamDecoder",
    "EventStreamMessage",
    "HeaderValue",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "ProtocolError",
    "SSEDecoder",
    "SSEEvent",
    "Timestamp",
    "decode_bedrock_chunk",
    "encode_bedrock_chunk",
    "encode_bedrock_exception",
    "encode_event",
    "encode_message",
)
