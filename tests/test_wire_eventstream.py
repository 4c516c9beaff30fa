"""AWS event-stream codec: golden bytes, every split, every failure, and botocore agreement."""

from __future__ import annotations

import base64
import json
import random
import struct
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone

import pytest
from botocore.eventstream import EventStreamBuffer

from llmgw.wire import (
    EventStreamDecoder,
    EventStreamMessage,
    HeaderValue,
    Int8,
    Int16,
    Int32,
    Int64,
    ProtocolError,
    Timestamp,
    decode_bedrock_chunk,
    encode_bedrock_chunk,
    encode_bedrock_exception,
    encode_message,
)

# PROTOCOLS.md §3.6 worked example, inner event {"type":"message_stop"}.
GOLDEN_HEX = (
    "00000087" "0000004b" "87ea2bf3"
    "0b" "3a6576656e742d74797065" "07" "0005" "6368756e6b"
    "0d" "3a636f6e74656e742d74797065" "07" "0010" "6170706c69636174696f6e2f6a736f6e"
    "0d" "3a6d6573736167652d74797065" "07" "0005" "6576656e74"
    "7b226279746573223a2265794a306558426c496a6f696257567a6332466e5a56397a64473977496e303d227d"
    "ba48ab22"
)  # fmt: skip
GOLDEN = bytes.fromhex(GOLDEN_HEX)

ALL_TYPES: dict[str, HeaderValue] = {
    "true": True,
    "false": False,
    "byte": Int8(-128),
    "short": Int16(32767),
    "integer": Int32(-(2**31)),
    "long": Int64(2**63 - 1),
    "bytes": b"\x00\xffraw",
    "string": "héllo ✓",
    "timestamp": Timestamp(1_700_000_000_123),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}

VECTORS: dict[str, bytes] = {
    "golden": GOLDEN,
    "all_types": encode_message(ALL_TYPES, b"payload"),
    "minimal_16_bytes": encode_message({}, b""),
    "headers_only": encode_message({":message-type": "event"}, b""),
    "payload_only": encode_message({}, bytes(range(256)) * 4),
    "exception": encode_bedrock_exception("throttlingException", "Too many requests"),
    "padded_chunk": encode_bedrock_chunk(b'{"type":"ping"}', padding="abcdefghijklmnop"),
}
STREAM = b"".join(VECTORS.values())


def crc(data: bytes) -> bytes:
    return struct.pack(">I", zlib.crc32(data))


def raw_frame(
    header_block: bytes,
    payload: bytes = b"",
    *,
    total: int | None = None,
    headers_length: int | None = None,
) -> bytes:
    """A frame with valid CRCs around arbitrary (possibly invalid) contents."""
    if total is None:
        total = 16 + len(header_block) + len(payload)
    if headers_length is None:
        headers_length = len(header_block)
    lengths = struct.pack(">II", total, headers_length)
    body = lengths + crc(lengths) + header_block + payload
    return body + crc(body)


def decode_all(chunks: Iterable[bytes]) -> list[EventStreamMessage]:
    decoder = EventStreamDecoder()
    messages: list[EventStreamMessage] = []
    for chunk in chunks:
        messages += decoder.feed(chunk)
    decoder.close()
    return messages


def reencode(messages: Iterable[EventStreamMessage]) -> bytes:
    return b"".join(encode_message(m.headers, m.payload) for m in messages)


def raises_reason(data: bytes, reason: str, decoder: EventStreamDecoder | None = None) -> None:
    with pytest.raises(ProtocolError) as info:
        (decoder or EventStreamDecoder()).feed(data)
    assert reason in info.value.reason


# -- golden vector --------------------------------------------------------------------------


def test_bedrock_chunk_encoding_matches_protocols_worked_example_byte_for_byte() -> None:
    assert encode_bedrock_chunk(b'{"type":"message_stop"}') == GOLDEN


def test_worked_example_decodes_to_its_headers_in_wire_order_and_payload() -> None:
    [msg] = EventStreamDecoder().feed(GOLDEN)
    assert list(msg.headers.items()) == [
        (":event-type", "chunk"),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ]
    assert msg.payload == b'{"bytes":"eyJ0eXBlIjoibWVzc2FnZV9zdG9wIn0="}'
    assert (msg.message_type, msg.event_type, msg.exception_type) == ("event", "chunk", None)
    assert decode_bedrock_chunk(msg) == b'{"type":"message_stop"}'


# -- header types ---------------------------------------------------------------------------


def test_every_header_type_round_trips_with_its_wire_type_preserved() -> None:
    data = encode_message(ALL_TYPES, b"payload")
    [msg] = EventStreamDecoder().feed(data)
    assert dict(msg.headers) == ALL_TYPES
    for name, value in ALL_TYPES.items():
        assert type(msg.headers[name]) is type(value), name
    assert encode_message(msg.headers, msg.payload) == data


def test_header_type_codes_on_the_wire_follow_the_spec_table() -> None:
    expected = {
        "true": 0,
        "false": 1,
        "byte": 2,
        "short": 3,
        "integer": 4,
        "long": 5,
        "bytes": 6,
        "string": 7,
        "timestamp": 8,
        "uuid": 9,
    }
    for name, code in expected.items():
        frame = encode_message({name: ALL_TYPES[name]}, b"")
        assert frame[12] == len(name)
        assert frame[13 : 13 + len(name)] == name.encode()
        assert frame[13 + len(name)] == code, name


@pytest.mark.parametrize(
    ("value", "code", "size"),
    [(0, 4, 4), (2**31 - 1, 4, 4), (-(2**31), 4, 4), (2**31, 5, 8), (-(2**63), 5, 8)],
)
def test_plain_int_is_int32_when_it_fits_else_int64(value: int, code: int, size: int) -> None:
    frame = encode_message({"n": value}, b"")
    assert frame[14] == code
    [msg] = EventStreamDecoder().feed(frame)
    assert msg.headers["n"] == value
    assert len(frame) == 16 + 3 + size


def test_integer_wrappers_reject_values_outside_their_wire_width() -> None:
    for wrapper, bits in ((Int8, 8), (Int16, 16), (Int32, 32), (Int64, 64), (Timestamp, 64)):
        assert wrapper(2 ** (bits - 1) - 1) == 2 ** (bits - 1) - 1
        with pytest.raises(ValueError, match="out of range"):
            wrapper(2 ** (bits - 1))
    with pytest.raises(ValueError, match="int64"):
        encode_message({"n": 2**63}, b"")


def test_aware_datetime_encodes_as_millisecond_timestamp() -> None:
    moment = datetime(2024, 5, 6, 7, 8, 9, 123_999, tzinfo=timezone(timedelta(hours=2)))
    [msg] = EventStreamDecoder().feed(encode_message({"at": moment}, b""))
    stamp = msg.headers["at"]
    assert isinstance(stamp, Timestamp)
    assert stamp == int(datetime(2024, 5, 6, 5, 8, 9, tzinfo=UTC).timestamp()) * 1000 + 123
    assert stamp.to_datetime() == moment.replace(microsecond=123_000)
    assert stamp.to_datetime().tzinfo is UTC


def test_naive_datetime_header_is_refused_as_ambiguous() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_message({"at": datetime(2024, 1, 1)}, b"")


def test_timestamps_outside_datetime_range_still_decode() -> None:
    [msg] = EventStreamDecoder().feed(encode_message({"t": Timestamp(-(2**63))}, b""))
    assert msg.headers["t"] == -(2**63)


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"": "x"}, ValueError),
        ({"n" * 256: "x"}, ValueError),
        ({"s": "x" * 65536}, ValueError),
        ({"b": b"x" * 65536}, ValueError),
        ({"f": 1.5}, TypeError),
    ],
)
def test_encoder_refuses_headers_the_format_cannot_carry(
    headers: Mapping[str, HeaderValue], error: type[Exception]
) -> None:
    with pytest.raises(error):
        encode_message(headers, b"")


def test_longest_header_name_and_value_are_accepted() -> None:
    for headers in ({"n" * 255: "v" * 65535}, {"b": b"\x01" * 65535}):
        [msg] = EventStreamDecoder().feed(encode_message(headers, b""))
        assert dict(msg.headers) == headers


def test_encoder_accepts_bytearray_and_memoryview_payloads() -> None:
    expected = encode_message({"a": True}, b"xyz")
    assert encode_message({"a": True}, bytearray(b"xyz")) == expected
    assert encode_message({"a": True}, memoryview(b"xyz")) == expected


def test_decoded_headers_are_read_only() -> None:
    [msg] = EventStreamDecoder().feed(GOLDEN)
    with pytest.raises(TypeError):
        msg.headers[":event-type"] = "other"  # type: ignore[index]


# -- incremental decoding -------------------------------------------------------------------


@pytest.mark.parametrize("name", VECTORS)
def test_vector_fed_whole_decodes_and_reencodes_byte_exact(name: str) -> None:
    data = VECTORS[name]
    messages = decode_all([data])
    assert len(messages) == 1
    assert reencode(messages) == data


@pytest.mark.parametrize("name", VECTORS)
def test_vector_fed_byte_by_byte_gives_the_same_message(name: str) -> None:
    data = VECTORS[name]
    assert decode_all(data[i : i + 1] for i in range(len(data))) == decode_all([data])


@pytest.mark.parametrize("name", VECTORS)
def test_vector_split_at_every_offset_gives_the_same_message(name: str) -> None:
    data = VECTORS[name]
    expected = decode_all([data])
    for cut in range(len(data) + 1):
        assert decode_all([data[:cut], data[cut:]]) == expected, cut


def test_concatenated_messages_decode_in_order_at_every_split() -> None:
    expected = decode_all([STREAM])
    assert len(expected) == len(VECTORS)
    assert reencode(expected) == STREAM
    for cut in range(len(STREAM) + 1):
        assert decode_all([STREAM[:cut], STREAM[cut:]]) == expected, cut
    assert decode_all(STREAM[i : i + 1] for i in range(len(STREAM))) == expected


def test_concatenated_messages_decode_under_random_chunking() -> None:
    rng = random.Random(7)
    expected = decode_all([STREAM])
    for _ in range(50):
        chunks, pos = [], 0
        while pos < len(STREAM):
            step = rng.randint(0, 300)
            chunks.append(STREAM[pos : pos + step])
            pos += step
        assert decode_all(chunks) == expected


def test_feed_accepts_bytearray_and_memoryview() -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(bytearray(GOLDEN[:50])) == []
    [msg] = decoder.feed(memoryview(GOLDEN)[50:])
    assert decode_bedrock_chunk(msg) == b'{"type":"message_stop"}'


def test_pending_is_true_only_while_a_message_is_incomplete() -> None:
    decoder = EventStreamDecoder()
    states = [decoder.pending]
    for chunk in (GOLDEN[:5], GOLDEN[5:12], GOLDEN[12:], GOLDEN + GOLDEN[:1]):
        decoder.feed(chunk)
        states.append(decoder.pending)
    assert states == [False, True, True, False, True]


def test_different_header_blocks_after_identical_ones_are_not_confused() -> None:
    first = encode_bedrock_chunk(b'{"type":"ping"}')
    other = encode_message({":message-type": "event", ":event-type": "other"}, b"{}")
    messages = decode_all([first, first, other, first])
    assert [m.event_type for m in messages] == ["chunk", "chunk", "other", "chunk"]


# -- failures -------------------------------------------------------------------------------


def test_corrupt_prelude_crc_is_rejected() -> None:
    data = bytearray(GOLDEN)
    data[8] ^= 0x01
    raises_reason(bytes(data), "prelude CRC mismatch")


def test_corrupt_length_field_is_caught_by_the_prelude_crc() -> None:
    data = bytearray(GOLDEN)
    data[3] ^= 0x01
    raises_reason(bytes(data), "prelude CRC mismatch")


def test_corrupt_message_crc_is_rejected() -> None:
    data = bytearray(GOLDEN)
    data[-1] ^= 0x01
    raises_reason(bytes(data), "message CRC mismatch")


def test_corrupt_payload_byte_is_caught_by_the_message_crc() -> None:
    data = bytearray(GOLDEN)
    data[100] ^= 0x20
    raises_reason(bytes(data), "message CRC mismatch")


def test_every_truncation_is_reported_at_close() -> None:
    for cut in range(1, len(GOLDEN)):
        decoder = EventStreamDecoder()
        assert decoder.feed(GOLDEN[:cut]) == []
        with pytest.raises(ProtocolError, match="truncated"):
            decoder.close()


def test_close_after_whole_messages_or_nothing_is_clean() -> None:
    EventStreamDecoder().close()
    decoder = EventStreamDecoder()
    decoder.feed(STREAM)
    decoder.close()


def test_total_length_below_sixteen_is_rejected() -> None:
    lengths = struct.pack(">II", 15, 0)
    raises_reason(lengths + crc(lengths) + b"\x00" * 4, "below the 16-byte minimum")


def test_total_length_shorter_than_headers_is_rejected() -> None:
    frame = raw_frame(b"\x01a\x00", total=18, headers_length=3)
    raises_reason(frame, "too short for headers length 3")


def test_oversized_headers_are_rejected() -> None:
    frame = encode_message({"h": "x" * 100}, b"")
    raises_reason(
        frame, "headers length 105 exceeds the limit of 64", EventStreamDecoder(max_headers_size=64)
    )
    assert len(EventStreamDecoder(max_headers_size=105).feed(frame)) == 1


def test_oversized_payload_is_rejected_and_the_limit_itself_is_allowed() -> None:
    frame = encode_message({}, b"x" * 101)
    raises_reason(
        frame,
        "payload length 101 exceeds the limit of 100",
        EventStreamDecoder(max_payload_size=100),
    )
    assert len(EventStreamDecoder(max_payload_size=101).feed(frame)) == 1


def test_huge_total_length_is_rejected_from_the_prelude_alone() -> None:
    lengths = struct.pack(">II", 0xFFFFFFFF, 0)
    with pytest.raises(ProtocolError, match="payload length 4294967279 exceeds the limit"):
        EventStreamDecoder().feed(lengths + crc(lengths))


def test_default_limits_accept_a_sixteen_mib_payload() -> None:
    frame = encode_message({}, bytes(16 * 1024 * 1024))
    [msg] = EventStreamDecoder().feed(frame)
    assert len(msg.payload) == 16 * 1024 * 1024


def test_unknown_header_type_is_rejected() -> None:
    raises_reason(raw_frame(b"\x01a\x0a"), "unknown header type 10 for header 'a'")


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        (b"\x01a\x07\x00\x05abc", "header 'a' value overruns the header block"),
        (b"\x01a\x06\x00", "header 'a' value overruns the header block"),
        (b"\x01a\x04\x00\x00", "header 'a' value overruns the header block"),
        (b"\x01a\x05" + b"\x00" * 7, "header 'a' value overruns the header block"),
        (b"\x01a\x09" + b"\x00" * 15, "header 'a' value overruns the header block"),
        (b"\x05ab", "header name overruns the header block"),
        (b"\x01a", "header name overruns the header block"),
        (b"\x00\x00", "empty header name"),
        (b"\x01a\x00\x01a\x01", "duplicate header 'a'"),
        (b"\x02\xff\xfe\x00", "header name is not valid UTF-8"),
        (b"\x01a\x07\x00\x01\xff", "header 'a' string is not valid UTF-8"),
    ],
)
def test_malformed_header_block_is_rejected(block: bytes, reason: str) -> None:
    raises_reason(raw_frame(block, b"payload"), reason)


def test_header_overrunning_into_the_payload_is_rejected() -> None:
    # The string claims 5 bytes but the header block ends after 2; the payload must not be read.
    raises_reason(raw_frame(b"\x01a\x07\x00\x05ab", b"cde"), "overruns the header block")


def test_decoder_stays_failed_after_an_error() -> None:
    decoder = EventStreamDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x00" * 12)
    with pytest.raises(ProtocolError, match="prelude CRC mismatch"):
        decoder.feed(GOLDEN)
    with pytest.raises(ProtocolError, match="prelude CRC mismatch"):
        decoder.close()


def test_messages_before_a_corrupt_one_are_returned_at_any_split() -> None:
    bad = bytearray(GOLDEN)
    bad[-1] ^= 0xFF
    data = GOLDEN + VECTORS["exception"] + bytes(bad) + GOLDEN
    for cut in range(len(data) + 1):
        decoder = EventStreamDecoder()
        got: list[EventStreamMessage] = []
        with pytest.raises(ProtocolError, match="message CRC mismatch"):
            for chunk in (data[:cut], data[cut:], b""):
                got += decoder.feed(chunk)
        assert [m.message_type for m in got] == ["event", "exception"], cut


# -- Bedrock helpers ------------------------------------------------------------------------


def chunk_message(payload: bytes) -> EventStreamMessage:
    frame = encode_message(
        {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
        payload,
    )
    [msg] = EventStreamDecoder().feed(frame)
    return msg


def test_bedrock_padding_field_is_written_and_ignored() -> None:
    inner = b'{"type":"content_block_delta","index":0}'
    frame = encode_bedrock_chunk(inner, padding="abcdefghijklmnopqrstuvwxyzABCDEF")
    [msg] = EventStreamDecoder().feed(frame)
    assert json.loads(msg.payload) == {
        "bytes": base64.b64encode(inner).decode(),
        "p": "abcdefghijklmnopqrstuvwxyzABCDEF",
    }
    assert decode_bedrock_chunk(msg) == inner


@pytest.mark.parametrize(
    "template",
    [
        '{"bytes":"%s"}',
        '{"bytes":"%s","p":"abcdef"}',
        '{"bytes":"%s","p":""}',
        '{"p":"abc","bytes":"%s"}',
        '{ "bytes" : "%s" , "p" : "x\\"y" }',
        '{"bytes":"%s","p":"a\\u0041"}',
        '{"bytes":"%s","extra":{"n":[1,2]}}',
    ],
)
def test_chunk_payload_layouts_all_yield_the_inner_event(template: str) -> None:
    inner = b'{"type":"message_stop"}'
    payload = (template % base64.b64encode(inner).decode()).encode()
    assert decode_bedrock_chunk(chunk_message(payload)) == inner


def test_json_escaped_slash_in_base64_is_unescaped_before_decoding() -> None:
    inner = b'{"type":"text","text":"\xff\xff\xff"}'
    encoded = base64.b64encode(inner).decode()
    assert "/" in encoded
    payload = b'{"bytes":"' + encoded.replace("/", "\\/").encode() + b'"}'
    assert b"\\/" in payload
    assert decode_bedrock_chunk(chunk_message(payload)) == inner


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b'{"bytes":"eyJ9', "not valid JSON"),
        (b"[1]", 'no "bytes" string'),
        (b'{"p":"x"}', 'no "bytes" string'),
        (b'{"bytes":7}', 'no "bytes" string'),
        (b'{"bytes":"e$J9"}', "not valid base64"),
        (b'{"bytes":"eyJ"}', "not valid base64"),
        (b'{"bytes":"=e30"}', "not valid base64"),
        (b'{"bytes":"\xc3\xa9"}', "not valid base64"),
        (b'{"bytes":"\\u00e9"}', "not valid base64"),
        (b'{"bytes":"e30=","p":"a"', "not valid JSON"),
    ],
)
def test_malformed_chunk_payload_is_a_protocol_error(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_bedrock_chunk(chunk_message(payload))


def test_non_chunk_message_is_not_decoded_as_a_chunk() -> None:
    [msg] = EventStreamDecoder().feed(encode_bedrock_exception("validationException", "bad"))
    with pytest.raises(ProtocolError, match="not a Bedrock chunk event"):
        decode_bedrock_chunk(msg)


def test_bedrock_exception_frame_has_spec_headers_and_message_payload() -> None:
    frame = encode_bedrock_exception("throttlingException", 'Too many "requests" ✓')
    [msg] = EventStreamDecoder().feed(frame)
    assert list(msg.headers.items()) == [
        (":exception-type", "throttlingException"),
        (":content-type", "application/json"),
        (":message-type", "exception"),
    ]
    assert (msg.message_type, msg.exception_type, msg.event_type) == (
        "exception",
        "throttlingException",
        None,
    )
    assert json.loads(msg.payload) == {"message": 'Too many "requests" ✓'}


def test_non_string_reserved_header_reads_as_absent() -> None:
    [msg] = EventStreamDecoder().feed(encode_message({":message-type": Int32(1)}, b""))
    assert msg.message_type is None


# -- botocore agreement ---------------------------------------------------------------------

_RANDOM_VALUES: list[Callable[[random.Random], HeaderValue]] = [
    lambda r: True,
    lambda r: False,
    lambda r: Int8(r.randint(-128, 127)),
    lambda r: Int16(r.randint(-(2**15), 2**15 - 1)),
    lambda r: Int32(r.randint(-(2**31), 2**31 - 1)),
    lambda r: Int64(r.randint(-(2**63), 2**63 - 1)),
    lambda r: r.randbytes(r.randint(0, 40)),
    lambda r: "".join(
        chr(r.choice([r.randint(32, 126), r.randint(160, 0x2FFF)])) for _ in range(r.randint(0, 20))
    ),
    lambda r: Timestamp(r.randint(-(2**63), 2**63 - 1)),
    lambda r: uuid.UUID(int=r.getrandbits(128)),
]


def random_message(rng: random.Random) -> tuple[dict[str, HeaderValue], bytes]:
    headers: dict[str, HeaderValue] = {}
    for _ in range(rng.randint(0, 8)):
        name = "".join(rng.choice("abcxyz:-é") for _ in range(rng.randint(1, 12)))
        headers[name] = rng.choice(_RANDOM_VALUES)(rng)
    return headers, rng.randbytes(rng.randint(0, 600))


def as_botocore(value: HeaderValue) -> object:
    """botocore's view of a header value: ints, raw UUID bytes, timestamps as ms."""
    if isinstance(value, uuid.UUID):
        return value.bytes
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


def test_botocore_decodes_our_random_messages_identically() -> None:
    rng = random.Random(20240601)
    originals = [random_message(rng) for _ in range(50)]
    stream = b"".join(encode_message(h, p) for h, p in originals)

    theirs = EventStreamBuffer()
    theirs.add_data(stream)
    botocore_messages = list(theirs)
    ours = decode_all([stream])

    assert len(botocore_messages) == len(ours) == 50
    for (headers, payload), boto, mine in zip(originals, botocore_messages, ours, strict=True):
        assert boto.payload == payload == mine.payload
        assert list(boto.headers.items()) == [(k, as_botocore(v)) for k, v in headers.items()]
        assert dict(mine.headers) == headers
    assert reencode(ours) == stream


def test_botocore_decodes_our_bedrock_frames() -> None:
    theirs = EventStreamBuffer()
    theirs.add_data(GOLDEN + encode_bedrock_exception("modelTimeoutException", "slow"))
    chunk, exc = list(theirs)
    assert chunk.headers[":event-type"] == "chunk"
    assert json.loads(chunk.payload)["bytes"] == "eyJ0eXBlIjoibWVzc2FnZV9zdG9wIn0="
    assert chunk.to_response_dict()["status_code"] == 200
    assert exc.headers[":exception-type"] == "modelTimeoutException"
    assert json.loads(exc.payload) == {"message": "slow"}
    assert exc.to_response_dict()["status_code"] == 400
