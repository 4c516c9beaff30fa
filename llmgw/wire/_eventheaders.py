"""AWS event-stream header values: the ten wire types, typed so re-encoding is exact.

Integers keep their wire width (``Int8`` … ``Int64`` compare equal to plain ints), and a
timestamp stays integer milliseconds (``Timestamp``), because int64 milliseconds outrun
what ``datetime`` can hold.
"""

from __future__ import annotations

import functools
import struct
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import ClassVar, Self, TypeAlias

from ._errors import ProtocolError

__all__ = (
    "HeaderValue",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "Timestamp",
    "encode_headers",
    "parse_headers",
)

_U16 = struct.Struct(">H")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class _SizedInt(int):
    """An int that remembers which wire integer type it travels as.

    Plain ints are encoded as int32 (int64 if they do not fit); these wrappers pin the type so a
    decoded message re-encodes byte for byte. They compare and hash like plain ints.
    """

    __slots__ = ()
    _bits: ClassVar[int] = 64

    def __new__(cls, value: int = 0) -> Self:
        self = super().__new__(cls, value)
        limit = 1 << (cls._bits - 1)
        if not -limit <= self < limit:
            raise ValueError(f"{cls.__name__} out of range: {int(self)}")
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self)})"


class Int8(_SizedInt):
    """Header type 2 ("byte")."""

    __slots__ = ()
    _bits = 8


class Int16(_SizedInt):
    """Header type 3 ("short")."""

    __slots__ = ()
    _bits = 16


class Int32(_SizedInt):
    """Header type 4 ("integer")."""

    __slots__ = ()
    _bits = 32


class Int64(_SizedInt):
    """Header type 5 ("long")."""

    __slots__ = ()
    _bits = 64


class Timestamp(_SizedInt):
    """Header type 8: milliseconds since the Unix epoch.

    Kept as an int rather than a datetime because int64 milliseconds reach far beyond
    ``datetime``'s year 1-9999 range, and every wire value must decode.
    """

    __slots__ = ()
    _bits = 64

    @classmethod
    def from_datetime(cls, value: datetime) -> Timestamp:
        """Floor an aware datetime to whole milliseconds (naive ones are ambiguous, so refused)."""
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp header needs a timezone-aware datetime")
        return cls((value - _EPOCH) // _ONE_MS)

    def to_datetime(self) -> datetime:
        """The instant as an aware UTC datetime; OverflowError outside datetime's range."""
        return _EPOCH + timedelta(milliseconds=int(self))


# A datetime is accepted when encoding and always decodes as a Timestamp; a UUID round-trips.
HeaderValue: TypeAlias = bool | int | bytes | str | datetime | uuid.UUID


def _encode_header_value(value: HeaderValue) -> bytes:
    # bool before int: bool is an int subclass.
    if value is True:
        return b"\x00"
    if value is False:
        return b"\x01"
    if isinstance(value, int):
        if isinstance(value, Timestamp):
            return b"\x08" + _I64.pack(value)
        if isinstance(value, Int8):
            return b"\x02" + _I8.pack(value)
        if isinstance(value, Int16):
            return b"\x03" + _I16.pack(value)
        if isinstance(value, Int64):
            return b"\x05" + _I64.pack(value)
        if -(1 << 31) <= value < (1 << 31):
            return b"\x04" + _I32.pack(value)
        if -(1 << 63) <= value < (1 << 63):
            return b"\x05" + _I64.pack(value)
        raise ValueError(f"integer header value does not fit in int64: {value}")
    if isinstance(value, str):
        raw = value.encode()
        tag = b"\x07"
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        tag = b"\x06"
    elif isinstance(value, datetime):
        return b"\x08" + _I64.pack(Timestamp.from_datetime(value))
    elif isinstance(value, uuid.UUID):
        return b"\x09" + value.bytes
    else:
        raise TypeError(f"unsupported header value type: {type(value).__name__}")
    if len(raw) > 0xFFFF:
        raise ValueError(f"header value is {len(raw)} bytes; the limit is 65535")
    return tag + _U16.pack(len(raw)) + raw


def encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    parts: list[bytes] = []
    for name, value in headers.items():
        raw_name = name.encode()
        if not 1 <= len(raw_name) <= 255:
            raise ValueError(f"header name must be 1-255 UTF-8 bytes: {name!r}")
        parts.append(bytes((len(raw_name),)))
        parts.append(raw_name)
        parts.append(_encode_header_value(value))
    return b"".join(parts)


# type -> (struct, wrapper) for the fixed-size integer header types.
_FIXED_INT_TYPES: dict[int, tuple[struct.Struct, type[_SizedInt]]] = {
    2: (_I8, Int8),
    3: (_I16, Int16),
    4: (_I32, Int32),
    5: (_I64, Int64),
    8: (_I64, Timestamp),
}


def _overrun(name: str) -> ProtocolError:
    return ProtocolError(f"header {name!r} value overruns the header block")


def parse_headers(block: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    end = len(block)
    pos = 0
    while pos < end:
        name_len = block[pos]
        if name_len == 0:
            raise ProtocolError("empty header name")
        pos += 1
        type_pos = pos + name_len
        if type_pos >= end:  # the type byte must fit too
            raise ProtocolError("header name overruns the header block")
        try:
            name = block[pos:type_pos].decode()
        except UnicodeDecodeError:
            raise ProtocolError("header name is not valid UTF-8") from None
        value_type = block[type_pos]
        pos = type_pos + 1
        value: HeaderValue
        if value_type == 7 or value_type == 6:
            if pos + 2 > end:
                raise _overrun(name)
            value_end = pos + 2 + _U16.unpack_from(block, pos)[0]
            if value_end > end:
                raise _overrun(name)
            raw = block[pos + 2 : value_end]
            if value_type == 6:
                value = raw
            else:
                try:
                    value = raw.decode()
                except UnicodeDecodeError:
                    raise ProtocolError(f"header {name!r} string is not valid UTF-8") from None
            pos = value_end
        elif value_type == 0:
            value = True
        elif value_type == 1:
            value = False
        elif value_type in _FIXED_INT_TYPES:
            fmt, wrapper = _FIXED_INT_TYPES[value_type]
            if pos + fmt.size > end:
                raise _overrun(name)
            # int.__new__ skips the range check: the struct format already bounds it.
            value = int.__new__(wrapper, fmt.unpack_from(block, pos)[0])
            pos += fmt.size
        elif value_type == 9:
            if pos + 16 > end:
                raise _overrun(name)
            value = uuid.UUID(bytes=block[pos : pos + 16])
            pos += 16
        else:
            raise ProtocolError(f"unknown header type {value_type} for header {name!r}")
        if name in headers:
            # A mapping cannot hold both, and the spec says names are unique.
            raise ProtocolError(f"duplicate header {name!r}")
        headers[name] = value
    return headers


@functools.lru_cache(maxsize=64)
def header_block(block: bytes) -> tuple[Mapping[str, HeaderValue], bool]:
    """A header block's headers (read-only, so shared) and whether it is a Bedrock chunk's.
    A stream repeats a few blocks, and every Bedrock stream the same ones: each is parsed
    once per process, not once per decoder (~3 us each)."""
    headers = parse_headers(block)
    chunk = headers.get(":message-type") == "event" and headers.get(":event-type") == "chunk"
    return MappingProxyType(headers), chunk
