"""Token usage, and the taps that read it from response bytes as they pass (the JSON tap
here, the SSE tap in :mod:`llmgw.usage_sse`, Bedrock's in :mod:`llmgw.usage_bedrock`).

A tap sees every chunk the relay writes to the client, parses a *view* of it, and never
changes, delays or holds the client's bytes. A tap that meets something it cannot parse
stops parsing and flags the usage as incomplete: the client's stream is never affected
(fail open for bytes, fail loud for accounting).
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from ._json import loads

__all__ = (
    "JSONUsageTap",
    "Outcome",
    "Usage",
    "UsageTap",
    "usage_from_message",
)

# A text_delta content_block_delta event carries 80 bytes of JSON envelope around its
# text; the rest is roughly 4 bytes a token. Only used to estimate output for streams cut
# before message_delta.
_DELTA_OVERHEAD = 80
_BYTES_PER_TOKEN = 4
#: The plain counters of a ``usage`` object, copied as they come.
_COUNTERS = frozenset(
    ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
)


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
    #: ``None`` until reported (most responses never do: one dict less per open stream).
    server_tool_use: dict[str, int] | None = None
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
        """Apply an Anthropic ``usage`` object; values are cumulative, so the last one wins.

        One pass over the keys present (a ``message_delta`` often carries one): this runs
        twice per stream, on every stream."""
        split = None
        for name, value in reported.items():
            if name in _COUNTERS:
                if isinstance(value, int):
                    setattr(self, name, value)
            elif name == "cache_creation":
                split = value
            elif name == "output_tokens_details":
                if isinstance(value, dict) and isinstance(value.get("thinking_tokens"), int):
                    self.thinking_tokens = value["thinking_tokens"]
            elif name == "server_tool_use" and isinstance(value, dict):
                self.server_tool_use = {k: v for k, v in value.items() if isinstance(v, int)}
        if isinstance(split, dict):
            self.cache_creation_5m_tokens = int(split.get("ephemeral_5m_input_tokens") or 0)
            self.cache_creation_1h_tokens = int(split.get("ephemeral_1h_input_tokens") or 0)
        elif not self.cache_creation_1h_tokens:
            # No split reported: the default cache lifetime is 5 minutes.
            creation = reported.get("cache_creation_input_tokens")
            if isinstance(creation, int):
                self.cache_creation_5m_tokens = creation


def usage_from_message(message: dict[str, Any], usage: Usage | None = None) -> Usage:
    """Usage of a whole (non-streaming) Message object."""
    usage = usage if usage is not None else Usage()
    reported = message.get("usage")
    if isinstance(reported, dict):
        usage.update(reported)
        usage.final = True
    message_id = message.get("id")
    usage.message_id = message_id if isinstance(message_id, str) else None
    model = message.get("model")
    # Interned: one string per model name, not one per open stream.
    usage.model = sys.intern(model) if isinstance(model, str) else None
    stop = message.get("stop_reason")
    usage.stop_reason = stop if isinstance(stop, str) else None
    return usage


class UsageTap(Protocol):
    """Reads usage from the bytes of one response as they pass."""

    usage: Usage

    def feed(self, chunk: bytes) -> None: ...

    def close(self) -> None: ...


class JSONUsageTap:
    """Usage from a non-streaming JSON response, read from a bounded copy of its bytes."""

    __slots__ = ("_buf", "_limit", "usage")

    def __init__(self, *, limit: int = 64 << 20, usage: Usage | None = None) -> None:
        self.usage = Usage() if usage is None else usage
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
            message = loads(self._buf)
        except ValueError as exc:
            self.usage.parse_error = f"invalid JSON: {exc}"
            return
        if isinstance(message, dict):
            usage_from_message(message, self.usage)
        self._buf = bytearray()
