"""SSE codec: every vector is fed whole, byte by byte, split at every offset and with a trailing
partial event, and must decode identically each way (h11's test style)."""

import dataclasses
import random
import subprocess
import sys
from collections.abc import Callable, Iterable

import pytest

from llmgw.wire import ProtocolError, SSEDecoder, SSEEvent, encode_event

BOM = b"\xef\xbb\xbf"


def feed_chunks(
    chunks: Iterable[bytes | bytearray | memoryview], decoder: SSEDecoder | None = None
) -> list[SSEEvent]:
    dec = decoder if decoder is not None else SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += dec.feed(chunk)
    events += dec.close()
    return events


def whole(stream: bytes) -> list[bytes]:
    return [stream]


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def random_pieces(stream: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(len(stream) + 1), k=min(len(stream) + 1, 7)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


def assert_decodes(stream: bytes, expected: list[SSEEvent]) -> None:
    """The same events whatever the chunking, and a partial event after them changes nothing."""
    assert feed_chunks(whole(stream)) == expected
    assert feed_chunks(bytewise(stream)) == expected
    for i in range(len(stream) + 1):
        assert feed_chunks([stream[:i], stream[i:]]) == expected, f"split at {i}"
    for seed in range(5):
        assert feed_chunks(random_pieces(stream, seed)) == expected, f"seed {seed}"
    assert feed_chunks([bytearray(stream)]) == expected
    assert feed_chunks([memoryview(stream)]) == expected

    # Trailing garbage: an unterminated event after the stream is discarded at EOF.
    for trailer in (b"data: cut off", b"event: x\ndata: cut off\n", b"data: y\r"):
        dec = SSEDecoder()
        assert feed_chunks(bytewise(stream + trailer), dec) == expected
        assert dec.pending


Vector = tuple[str, bytes, list[SSEEvent]]

VECTORS: list[Vector] = [
    ("lf", b"event: a\ndata: 1\n\n", [SSEEvent("a", b"1")]),
    ("crlf", b"event: a\r\ndata: 1\r\n\r\n", [SSEEvent("a", b"1")]),
    ("cr_only", b"event: a\rdata: 1\r\r", [SSEEvent("a", b"1")]),
    (
        "mixed_line_ends",
        b"event: a\rdata: 1\r\n\ndata: 2\n\r",
        [SSEEvent("a", b"1"), SSEEvent("message", b"2")],
    ),
    ("crlf_then_lone_cr_blank", b"data: 1\r\n\r", [SSEEvent("message", b"1")]),
    ("lf_then_crlf_blank", b"data: 1\n\r\n", [SSEEvent("message", b"1")]),
    ("no_event_field_is_message", b"data: x\n\n", [SSEEvent("message", b"x")]),
    ("event_without_space", b"event:a\ndata:1\n\n", [SSEEvent("a", b"1")]),
    ("empty_event_field_is_message", b"event:\ndata: x\n\n", [SSEEvent("message", b"x")]),
    (
        "event_name_does_not_leak",
        b"event: a\ndata: 1\n\ndata: 2\n\n",
        [SSEEvent("a", b"1"), SSEEvent("message", b"2")],
    ),
    ("multi_line_data", b"data: a\ndata: b\ndata: c\n\n", [SSEEvent("message", b"a\nb\nc")]),
    ("data_without_space", b"data:x\n\n", [SSEEvent("message", b"x")]),
    ("only_one_space_removed", b"data:  x\n\n", [SSEEvent("message", b" x")]),
    ("tab_is_not_stripped", b"data:\tx\n\n", [SSEEvent("message", b"\tx")]),
    ("colon_in_value", b'data: {"a":"b:c"}\n\n', [SSEEvent("message", b'{"a":"b:c"}')]),
    ("data_without_colon_is_empty_line", b"data\n\n", [SSEEvent("message", b"")]),
    ("empty_data_lines_join", b"data\ndata:\ndata: \n\n", [SSEEvent("message", b"\n\n")]),
    ("trailing_empty_data_line_kept", b"data: a\ndata:\n\n", [SSEEvent("message", b"a\n")]),
    ("event_without_colon_is_message", b"event\ndata: x\n\n", [SSEEvent("message", b"x")]),
    ("no_data_not_dispatched", b"event: a\n\nid: 1\n\nretry: 5\n\n", []),
    ("comment_ignored", b": ping\ndata: x\n: more\n\n", [SSEEvent("message", b"x")]),
    ("comment_only_block_not_dispatched", b":\n\n: keepalive\n\n", []),
    (
        "comment_looking_data_line",
        b"data: : not a comment\n\n",
        [SSEEvent("message", b": not a comment")],
    ),
    (
        "unknown_field_ignored",
        b"foo: bar\ndata: x\nData: y\n data: z\n\n",
        [SSEEvent("message", b"x")],
    ),
    ("leading_blank_lines", b"\n\r\n\rdata: x\n\n", [SSEEvent("message", b"x")]),
    ("bom_stripped", BOM + b"data: x\n\n", [SSEEvent("message", b"x")]),
    ("only_one_bom_stripped", BOM + BOM + b"data: x\n\ndata: y\n\n", [SSEEvent("message", b"y")]),
    ("bom_later_is_content", b"data: " + BOM + b"x\n\n", [SSEEvent("message", BOM + b"x")]),
    (
        "bom_prefix_that_is_not_a_bom",
        b"\xef\xbbdata: x\n\ndata: y\n\n",
        [SSEEvent("message", b"y")],
    ),
    ("short_stream_shorter_than_bom", b"\n\n", []),
    ("id_set", b"id: 7\ndata: x\n\n", [SSEEvent("message", b"x", id="7")]),
    (
        "id_persists_across_events",
        b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
        [
            SSEEvent("message", b"a", id="7"),
            SSEEvent("message", b"b", id="7"),
            SSEEvent("message", b"c", id=""),
        ],
    ),
    (
        "id_with_nul_ignored",
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        [SSEEvent("message", b"a", id="1"), SSEEvent("message", b"b", id="1")],
    ),
    ("id_set_by_undispatched_block", b"id: 9\n\ndata: a\n\n", [SSEEvent("message", b"a", id="9")]),
    (
        "retry_digits",
        b"retry: 3000\ndata: a\n\ndata: b\n\n",
        [SSEEvent("message", b"a", retry=3000), SSEEvent("message", b"b")],
    ),
    ("retry_without_space", b"retry:0\ndata: a\n\n", [SSEEvent("message", b"a", retry=0)]),
    *[
        (f"retry_ignored_{i}", b"retry:" + bad + b"\ndata: a\n\n", [SSEEvent("message", b"a")])
        for i, bad in enumerate([b"3s", b"-1", b"  10", b"1.5", b"", b"\xd9\xa1", b"10 "])
    ],
    (
        "retry_keeps_last_valid",
        b"retry: 5\nretry: x\ndata: a\n\n",
        [SSEEvent("message", b"a", retry=5)],
    ),
    ("non_utf8_event_name_replaced", b"event: a\xffb\ndata: x\n\n", [SSEEvent("a\ufffdb", b"x")]),
    ("data_bytes_not_decoded", b"data: \xff\xfe\n\n", [SSEEvent("message", b"\xff\xfe")]),
    ("utf8_event_name", "event: café\ndata: ☕\n\n".encode(), [SSEEvent("café", "☕".encode())]),
    ("nul_in_data_kept", b"data: a\x00b\n\n", [SSEEvent("message", b"a\x00b")]),
]


@pytest.mark.parametrize(
    ("stream", "expected"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS]
)
def test_vector_decodes_identically_however_it_is_split(
    stream: bytes, expected: list[SSEEvent]
) -> None:
    assert_decodes(stream, expected)


def test_decoded_events_are_frozen_hashable_values() -> None:
    [event] = SSEDecoder().feed(b"event: a\nid: 1\nretry: 2\ndata: [1]\n\n")
    twin = SSEEvent("a", b"[1]", id="1", retry=2)
    assert event == twin
    assert hash(event) == hash(twin)
    assert repr(event) == repr(twin)
    assert event.json() == [1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.event = "b"  # type: ignore[misc]


def test_cr_split_across_chunks_is_one_line_end() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    # The LF completes the CRLF; treating it as a blank line would dispatch "a" on its own.
    assert dec.feed(b"\ndata: b\r") == []
    assert dec.feed(b"\n") == []
    assert dec.feed(b"\r\n") == [SSEEvent("message", b"a\nb")]


def test_lone_cr_at_chunk_end_dispatches_without_waiting_for_next_chunk() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r\r") == [SSEEvent("message", b"a")]
    assert not dec.pending


def test_lf_after_cr_is_swallowed_only_once() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    assert dec.feed(b"\n") == []
    assert dec.feed(b"\n") == [SSEEvent("message", b"a")]


def test_bom_split_across_three_chunks_is_stripped() -> None:
    dec = SSEDecoder()
    assert dec.feed(BOM[:1]) == []
    assert dec.pending
    assert dec.feed(BOM[1:2]) == []
    assert dec.feed(BOM[2:] + b"data: x\n") == []
    assert dec.feed(b"\n") == [SSEEvent("message", b"x")]


def test_empty_feeds_change_nothing() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"") == []
    assert dec.feed(BOM) == []
    assert dec.feed(b"") == []
    assert dec.feed(b"data: x\r") == []
    assert dec.feed(b"") == []
    assert dec.feed(b"\n\n") == [SSEEvent("message", b"x")]


# --- the complete example from PROTOCOLS.md §2.4 ---------------------------------------------

ANTHROPIC_STREAM = b"""\
event: message_start
data: {"type":"message_start","message":{"id":"msg_01AbC","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":2048,"cache_read_input_tokens":30000,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Need to read the file."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAh\xe2\x80\xa6"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: ping
data: {"type": "ping"}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Reading it now."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01X","name":"Read","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"path\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":" \\"a.ts\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":95}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501

EXPECTED_NAMES = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_delta",
    "content_block_stop",
    "ping",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "content_block_start",
    "content_block_delta",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
]


def check_anthropic_example(events: list[SSEEvent]) -> None:
    assert [e.event for e in events] == EXPECTED_NAMES
    bodies = [e.json() for e in events]
    assert [b["type"] for b in bodies] == EXPECTED_NAMES
    assert bodies[0]["message"]["usage"]["cache_read_input_tokens"] == 30000
    assert bodies[3]["delta"]["signature"] == "EqQBCgIYAh…"
    tool_json = "".join(
        b["delta"]["partial_json"] for b in bodies if b.get("index") == 2 and "delta" in b
    )
    assert tool_json == '{"path": "a.ts"}'
    assert bodies[-2]["usage"] == {"output_tokens": 95}
    assert bodies[-2]["delta"]["stop_reason"] == "tool_use"
    assert all(e.id is None and e.retry is None for e in events)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_protocols_example_stream_decodes_into_events_and_json(line_end: bytes) -> None:
    stream = ANTHROPIC_STREAM.replace(b"\n", line_end)
    events = feed_chunks([stream])
    check_anthropic_example(events)
    assert_decodes(stream, events)


def test_protocols_example_reencodes_byte_for_byte() -> None:
    events = feed_chunks([ANTHROPIC_STREAM])
    assert b"".join(encode_event(e.event, e.data) for e in events) == ANTHROPIC_STREAM


# --- encoder ---------------------------------------------------------------------------------


def test_encode_event_exact_bytes() -> None:
    assert encode_event("ping", b'{"type": "ping"}') == b'event: ping\ndata: {"type": "ping"}\n\n'
    assert encode_event(None, "a\nb", id="4", retry=10) == b"id: 4\nretry: 10\ndata: a\ndata: b\n\n"
    assert encode_event(None, b"") == b"data: \n\n"


RoundTrip = tuple[str | None, bytes | str, str | None, int | None]

ROUND_TRIPS: list[RoundTrip] = [
    ("message_start", b'{"type":"message_start"}', None, None),
    (None, b"plain", None, None),
    ("x", b"line1\nline2\nline3", None, None),
    ("x", b"ends with newline\n", None, None),
    ("x", b"\n\nstarts with blank lines", None, None),
    ("x", b"", None, None),
    ("x", b"\n", None, None),
    ("x", b" leading space", None, None),
    ("x", b":colon first", None, None),
    (" spaced name", b"d", None, None),
    ("caf\u00e9", "unicode \u2603 text", "id-\u00e9", 0),
    ("x", b"bytes \xff kept", "", 1500),
    ("x", b"with\x00nul", "42", None),
]


@pytest.mark.parametrize(("event", "data", "id_", "retry"), ROUND_TRIPS)
def test_encode_then_decode_is_identity(
    event: str | None, data: bytes | str, id_: str | None, retry: int | None
) -> None:
    encoded = encode_event(event, data, id=id_, retry=retry)
    raw = data.encode() if isinstance(data, str) else data
    expected = SSEEvent(event if event else "message", raw, id=id_, retry=retry)
    assert_decodes(encoded, [expected])


def test_many_encoded_events_survive_random_chunking() -> None:
    rng = random.Random(1234)
    originals = [
        SSEEvent(f"e{i}", bytes(rng.choice(b"ab:\n {}\xff") for _ in range(rng.randrange(40))))
        for i in range(200)
    ]
    stream = b"".join(encode_event(e.event, e.data) for e in originals)
    for seed in range(20):
        pieces = [*random_pieces(stream, seed), b""]
        assert feed_chunks(pieces) == originals


@pytest.mark.parametrize(("data", "decoded"), [(b"a\r\nb", b"a\nb"), (b"a\rb\r", b"a\nb\n")])
def test_encode_turns_cr_and_crlf_in_data_into_line_breaks(data: bytes, decoded: bytes) -> None:
    assert feed_chunks([encode_event("x", data)]) == [SSEEvent("x", decoded)]


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_event("a\nb", b""),
        lambda: encode_event("a\rb", b""),
        lambda: encode_event("a", b"", id="1\n"),
        lambda: encode_event("a", b"", id="1\r"),
        lambda: encode_event("a", b"", id="1\x002"),
        lambda: encode_event("a", b"", retry=-1),
        lambda: encode_event("a", b"", retry=True),
    ],
)
def test_encode_refuses_what_cannot_round_trip(call: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError):
        call()


# --- limits ----------------------------------------------------------------------------------


def test_line_at_max_line_size_is_accepted() -> None:
    line = b"data: " + b"x" * 94
    assert feed_chunks([line + b"\n\n"], SSEDecoder(max_line_size=100)) == [
        SSEEvent("message", b"x" * 94)
    ]


@pytest.mark.parametrize("chunking", [whole, bytewise], ids=["whole", "bytewise"])
def test_line_longer_than_max_line_size_raises(chunking: Callable[[bytes], list[bytes]]) -> None:
    dec = SSEDecoder(max_line_size=100)
    with pytest.raises(ProtocolError, match="line longer than 100"):
        feed_chunks(chunking(b"data: ok\n" + b"data: " + b"x" * 95 + b"\n\n"), dec)


def test_comment_line_counts_against_max_line_size() -> None:
    with pytest.raises(ProtocolError):
        SSEDecoder(max_line_size=10).feed(b":" + b" " * 10 + b"\n")


def test_unterminated_line_raises_as_soon_as_it_exceeds_the_limit() -> None:
    dec = SSEDecoder(max_line_size=100)
    dec.feed(b"data: ")
    dec.feed(b"x" * 94)  # exactly 100 bytes buffered: still fine
    with pytest.raises(ProtocolError) as info:
        dec.feed(b"x")
    assert "100" in info.value.reason


def test_decoder_stays_failed_after_protocol_error() -> None:
    dec = SSEDecoder(max_line_size=10)
    with pytest.raises(ProtocolError):
        dec.feed(b"x" * 11)
    with pytest.raises(ProtocolError):
        dec.feed(b"\n\n")
    with pytest.raises(ProtocolError):
        dec.close()


def test_event_at_max_event_size_is_accepted() -> None:
    stream = b"data: " + b"a" * 50 + b"\ndata: " + b"b" * 49 + b"\n\n"  # 50 + 1 + 49 = 100 bytes
    assert feed_chunks([stream], SSEDecoder(max_event_size=100)) == [
        SSEEvent("message", b"a" * 50 + b"\n" + b"b" * 49)
    ]


@pytest.mark.parametrize("chunking", [whole, bytewise], ids=["whole", "bytewise"])
def test_event_larger_than_max_event_size_raises(chunking: Callable[[bytes], list[bytes]]) -> None:
    stream = b"data: " + b"a" * 50 + b"\ndata: " + b"b" * 50 + b"\n\n"  # 101 bytes of data
    with pytest.raises(ProtocolError, match="larger than 100"):
        feed_chunks(chunking(stream), SSEDecoder(max_event_size=100))


def test_event_limit_applies_to_one_event_not_the_stream() -> None:
    stream = b"data: " + b"a" * 90 + b"\n\n"
    assert len(feed_chunks([stream * 50], SSEDecoder(max_event_size=100))) == 50


def test_growing_event_raises_before_its_last_line_ends() -> None:
    dec = SSEDecoder(max_line_size=1000, max_event_size=100)
    dec.feed(b"data: " + b"a" * 80 + b"\n")
    with pytest.raises(ProtocolError):
        dec.feed(b"data: " + b"b" * 30)  # no line end yet


@pytest.mark.parametrize("kwargs", [{"max_line_size": 0}, {"max_event_size": 0}])
def test_limits_must_be_positive(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        SSEDecoder(**kwargs)


# --- close() and pending ---------------------------------------------------------------------


def test_close_discards_unterminated_event_and_pending_reports_it() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\n\nevent: x\ndata: b\n") == [SSEEvent("message", b"a")]
    assert dec.pending
    assert dec.close() == []
    assert dec.pending  # still tells a tap after close() that the stream was cut mid-event


def test_close_discards_unterminated_last_line() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\n\ndata: b") == [SSEEvent("message", b"a")]
    assert dec.close() == []
    assert dec.pending


def test_close_after_complete_stream_is_clean() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\n\n: trailing comment\n") == [SSEEvent("message", b"a")]
    assert not dec.pending
    assert dec.close() == []
    assert dec.close() == []


def test_feed_after_close_is_a_usage_error() -> None:
    dec = SSEDecoder()
    dec.close()
    with pytest.raises(RuntimeError):
        dec.feed(b"data: a\n\n")


@pytest.mark.parametrize(
    ("stream", "pending"),
    [
        (b"", False),
        (b"\xef", True),
        (BOM, False),
        (b"d", True),
        (b"data: a", True),
        (b"data: a\n", True),
        (b"event: a\n", True),
        (b"id: 1\n", True),
        (b"data: a\n\n", False),
        (b"data: a\r", True),
        (b"data: a\r\r", False),
        (b": comment\n", False),
        (b": comment", True),
        (b"event: a\n\n", False),
    ],
)
def test_pending_tracks_unfinished_event(stream: bytes, pending: bool) -> None:
    dec = SSEDecoder()
    dec.feed(stream)
    assert dec.pending is pending


# --- layering --------------------------------------------------------------------------------


def test_sse_module_imports_without_aiohttp_or_asyncio() -> None:
    code = (
        "import sys\n"
        "sys.modules['aiohttp'] = None\n"
        "sys.modules['asyncio'] = None\n"
        "import llmgw.wire.sse as m\n"
        "assert m.SSEDecoder().feed(b'data: x\\n\\n')[0].data == b'x'\n"
        "assert 'aiohttp' not in {n.split('.')[0] for n, v in sys.modules.items() if v}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
