"""Token usage, and the taps that read it from response bytes as they pass.

A tap sees every chunk the relay writes to the client, parses a *view* of it, and never
changes, delays or holds the client's bytes. A tap that meets something it cannot parse
stops parsing and flags the usage as incomplete: the client's stream is never affected
(fail open for bytes, fail loud for accounting).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from .log import relay_logger
from .wire import ProtocolError
from .wire.sse import SSEDecoder

__all__ = (
    "JSONUsageTap",
    "Outcome",
    "SSEUsageTap",
    "Usage",
    "UsageTap",
    "usage_from_message",
)

# A text_delta content_block_delta event carries 80 bytes of JSON envelope around its
# text; the rest is roughly 4 bytes a token. Only used to estimate output for streams cut
# before message_delta.
_DELTA_OVERHEAD = 80
_BYTES_PER_TOKEN = 4
# The SSE tap's fast path: the head of a canonical content_block_delta event, and the same
# head preceded by the blank line that ends the event before it.
_DELTA_BLOCK_START = b"event: content_block_delta\ndata: "
_DELTA_BLOCK = b"\n\n" + _DELTA_BLOCK_START
_FAST_CARRY_LIMIT = 1 << 20


class Outcome(enum.StrEnum):
    """How a proxied request ended."""

    IN_FLIGHT = "in_flight"
    COMPLETE = "complete"
    CLIENT_DISCONNECTED = "client_disconnected"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_DROPPED = "upstream_dropped"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    INCOMPLETE = "incomplete"


@dataclass(slots=True, kw_only=True)
class Usage:
    """What the provider reported (or, for a cut stream, what was seen)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cache_read_input_tokens: int = 0
    thinking_tokens: int | None = None
    server_tool_use: dict[str, int] = field(default_factory=dict)
    message_id: str | None = None
    model: str | None = None
    stop_reason: str | None = None
    #: True once the provider's final usage was seen (``message_delta`` or a whole message).
    final: bool = False
    #: True when ``output_tokens`` was estimated from the deltas of a cut stream.
    estimated: bool = False
    #: Set when the tap could not parse the response; the numbers are what was read before.
    parse_error: str | None = None
    #: ``error.type`` of an in-band error the provider sent mid-stream (``overloaded_error``).
    upstream_error: str | None = None

    @property
    def total_input_tokens(self) -> int:
        """Input as the provider bills it: uncached + cache writes + cache reads."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def update(self, reported: dict[str, Any]) -> None:
        """Apply an Anthropic ``usage`` object; values are cumulative, so the last one wins."""
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens"):
            value = reported.get(name)
            if isinstance(value, int):
                setattr(self, name, value)
        creation = reported.get("cache_creation_input_tokens")
        if isinstance(creation, int):
            self.cache_creation_input_tokens = creation
        split = reported.get("cache_creation")
        if isinstance(split, dict):
            self.cache_creation_5m_tokens = int(split.get("ephemeral_5m_input_tokens") or 0)
            self.cache_creation_1h_tokens = int(split.get("ephemeral_1h_input_tokens") or 0)
        elif isinstance(creation, int) and not self.cache_creation_1h_tokens:
            # No split reported: the default cache lifetime is 5 minutes.
            self.cache_creation_5m_tokens = creation
        details = reported.get("output_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("thinking_tokens"), int):
            self.thinking_tokens = details["thinking_tokens"]
        tools = reported.get("server_tool_use")
        if isinstance(tools, dict):
            self.server_tool_use = {k: v for k, v in tools.items() if isinstance(v, int)}


def usage_from_message(message: dict[str, Any], usage: Usage | None = None) -> Usage:
    """Usage of a whole (non-streaming) Message object."""
    usage = usage if usage is not None else Usage()
    reported = message.get("usage")
    if isinstance(reported, dict):
        usage.update(reported)
        usage.final = True
    usage.message_id = message.get("id") if isinstance(message.get("id"), str) else None
    usage.model = message.get("model") if isinstance(message.get("model"), str) else None
    stop = message.get("stop_reason")
    usage.stop_reason = stop if isinstance(stop, str) else None
    return usage


class UsageTap(Protocol):
    """Reads usage from the bytes of one response as they pass."""

    usage: Usage

    def feed(self, chunk: bytes) -> None: ...

    def close(self) -> None: ...


class SSEUsageTap:
    """Usage from an Anthropic SSE stream (Anthropic and Vertex upstreams).

    Only ``message_start``, ``message_delta`` and ``error`` are JSON-parsed; deltas are
    counted by size so a stream cut before ``message_delta`` still yields an estimate.
    """

    __slots__ = ("_carry", "_decoder", "_delta_bytes", "_failed", "_started", "error", "usage")

    def __init__(self) -> None:
        self.usage = Usage()
        self.error: dict[str, Any] | None = None
        self._decoder = SSEDecoder()
        self._delta_bytes = 0
        self._failed = False
        # The bytes after the last blank line, not fed to the decoder yet (see _feed).
        self._carry = b""
        self._started = False  # the decoder has seen the stream's first bytes (its BOM check)

    @property
    def pending(self) -> bool:
        """True when the bytes seen so far end inside an unfinished event."""
        if self._carry:
            probe = SSEDecoder()
            if self._started:
                probe.feed(b"\n")  # past the BOM check: the carry starts after a blank line
            probe.feed(self._carry)
            return probe.pending
        return self._decoder.pending

    def feed(self, chunk: bytes) -> None:
        if self._failed:
            return
        try:
            self._feed(chunk)
        except (ProtocolError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self._fail(exc)

    def _decode(self, data: bytes) -> None:
        self._started = True
        for event in self._decoder.feed(data):
            self.on_event(event.event, event.data)

    def _feed(self, chunk: bytes) -> None:
        """Feed the decoder whole events only, and skip it for runs of canonical deltas.

        The events up to the last blank line form a run. Its middle, from the first to the
        last ``event: content_block_delta\\ndata: X\\n\\n`` head, is accounted in bulk at C
        speed when it holds no other line: it would decode to deltas only, and their data
        size follows from its length and count. What is around it goes to the decoder, which
        is between events there; so does a run without that shape. Bytes with a CR, or an
        event growing past 1 MiB (the decoder's limits), go to the decoder as they come
        until it is between events again.
        """
        data = self._carry + chunk if self._carry else chunk
        self._carry = b""
        if b"\r" in data or self._decoder.pending:
            self._decode(data)
            return
        end = data.rfind(b"\n\n") + 2
        if end < 2:
            if len(data) > _FAST_CARRY_LIMIT:
                self._decode(data)
            else:
                self._carry = data
            return
        if end < len(data):
            self._carry = data[end:]
            data = data[:end]
        if len(data) > _FAST_CARRY_LIMIT:
            self._decode(data)
            return
        # A head found at index p of `framed` starts at index p of `data`.
        framed = b"\n\n" + data
        first = framed.find(_DELTA_BLOCK)
        if first < 0 or (first == 0 and not self._started):  # the decoder sees the start
            self._decode(data)
            return
        last = framed.rfind(_DELTA_BLOCK)
        stop = data.find(b"\n\n", last + len(_DELTA_BLOCK_START)) + 2
        deltas = framed.count(_DELTA_BLOCK, first, last + len(_DELTA_BLOCK))
        # Each head holds one newline and the blank line ending each block two: the middle
        # has no other line exactly when it has 3 newlines a delta.
        if data.count(b"\n", first, stop) != 3 * deltas:
            self._decode(data)
            return
        if first:
            self._decode(data[:first])
        data_bytes = stop - first - deltas * (len(_DELTA_BLOCK_START) + 2)
        self._delta_bytes += max(data_bytes - deltas * _DELTA_OVERHEAD, deltas)
        if stop < len(data):
            self._decode(data[stop:])

    def on_event(self, name: str, data: bytes) -> None:
        """Account one Anthropic event (also used by the Bedrock tap for inner events)."""
        if name == "content_block_delta":
            self._delta_bytes += max(len(data) - _DELTA_OVERHEAD, 1)
        elif name == "message_start":
            message = json.loads(data)["message"]
            usage_from_message(message, self.usage)
            self.usage.final = False
        elif name == "message_delta":
            payload = json.loads(data)
            if isinstance(payload.get("usage"), dict):
                self.usage.update(payload["usage"])
                self.usage.final = True
                self.usage.estimated = False
            stop = payload.get("delta", {}).get("stop_reason")
            if isinstance(stop, str):
                self.usage.stop_reason = stop
        elif name == "error":
            payload = json.loads(data)
            self.error = payload.get("error") if isinstance(payload, dict) else None
            kind = self.error.get("type") if isinstance(self.error, dict) else None
            self.usage.upstream_error = kind if isinstance(kind, str) else "error"

    def close(self) -> None:
        """End of stream (clean or not): estimate output if the final usage never came."""
        usage = self.usage
        if not usage.final and self._delta_bytes:
            estimate = -(-self._delta_bytes // _BYTES_PER_TOKEN)
            if estimate > usage.output_tokens:
                usage.output_tokens = estimate
                usage.estimated = True

    def _fail(self, exc: Exception) -> None:
        self._failed = True
        self.usage.parse_error = f"{type(exc).__name__}: {exc}"
        relay_logger.warning("usage tap stopped parsing: %s", self.usage.parse_error)


class JSONUsageTap:
    """Usage from a non-streaming JSON response, read from a bounded copy of its bytes."""

    __slots__ = ("_buf", "_limit", "usage")

    def __init__(self, *, limit: int = 64 << 20) -> None:
        self.usage = Usage()
        self._buf = bytearray()
        self._limit = limit

    def feed(self, chunk: bytes) -> None:
        if len(self._buf) + len(chunk) <= self._limit:
            self._buf += chunk
        else:
            self.usage.parse_error = "response larger than the tap's limit"

    def close(self) -> None:
        if self.usage.parse_error or not self._buf:
            return
        try:
            message = json.loads(self._buf)
        except ValueError as exc:
            self.usage.parse_error = f"invalid JSON: {exc}"
            return
        if isinstance(message, dict):
            usage_from_message(message, self.usage)
        self._buf = bytearray()
