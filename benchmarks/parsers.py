"""Decoder throughput for the wire codecs: `python benchmarks/parsers.py`.

Every codec decodes the same realistic Anthropic stream (see `anthropic_events`), fed both in
16 KiB chunks (a busy socket) and one event per chunk (a model trickling tokens). To add a codec,
write one more `bench_*() -> list[Result]` function and append it to `CASES`.
"""

import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ("CASES", "Result", "anthropic_events", "main", "measure")

REPEATS = 5
CHUNK_SIZE = 16 * 1024
DELTAS = 20_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    codec: str
    chunking: str
    megabytes_per_s: float
    events_per_s: float


def anthropic_events(deltas: int = DELTAS) -> list[tuple[str, bytes]]:
    """A Messages API stream as (event name, JSON body): one text block of ~100-byte deltas."""
    words = ("the", "gateway", "relays", "every", "token", "as", "soon", "as", "it", "arrives")
    usage = {"input_tokens": 12, "cache_read_input_tokens": 30000, "output_tokens": 1}
    bodies: list[dict[str, object]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_01AbC",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    for i in range(deltas):
        text = " ".join(words[(i + k) % len(words)] for k in range(16))[:96] + f" {i % 1000}\n"
        delta = {"type": "text_delta", "text": text}
        bodies.append({"type": "content_block_delta", "index": 0, "delta": delta})
    bodies += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": deltas * 25},
        },
        {"type": "message_stop"},
    ]
    return [
        (str(body["type"]), json.dumps(body, separators=(",", ":")).encode()) for body in bodies
    ]


def split_every(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def measure(
    *, codec: str, chunking: str, chunks: Sequence[bytes], decode: Callable[[Sequence[bytes]], int]
) -> Result:
    """Median of REPEATS runs; `decode` returns the number of events so the result is checked."""
    size = sum(map(len, chunks))
    times: list[float] = []
    counts: set[int] = set()
    for _ in range(REPEATS):
        start = time.perf_counter()
        counts.add(decode(chunks))
        times.append(time.perf_counter() - start)
    if len(counts) != 1:
        raise AssertionError(f"{codec}: event count varies between runs: {counts}")
    median = statistics.median(times)
    return Result(
        codec=codec,
        chunking=chunking,
        megabytes_per_s=size / median / 1e6,
        events_per_s=counts.pop() / median,
    )


def bench_sse() -> list[Result]:
    from llmgw.wire.sse import SSEDecoder, encode_event

    events = anthropic_events()
    frames = [encode_event(name, body) for name, body in events]

    def decode(chunks: Sequence[bytes]) -> int:
        decoder = SSEDecoder()
        count = 0
        for chunk in chunks:
            count += len(decoder.feed(chunk))
        decoder.close()
        if decoder.pending or count != len(events):
            raise AssertionError(f"sse: decoded {count} of {len(events)} events")
        return count

    return [
        measure(
            codec="sse",
            chunking="16 KiB chunks",
            chunks=split_every(b"".join(frames), CHUNK_SIZE),
            decode=decode,
        ),
        measure(codec="sse", chunking="1 event/chunk", chunks=frames, decode=decode),
    ]


#: Bedrock's random padding field, fixed so runs compare.
BEDROCK_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEF"


def bench_eventstream() -> list[Result]:
    """Bedrock's binary framing: ~1 KiB chunk frames (each delta's text widened 6x to match
    Bedrock's larger coalesced deltas), decoded and unwrapped to the inner event JSON."""
    from llmgw.wire.eventstream import (
        EventStreamDecoder,
        decode_bedrock_chunk,
        encode_bedrock_chunk,
    )

    events = []
    for name, body in anthropic_events():
        if name == "content_block_delta":
            parsed = json.loads(body)
            parsed["delta"]["text"] *= 6
            body = json.dumps(parsed, separators=(",", ":")).encode()
        events.append(body)
    frames = [encode_bedrock_chunk(body, padding=BEDROCK_PADDING) for body in events]

    def decode(chunks: Sequence[bytes]) -> int:
        decoder = EventStreamDecoder()
        count = 0
        for chunk in chunks:
            for message in decoder.feed(chunk):
                decode_bedrock_chunk(message)
                count += 1
        decoder.close()
        if count != len(events):
            raise AssertionError(f"eventstream: decoded {count} of {len(events)} events")
        return count

    return [
        measure(
            codec="eventstream",
            chunking="64 KiB chunks",
            chunks=split_every(b"".join(frames), 64 * 1024),
            decode=decode,
        )
    ]


def claude_code_body(size: int = 100_000) -> bytes:
    """A Messages request shaped like Claude Code's (a long system prompt, tool schemas, a
    conversation with a tool result), about ``size`` bytes."""
    prose = " ".join(f"word{i % 997}" for i in range(size // 14))
    tools = [
        {
            "name": f"Tool{i}",
            "description": prose[: size // 60],
            "input_schema": {
                "type": "object",
                "properties": {
                    f"p{j}": {"type": "string", "description": prose[:200]} for j in range(8)
                },
                "required": ["p0"],
            },
        }
        for i in range(17)
    ]
    result = {"type": "tool_result", "tool_use_id": "toolu_01", "content": prose[: size // 5]}
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 32000,
        "stream": True,
        "system": [{"type": "text", "text": prose[: size // 4]}],
        "tools": tools,
        "messages": [{"role": "user", "content": [result]}],
    }
    return json.dumps(body).encode()


def bench_request_body() -> list[Result]:
    """Parsing one request body, as every model request needs (events/s: bodies per second):
    the standard library, and llmgw's parser (orjson when ``llmgw[speedups]`` is installed)."""
    from llmgw._json import loads

    body = claude_code_body()

    def parser(parse: Callable[[bytes], object]) -> Callable[[Sequence[bytes]], int]:
        def decode(chunks: Sequence[bytes]) -> int:
            for chunk in chunks:
                parse(chunk)
            return len(chunks)

        return decode

    chunking = f"{len(body) // 1000} KB bodies"
    return [
        measure(codec=name, chunking=chunking, chunks=[body] * 200, decode=parser(parse))
        for name, parse in (("body json", json.loads), ("body llmgw", loads))
    ]


CASES: list[Callable[[], list[Result]]] = [bench_sse, bench_eventstream, bench_request_body]


def main() -> None:
    print(f"{'codec':<14} {'chunking':<16} {'MB/s':>9} {'events/s':>12}")
    for case in CASES:
        for r in case():
            print(
                f"{r.codec:<14} {r.chunking:<16} {r.megabytes_per_s:>9.1f} {r.events_per_s:>12,.0f}"
            )


if __name__ == "__main__":
    # Run from a checkout without installing: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
