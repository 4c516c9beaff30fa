"""The usage taps, fed the exact bytes an upstream sends, split every possible way."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from typing import Any

import pytest

from llmgw.demo import DemoUsage, message_events, message_json, sse_bytes
from llmgw.usage import JSONUsageTap, Usage
from llmgw.usage_sse import SSEUsageTap

MODEL = "claude-sonnet-4-6"
FULL = DemoUsage(
    input_tokens=21,
    output_tokens=345,
    cache_creation_5m=1000,
    cache_creation_1h=2000,
    cache_read=4000,
)


def _assert_full(usage: Usage) -> None:
    assert usage.input_tokens == 21
    assert usage.output_tokens == 345
    assert usage.cache_creation_input_tokens == 3000
    assert usage.cache_creation_5m_tokens == 1000
    assert usage.cache_creation_1h_tokens == 2000
    assert usage.cache_read_input_tokens == 4000
    assert usage.total_input_tokens == 21 + 3000 + 4000
    assert usage.final is True
    assert usage.estimated is False
    assert usage.parse_error is None


def _stream(**kwargs: Any) -> bytes:
    return sse_bytes(message_events(model=MODEL, **kwargs))


def test_sse_tap_reads_every_token_class_at_every_split_offset() -> None:
    data = _stream(text="one two three four", thinking="hmm", usage=FULL, message_id="msg_01X")
    for cut in range(len(data) + 1):
        tap = SSEUsageTap()
        tap.feed(data[:cut])
        tap.feed(data[cut:])
        tap.close()
        _assert_full(tap.usage)
        assert tap.usage.message_id == "msg_01X"
        assert tap.usage.model == MODEL
        assert tap.usage.stop_reason == "end_turn"


def test_sse_tap_reads_usage_fed_one_byte_at_a_time_with_crlf_line_ends() -> None:
    data = _stream(text="hi", usage=FULL).replace(b"\n", b"\r\n")
    tap = SSEUsageTap()
    for i in range(len(data)):
        tap.feed(data[i : i + 1])
    tap.close()
    _assert_full(tap.usage)


def test_json_tap_reads_every_token_class_at_every_split_offset() -> None:
    body = json.dumps(message_json(model=MODEL, text="hello", usage=FULL)).encode()
    for cut in range(0, len(body) + 1, 7):
        tap = JSONUsageTap()
        tap.feed(body[:cut])
        tap.feed(body[cut:])
        tap.close()
        _assert_full(tap.usage)
        assert tap.usage.stop_reason == "end_turn"


def test_message_delta_usage_is_cumulative_so_the_last_one_wins() -> None:
    start = message_events(model=MODEL, usage=DemoUsage(input_tokens=5))[0]
    deltas = [
        ("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": n}})
        for n in (10, 30, 70)
    ]
    tap = SSEUsageTap()
    tap.feed(sse_bytes([start, *deltas]))
    tap.close()
    assert tap.usage.output_tokens == 70
    assert tap.usage.input_tokens == 5


def test_message_start_output_placeholder_is_replaced_by_message_delta() -> None:
    tap = SSEUsageTap()
    events = message_events(model=MODEL, usage=DemoUsage(output_tokens=99))
    tap.feed(sse_bytes(events[:1]))
    assert tap.usage.output_tokens == 1  # the API's placeholder in message_start
    assert tap.usage.final is False
    tap.feed(sse_bytes(events[1:]))
    tap.close()
    assert tap.usage.output_tokens == 99
    assert tap.usage.final is True


def test_cache_creation_without_split_counts_as_five_minute_writes() -> None:
    message = message_json(model=MODEL)
    message["usage"] = {"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 500}
    tap = JSONUsageTap()
    tap.feed(json.dumps(message).encode())
    tap.close()
    assert tap.usage.cache_creation_input_tokens == 500
    assert tap.usage.cache_creation_5m_tokens == 500
    assert tap.usage.cache_creation_1h_tokens == 0


def test_stream_cut_before_message_delta_keeps_input_and_estimates_output() -> None:
    events = message_events(model=MODEL, text="word " * 200, usage=FULL)
    cut = next(i for i, (name, _) in enumerate(events) if name == "message_delta")
    tap = SSEUsageTap()
    tap.feed(sse_bytes(events[:cut]))
    tap.close()
    usage = tap.usage
    assert usage.input_tokens == 21
    assert usage.cache_creation_5m_tokens == 1000
    assert usage.cache_creation_1h_tokens == 2000
    assert usage.cache_read_input_tokens == 4000
    assert usage.final is False
    assert usage.estimated is True
    # ~1000 characters of text is ~250 tokens; an estimate within 2x either way is the contract.
    assert 125 <= usage.output_tokens <= 500


def _long_stream(words: int, **kwargs: Any) -> tuple[list[Any], bytes]:
    text = "the gateway relays every token as soon as it arrives, " * (words // 10)
    events = message_events(model=MODEL, text=text, usage=FULL, **kwargs)
    return events, sse_bytes(events)


@pytest.mark.parametrize("chunk", [7, 1000, 65536])
def test_sse_tap_reads_the_final_usage_of_a_stream_far_longer_than_its_tail(chunk: int) -> None:
    _, data = _long_stream(40_000)  # ~300 KB: most of it is skimmed, never decoded
    assert len(data) > 4 * 65536
    tap = SSEUsageTap()
    for i in range(0, len(data), chunk):
        tap.feed(data[i : i + chunk])
    tap.close()
    _assert_full(tap.usage)


@pytest.mark.parametrize("chunk", [1000, 65536])
def test_long_stream_cut_before_message_delta_is_estimated_from_its_skimmed_deltas(
    chunk: int,
) -> None:
    events, _ = _long_stream(40_000)
    cut = next(i for i, (name, _) in enumerate(events) if name == "message_delta")
    data = sse_bytes(events[:cut])
    text = sum(len(body["delta"]["text"]) for name, body in events if name == "content_block_delta")
    tap = SSEUsageTap()
    for i in range(0, len(data), chunk):
        tap.feed(data[i : i + chunk])
    tap.close()
    assert tap.usage.final is False and tap.usage.estimated is True
    assert tap.usage.input_tokens == 21
    # ~4 bytes a token; the estimate is within 2x either way.
    assert text / 8 <= tap.usage.output_tokens <= text / 2


def test_text_that_quotes_sse_framing_does_not_fool_the_tap() -> None:
    fake = 'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\n\n'
    data = _stream(text=fake * 3, usage=FULL)
    assert b"event: message_delta" in data.split(b"event: content_block_stop")[0]
    tap = SSEUsageTap()
    tap.feed(data)
    tap.close()
    _assert_full(tap.usage)


def test_a_stream_that_does_not_start_with_message_start_is_decoded_event_by_event() -> None:
    data = b'event: ping\ndata: {"type": "ping"}\n\n' + _stream(text="hi", usage=FULL)
    for cut in range(0, len(data), 13):
        tap = SSEUsageTap()
        tap.feed(data[:cut])
        tap.feed(data[cut:])
        tap.close()
        _assert_full(tap.usage)


def test_garbage_bytes_flag_parse_error_and_later_feeds_are_ignored() -> None:
    tap = SSEUsageTap()
    tap.feed(b"event: message_start\ndata: {not json\n\n")
    assert tap.usage.parse_error is not None
    tap.feed(_stream(usage=FULL))  # ignored: parsing stopped at the first failure
    tap.close()
    assert tap.usage.input_tokens == 0
    assert tap.usage.final is False


def test_non_utf8_garbage_never_raises_out_of_the_tap() -> None:
    tap = SSEUsageTap()
    tap.feed(b"\xff\xfe\x00garbage\n\nevent: message_delta\ndata: \xff\n\n")
    tap.close()
    assert tap.usage.parse_error is not None


def test_in_band_error_event_is_recorded() -> None:
    tap = SSEUsageTap()
    start = message_events(model=MODEL)[0]
    error = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}})
    tap.feed(sse_bytes([start, error]))
    tap.close()
    assert tap.error == {"type": "overloaded_error", "message": "x"}


@pytest.mark.parametrize(
    "after_delta",
    [
        [],  # no message_stop at all
        [("message_stop", {"type": "message_stop", "amazon-bedrock-invocationMetrics": {}})],
        [("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}})],
        [("ping", {"type": "ping"}), ("message_stop", {"type": "message_stop"})],
    ],
    ids=["delta-last", "stop-with-extras", "error-after-delta", "ping-then-stop"],
)
def test_final_usage_is_read_whatever_follows_message_delta(
    after_delta: list[tuple[str, dict[str, Any]]],
) -> None:
    events = message_events(model=MODEL, text="x" * 6000, usage=FULL)
    assert events[-1][0] == "message_stop" and events[-2][0] == "message_delta"
    tap = SSEUsageTap()
    tap.feed(sse_bytes([*events[:-1], *after_delta]))
    tap.close()
    _assert_full(tap.usage)
    if after_delta and after_delta[0][0] == "error":
        assert tap.error == {"type": "overloaded_error", "message": "x"}


@pytest.mark.parametrize("split", [1, 9, 50])
def test_pending_is_true_only_inside_an_unfinished_event(split: int) -> None:
    data = _stream(text="abc")
    tap = SSEUsageTap()
    first_event_end = data.index(b"\n\n") + 2
    tap.feed(data[:first_event_end])
    assert tap.pending is False
    tap.feed(data[first_event_end : first_event_end + split])
    assert tap.pending is True


def test_json_tap_over_its_limit_flags_instead_of_buffering() -> None:
    tap = JSONUsageTap(limit=100)
    tap.feed(json.dumps(message_json(model=MODEL, text="x" * 500)).encode())
    tap.close()
    assert tap.usage.parse_error == "response larger than the tap's limit"
    assert tap.usage.final is False


def test_json_tap_invalid_json_flags_parse_error() -> None:
    tap = JSONUsageTap()
    tap.feed(b'{"usage": {"input_tokens": 1')
    tap.close()
    assert tap.usage.parse_error is not None
    assert tap.usage.input_tokens == 0


class DecodingTap(SSEUsageTap):
    """The reference: every event through the decoder (the path of non-canonical streams)."""

    def __init__(self) -> None:
        super().__init__()
        self._mode = 2  # usage_sse._DECODE


def _random_stream(rng: random.Random) -> bytes:
    def text(n: int) -> str:
        alphabet = 'ab c\n"\\é✓\r\t{}' if rng.random() < 0.3 else "abcdefgh "
        return "".join(rng.choice(alphabet) for _ in range(n))

    usage = DemoUsage(
        input_tokens=rng.randint(1, 999),
        output_tokens=rng.randint(1, 9999),
        cache_creation_5m=rng.choice((0, 100)),
        cache_creation_1h=rng.choice((0, 2000)),
        cache_read=rng.choice((0, 30000)),
    )
    events = message_events(
        model=MODEL,
        text=text(rng.choice((0, 5, 300, 5000, 60000))),
        thinking=text(200) if rng.random() < 0.3 else None,
        tool_use=("Read", {"path": text(50)}) if rng.random() < 0.3 else None,
        usage=usage,
    )
    if rng.random() < 0.2:  # pings between events, as the API sends them
        for _ in range(3):
            events.insert(rng.randint(1, len(events) - 1), ("ping", {"type": "ping"}))
    if rng.random() < 0.1:  # an in-band error ends the stream early
        cut = rng.randint(1, len(events) - 1)
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}
        events = [*events[:cut], ("error", error)]
    data = sse_bytes(events)
    if rng.random() < 0.3:  # cut anywhere, even inside an event
        data = data[: rng.randint(1, len(data))]
    return data


def _chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        if rng.random() < 0.5:  # whole events, a few at a time, as a trickling stream reads
            end = data.find(b"\n\n", pos + rng.randint(0, 2000))
            size = (end + 2 - pos) if end >= 0 else len(data) - pos
        else:
            size = rng.choice((1, 7, 100, 1000, 4096, 20000, 65536, 200000))
        out.append(data[pos : pos + size])
        pos += size
    return out


@pytest.mark.parametrize("seed", range(4))
def test_skimming_tap_reads_what_the_decoding_tap_reads_on_random_streams(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        data = _random_stream(rng)
        tap, reference = SSEUsageTap(), DecodingTap()
        for chunk in _chunks(data, rng):
            tap.feed(chunk)
            reference.feed(chunk)
            assert tap.pending == reference.pending
        tap.close()
        reference.close()
        got, want = asdict(tap.usage), asdict(reference.usage)
        assert tap.error == reference.error
        if want["final"] or not want["estimated"]:
            assert got == want  # what the provider reported: exactly
        else:  # cut before message_delta: the same counts, output estimated within 2x
            assert got["estimated"]
            assert want["output_tokens"] / 2 <= got["output_tokens"] <= want["output_tokens"] * 2
            for field in ("output_tokens", "estimated"):
                del got[field], want[field]
            assert got == want


def test_a_stream_read_one_event_at_a_time_is_sized_as_the_decoder_sizes_it() -> None:
    # How a trickling stream arrives: every content delta a chunk of its own.
    events, _ = _long_stream(2_000)
    cut = next(i for i, (name, _) in enumerate(events) if name == "message_delta")
    data = sse_bytes(events[:cut])
    tap, reference = SSEUsageTap(), DecodingTap()
    for block in data.split(b"\n\n")[:-1]:
        tap.feed(block + b"\n\n")
        reference.feed(block + b"\n\n")
    tap.close()
    reference.close()
    assert tap.usage.estimated is True and tap.usage.output_tokens > 100
    assert asdict(tap.usage) == asdict(reference.usage)


def test_a_cr_inside_what_starts_as_a_content_delta_is_read_as_the_decoder_reads_it() -> None:
    # A lone CR ends a line: the chunk's last line renames the event it belongs to.
    head = sse_bytes(message_events(model=MODEL, text="", usage=FULL)[:1])
    odd = b"event: content_block_delta\ndata: {}\revent: error\n\n"
    tap, reference = SSEUsageTap(), DecodingTap()
    for chunk in (head, odd):
        tap.feed(chunk)
        reference.feed(chunk)
    tap.close()
    reference.close()
    assert reference.usage.upstream_error == "error"
    assert asdict(tap.usage) == asdict(reference.usage)
