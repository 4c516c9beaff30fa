"""The Bedrock fast paths (delta frames counted by size in the tap, chunks decoded without a
message object for translation) against the full decoder, on random Bedrock-shaped streams:
random splits, padding, other payload layouts, exceptions, broken JSON, cut streams."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import asdict
from typing import Any

import pytest

from llmgw._translate_errors import anthropic_error_type
from llmgw._translate_stream import EventStreamToSSE
from llmgw.usage import Usage
from llmgw.usage_bedrock import (
    METRICS_KEY,
    BedrockUsageTap,
    apply_invocation_metrics,
    event_type,
    exception_info,
)
from llmgw.usage_sse import SSEUsageTap
from llmgw.wire import (
    EventStreamDecoder,
    EventStreamMessage,
    ProtocolError,
    SSEDecoder,
    decode_bedrock_chunk,
    encode_bedrock_chunk,
    encode_bedrock_exception,
    encode_message,
)

PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
CHUNK_HEADERS = {
    ":event-type": "chunk",
    ":content-type": "application/json",
    ":message-type": "event",
}
PING = base64.b64encode(b'{"type":"ping"}').decode()
# json.loads reads these like the compact layout, or (the last two) differently: all must take
# the full path.
LAYOUTS = (
    '{"p":"abc","bytes":"%s"}',
    '{ "bytes" : "%s" }',
    '{"bytes":"%s","p":"a\\"b"}',
    '{"bytes":"%s","extra":1}',
    '{"bytes":"%s","p":""}',
    '{"bytes":"%s","p":"x","bytes":"' + PING + '"}',
    '{"bytes":"%s","p":"x\x01"}',
)


class ReferenceTap:
    """Every frame through the full decoder: what the Bedrock tap did before its fast path."""

    def __init__(self) -> None:
        self.events = SSEUsageTap()
        self.usage = self.events.usage
        self.error: dict[str, Any] | None = None
        self.decoder = EventStreamDecoder()
        self.failed = False

    def feed(self, chunk: bytes) -> None:
        if self.failed:
            return
        try:
            for message in self.decoder.feed(chunk):
                self.on_message(message)
        except (ProtocolError, ValueError) as exc:
            self.failed = True
            self.usage.parse_error = f"{type(exc).__name__}: {exc}"

    def on_message(self, message: EventStreamMessage) -> None:
        if message.message_type == "event" and message.event_type == "chunk":
            inner = decode_bedrock_chunk(message)
            name = event_type(inner)
            if name == "message_stop":
                metrics = json.loads(inner).get(METRICS_KEY)
                if isinstance(metrics, dict):
                    apply_invocation_metrics(self.usage, metrics)
            else:
                self.events.on_event(name, inner)
        elif message.message_type in ("exception", "error"):
            self.error = exception_info(message)
            self.usage.upstream_error = anthropic_error_type(self.error["type"])


def _text(rng: random.Random) -> str:
    alphabet = 'ab c\n"\\/é✓\x01' if rng.random() < 0.3 else "abcdefgh "
    size = rng.choice((0, 1, 2, 5, 20, 80, 300))
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, size)))


def _json(value: dict[str, Any], rng: random.Random) -> bytes:
    if rng.random() < 0.1:  # not compact, newlines included
        return json.dumps(value, indent=rng.choice((None, 1))).encode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=rng.random() < 0.5).encode()


def _frame(inner: bytes, rng: random.Random, *, odd_layouts: bool) -> bytes:
    roll = rng.random()
    if roll < 0.6:
        return encode_bedrock_chunk(inner, padding=PAD[: rng.randint(0, len(PAD))])
    if roll < 0.9 or not odd_layouts:
        return encode_bedrock_chunk(inner)
    encoded = base64.b64encode(inner).decode()
    if "/" in encoded and rng.random() < 0.3:
        layout = '{"bytes":"' + encoded.replace("/", "\\/") + '"}'
    else:
        layout = rng.choice(LAYOUTS) % encoded
    return encode_message(CHUNK_HEADERS, layout.encode())


def _events(rng: random.Random, *, broken: bool) -> list[bytes]:
    usage = {"input_tokens": rng.randint(1, 99), "output_tokens": 1, "cache_read_input_tokens": 3}
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "x", "usage": usage}}
    events = [_json(start, rng)]
    if broken and rng.random() < 0.1:
        events[0] = b'{"type":"message_start","message":'
    events.append(_json({"type": "content_block_start", "index": 0}, rng))
    for _ in range(rng.randint(0, 40)):
        kind, field = rng.choice(
            (
                ("text_delta", "text"),
                ("input_json_delta", "partial_json"),
                ("thinking_delta", "thinking"),
            )
        )
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": kind, field: _text(rng)},
        }
        events.append(_json(delta, rng))
    events.append(_json({"type": "content_block_stop", "index": 0}, rng))
    if rng.random() < 0.8:
        final = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
        events.append(_json({**final, "usage": {"output_tokens": rng.randint(1, 999)}}, rng))
    stop: dict[str, Any] = {"type": "message_stop"}
    if rng.random() < 0.5:
        stop[METRICS_KEY] = {"inputTokenCount": 7, "outputTokenCount": rng.randint(1, 99)}
    events.append(_json(stop, rng))
    return events


def _stream(rng: random.Random, *, broken: bool) -> bytes:
    frames = [_frame(event, rng, odd_layouts=broken) for event in _events(rng, broken=broken)]
    extras = [encode_bedrock_exception("throttlingException", "slow down")]
    if broken:
        extras += [
            encode_message({":message-type": "error", ":error-code": "Boom"}, b""),
            encode_message({":message-type": "event", ":event-type": "other"}, b"\x00"),
            encode_message(CHUNK_HEADERS, b'{"bytes":"e$J9"}'),
        ]
    for extra in extras:
        if rng.random() < 0.1:
            frames.insert(rng.randint(0, len(frames)), extra)
    data = b"".join(frames)
    if rng.random() < 0.3:
        data = data[: rng.randint(0, len(data))]
    return data


def _split(
    data: bytes, rng: random.Random, sizes: tuple[int, ...] = (1, 7, 100, 500, 4096, 65536)
) -> list[bytes]:
    chunks = []
    pos = 0
    while pos < len(data):
        size = rng.choice(sizes)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def _state(usage: Usage, error: dict[str, Any] | None) -> tuple[dict[str, Any], Any]:
    return asdict(usage), error


@pytest.mark.parametrize("seed", range(4))
def test_tap_accounts_exactly_like_the_full_decoder_on_random_streams(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        # Reads no larger than _SMALL: every frame is walked (big ones are skimmed, below).
        chunks = _split(_stream(rng, broken=True), rng, sizes=(1, 7, 100, 500, 4096))
        tap, reference = BedrockUsageTap(), ReferenceTap()
        for chunk in chunks:
            tap.feed(chunk)
            reference.feed(chunk)
        if reference.usage.parse_error is None:
            assert tap.pending == reference.decoder.pending
        tap.close()
        reference.events.close()
        assert _state(tap.usage, tap.error) == _state(reference.usage, reference.error)


def _by_frame(data: bytes) -> list[bytes]:
    """``data`` read one whole frame at a time (a trickling stream's reads), any cut-off
    rest last."""
    chunks, pos = [], 0
    while len(data) - pos >= 12:
        end = pos + int.from_bytes(data[pos : pos + 4], "big")
        if end > len(data) or end < pos + 16:
            break
        chunks.append(data[pos:end])
        pos = end
    return chunks + ([data[pos:]] if pos < len(data) else [])


@pytest.mark.parametrize("seed", range(4))
def test_a_stream_read_one_frame_at_a_time_is_accounted_like_the_full_decoder(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        tap, reference = BedrockUsageTap(), ReferenceTap()
        for chunk in _by_frame(_stream(rng, broken=True)):
            tap.feed(chunk)
            reference.feed(chunk)
        tap.close()
        reference.events.close()
        assert _state(tap.usage, tap.error) == _state(reference.usage, reference.error)


def _well_formed(data: bytes) -> bytes:
    """``data`` without the frames the full decoder refuses or reports (corrupt payloads,
    exceptions, errors, other event types): what a stream's usage is read from when those
    lie in a skimmed middle."""
    kept, pos = [], 0
    while len(data) - pos >= 12:
        end = pos + int.from_bytes(data[pos : pos + 4], "big")
        if end > len(data):
            break
        try:
            [message] = EventStreamDecoder().feed(data[pos:end])
            json.loads(decode_bedrock_chunk(message))
        except (ProtocolError, ValueError):
            pass
        else:
            kept.append(data[pos:end])
        pos = end
    return b"".join(kept) + data[pos:]


@pytest.mark.parametrize("seed", range(4))
def test_a_stream_read_in_big_chunks_is_skimmed_to_its_final_usage(seed: int) -> None:
    rng = random.Random(seed)
    skipped = 0
    for _ in range(150):
        data = _stream(rng, broken=True)
        tap, reference = BedrockUsageTap(), ReferenceTap()
        for chunk in _split(data, rng, sizes=(65536,)):
            tap.feed(chunk)
            reference.feed(chunk)
        tap.close()
        reference.events.close()
        got, want = _state(tap.usage, tap.error), _state(reference.usage, reference.error)
        if got == want:
            continue
        # The full decoder stopped at (or reported) a frame in the middle that the tap
        # skimmed past to the final usage: the counts are the well-formed frames' ones,
        # and what that middle frame would have reported goes unseen (as in the SSE tap).
        skipped += 1
        assert tap.usage.final
        if tap.usage.parse_error is not None:
            continue  # a bad frame after the final usage, where every frame is read: it stops
        clean = ReferenceTap()
        clean.feed(_well_formed(data))
        clean.events.close()
        got_usage, clean_usage = asdict(tap.usage), asdict(clean.usage)
        for unseen in ("parse_error", "upstream_error"):
            del got_usage[unseen], clean_usage[unseen]
        assert got_usage == clean_usage
    assert skipped > 5  # the case is exercised


def test_random_streams_exercise_estimates_errors_and_cuts() -> None:
    rng = random.Random(0)
    taps = []
    for _ in range(150):
        tap = BedrockUsageTap()
        for chunk in _split(_stream(rng, broken=True), rng):
            tap.feed(chunk)
        tap.close()
        taps.append(tap)
    assert sum(t.usage.estimated for t in taps) > 20
    assert sum(t.usage.final for t in taps) > 20
    assert sum(t.usage.parse_error is not None for t in taps) > 5
    assert sum(t.error is not None for t in taps) > 5
    assert sum(t.pending for t in taps) > 20


@pytest.mark.parametrize("seed", range(3))
def test_feed_chunks_yields_what_feed_and_decode_bedrock_chunk_yield(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        chunks = _split(_stream(rng, broken=True), rng)
        fast, full = EventStreamDecoder(), EventStreamDecoder()
        got: list[bytes | EventStreamMessage] = []
        want: list[EventStreamMessage] = []
        for chunk in chunks:
            got += fast.feed_chunks(chunk)
            want += full.feed(chunk)
        assert len(got) == len(want)
        for item, message in zip(got, want, strict=True):
            if isinstance(item, bytes):
                assert item == decode_bedrock_chunk(message)
            else:
                assert item == message
        assert fast.pending == full.pending


def _sse_events(data: bytes) -> list[tuple[str, Any]]:
    return [(event.event, json.loads(event.data)) for event in SSEDecoder().feed(data)]


@pytest.mark.parametrize("seed", range(3))
def test_translation_carries_every_inner_event_and_the_full_decoders_usage(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        data = _stream(rng, broken=False)
        adapter = EventStreamToSSE(model="claude-requested", ping_interval=None)
        out = b"".join(adapter.feed(chunk) for chunk in _split(data, rng))
        adapter.close()
        # What the full decoder reads, up to the exception that ends a translated stream.
        reference = ReferenceTap()
        want: list[tuple[str, Any]] = []
        for message in EventStreamDecoder().feed(data):
            reference.on_message(message)
            if message.message_type == "exception":
                error = {
                    "type": anthropic_error_type(str(message.exception_type)),
                    "message": "slow down",
                }
                want.append(("error", {"type": "error", "error": error}))
                break
            event = json.loads(decode_bedrock_chunk(message))
            if event["type"] == "message_start":
                event["message"]["model"] = "claude-requested"
                reference.usage.model = "claude-requested"
            event.pop(METRICS_KEY, None)
            want.append((event["type"], event))
        reference.events.close()
        assert _state(adapter.usage, adapter._tap.error) == _state(reference.usage, reference.error)
        assert _sse_events(out) == want


def test_translation_refuses_a_delta_frame_with_a_corrupt_payload() -> None:
    frame = bytearray(
        encode_bedrock_chunk(b'{"type":"content_block_delta","index":0}', padding="ab")
    )
    frame[-7] ^= 0x01  # in the padding: still valid JSON, only the CRC can tell
    adapter = EventStreamToSSE(model=None, ping_interval=None)
    [(name, body)] = _sse_events(adapter.feed(bytes(frame)))
    assert (name, body["error"]["type"]) == ("error", "api_error")
    assert adapter.usage.parse_error == "ProtocolError: message CRC mismatch"


def test_delta_frame_fed_one_byte_at_a_time_is_counted_once() -> None:
    inner = (
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'
        + b"x" * 400
    )
    frame = encode_bedrock_chunk(inner + b'"}}', padding="abcdef")
    tap = BedrockUsageTap()
    for i in range(len(frame)):
        tap.feed(frame[i : i + 1])
        assert tap.pending == (i + 1 < len(frame))
    tap.close()
    assert tap.usage.estimated
    assert tap.usage.output_tokens == -(-(len(inner) + 3 - 80) // 4)


def test_escaped_slash_and_duplicate_bytes_key_take_the_full_path() -> None:
    inner = (
        b'{"type":"content_block_delta","index":0,"delta":{"text":"\xff\xff\xff'
        + b"y" * 200
        + b'"}}'
    )
    encoded = base64.b64encode(inner).decode()
    assert "/" in encoded
    escaped = encode_message(
        CHUNK_HEADERS, b'{"bytes":"%s"}' % encoded.replace("/", "\\/").encode()
    )
    duplicate = encode_message(CHUNK_HEADERS, (LAYOUTS[5] % encoded).encode())
    for frame, counted in ((escaped, len(inner) - 80), (duplicate, 0)):
        tap = BedrockUsageTap()
        tap.feed(frame)
        tap.close()
        assert tap.usage.output_tokens == -(-counted // 4)
        assert tap.usage.parse_error is None


def test_tap_keeps_following_frames_after_a_parse_error() -> None:
    bad = encode_bedrock_chunk(b'{"type":"message_start","message":')
    delta = encode_bedrock_chunk(b'{"type":"content_block_delta","index":0}', padding="abc")
    tap = BedrockUsageTap()
    pending = []
    for chunk in (bad + delta[:20], delta[20:], delta[:-1]):
        tap.feed(chunk)
        pending.append(tap.pending)
    assert tap.usage.parse_error is not None
    assert pending == [True, False, True]


def test_nonsense_length_flags_the_tap_and_never_raises() -> None:
    tap = BedrockUsageTap()
    tap.feed(b"\xff" * 12 + b"rest")
    tap.feed(encode_bedrock_chunk(b'{"type":"message_stop"}'))
    tap.close()
    assert tap.usage.parse_error == "ProtocolError: prelude CRC mismatch"
    assert tap.pending  # where the frames are is unknown: nothing may be appended


def _long_stream(rng: random.Random, deltas: int) -> tuple[bytes, list[int]]:
    """A well-formed stream of ``deltas`` content deltas, with the final usage and the
    invocation metrics; also every frame's end offset."""
    usage = {"input_tokens": 21, "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "m", "model": "x", "usage": usage}}
    ]
    events += [
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "x" * 90},
        }
    ] * deltas
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 777},
        }
    )
    events.append(
        {"type": "message_stop", METRICS_KEY: {"inputTokenCount": 21, "outputTokenCount": 778}}
    )
    frames = [_frame(_json(e, rng), rng, odd_layouts=False) for e in events]
    ends, pos = [], 0
    for frame in frames:
        pos += len(frame)
        ends.append(pos)
    return b"".join(frames), ends


def _fed(data: bytes, size: int) -> tuple[BedrockUsageTap, ReferenceTap]:
    tap, reference = BedrockUsageTap(), ReferenceTap()
    for pos in range(0, len(data), size):
        tap.feed(data[pos : pos + size])
        reference.feed(data[pos : pos + size])
    return tap, reference


@pytest.mark.parametrize("size", [1000, 4097, 65536])
def test_a_long_stream_skimmed_in_big_chunks_reads_the_exact_final_usage(size: int) -> None:
    data, _ = _long_stream(random.Random(size), 3000)  # ~700 KB: far more than the tail kept
    tap, reference = _fed(data, size)

    assert not tap.pending
    tap.close()
    reference.events.close()
    assert _state(tap.usage, tap.error) == _state(reference.usage, reference.error)
    assert (tap.usage.input_tokens, tap.usage.output_tokens) == (21, 778)


@pytest.mark.parametrize("seed", range(3))
def test_a_long_stream_cut_while_skimming_knows_where_it_was_cut(seed: int) -> None:
    rng = random.Random(seed)
    data, ends = _long_stream(rng, 3000)
    at_boundary = ends[rng.randrange(1000, 2900)]
    inside = at_boundary - rng.randint(1, 100)
    for cut in (at_boundary, inside):
        tap, reference = _fed(data[:cut], 65536)

        assert tap.pending == reference.decoder.pending == (cut == inside)
        tap.close()
        reference.events.close()
        # Deltas sized on the tail, scaled to the skimmed bytes: an estimate, within 10 %.
        assert tap.usage.estimated and reference.usage.estimated
        assert abs(tap.usage.output_tokens / reference.usage.output_tokens - 1) < 0.1
