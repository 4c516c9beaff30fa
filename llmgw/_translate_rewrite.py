"""Same-format responses with one change: the response ``model`` set to what the client
asked for (a route mapped it to another id), or a JSON body reshaped (count-tokens).

Claude Code drops thinking blocks from the next turn when the response ``model`` differs
from the requested one, so this rewrite is not cosmetic. Streams hold back only their
first event; JSON needs the whole (bounded) document.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from ._translate_errors import bedrock_exception_type
from ._translate_request import dumps
from ._translate_stream import EVENTSTREAM, sse_error, with_model
from .usage import JSONUsageTap, Usage
from .usage_bedrock import BedrockUsageTap, event_type
from .usage_sse import SSEUsageTap
from .wire import (
    EventStreamDecoder,
    ProtocolError,
    SSEDecoder,
    decode_bedrock_chunk,
    encode_bedrock_chunk,
    encode_bedrock_exception,
    encode_event,
)

__all__ = (
    "EventStreamModelRewrite",
    "JSONTransform",
    "SSEModelRewrite",
    "rename_key",
    "set_model",
)

# Largest prefix held back while looking for the first event / frame to rewrite.
_MAX_HEAD = 1 << 20


class _FirstEventRewrite:
    """A same-format stream passed through, except its first event's ``message.model``.

    Only the bytes up to the end of the first event are held and re-encoded; everything
    after is written as it arrives. The tap reads the upstream's original bytes. A stream
    whose first event never ends within ``_MAX_HEAD`` bytes is released unchanged.
    """

    __slots__ = ("_head", "_model", "_tap", "content_type", "ping_interval")

    _tap: SSEUsageTap | BedrockUsageTap

    def __init__(self, *, model: str, content_type: str) -> None:
        self.content_type: str | None = content_type
        self.ping_interval: float | None = None
        self._model = model
        self._head: bytearray | None = bytearray()

    @property
    def usage(self) -> Usage:
        return self._tap.usage

    def _first_end(self, head: bytearray) -> int:
        """Offset just past the first event in ``head``, or -1 while it is incomplete."""
        raise NotImplementedError

    def _rewrite(self, first: bytes) -> bytes:
        """The first event with the requested model (raises ``ProtocolError``/``ValueError``
        when it is not a ``message_start`` it understands)."""
        raise NotImplementedError

    def _error_event(self, error_type: str, message: str) -> bytes:
        raise NotImplementedError

    def feed(self, chunk: bytes) -> bytes:
        self._tap.feed(chunk)
        head = self._head
        if head is None:
            return chunk
        head += chunk
        end = self._first_end(head)
        if end < 0:
            if len(head) <= _MAX_HEAD:
                return b""
            self._head = None  # not a stream we understand: stop holding bytes
            return bytes(head)
        first, rest = bytes(head[:end]), bytes(head[end:])
        self._head = None
        with contextlib.suppress(ProtocolError, ValueError, AttributeError):
            first = self._rewrite(first)
        return first + rest

    def close(self) -> bytes:
        self._tap.close()
        head, self._head = self._head, None
        return bytes(head) if head else b""

    def error(self, error_type: str, message: str) -> bytes:
        held = self.close()
        if self._tap.pending:  # cut inside an event: appending would corrupt it
            return held
        return held + self._error_event(error_type, message)

    def ping(self) -> bytes:
        return b""


class SSEModelRewrite(_FirstEventRewrite):
    """Anthropic SSE with the first event's ``message.model`` rewritten."""

    __slots__ = ()

    def __init__(self, *, model: str, content_type: str) -> None:
        super().__init__(model=model, content_type=content_type)
        self._tap = SSEUsageTap()

    def _first_end(self, head: bytearray) -> int:
        ends = [
            found + len(sep)
            for sep in (b"\n\n", b"\r\n\r\n", b"\r\r")
            if (found := head.find(sep)) >= 0
        ]
        return min(ends) if ends else -1

    def _rewrite(self, first: bytes) -> bytes:
        events = SSEDecoder().feed(first)
        if len(events) == 1 and events[0].event == "message_start":
            return encode_event("message_start", with_model(events[0].data, self._model))
        return first

    def _error_event(self, error_type: str, message: str) -> bytes:
        return sse_error(error_type, message)


class EventStreamModelRewrite(_FirstEventRewrite):
    """A Bedrock event stream with the first frame's ``message.model`` rewritten."""

    __slots__ = ()

    def __init__(self, *, model: str) -> None:
        super().__init__(model=model, content_type=EVENTSTREAM)
        self._tap = BedrockUsageTap()

    def _first_end(self, head: bytearray) -> int:
        if len(head) < 4:
            return -1
        size = int.from_bytes(head[:4], "big")
        return size if len(head) >= size else -1

    def _rewrite(self, first: bytes) -> bytes:
        (message,) = EventStreamDecoder().feed(first)
        inner = decode_bedrock_chunk(message)
        if event_type(inner) == "message_start":
            return encode_bedrock_chunk(with_model(inner, self._model))
        return first

    def _error_event(self, error_type: str, message: str) -> bytes:
        return encode_bedrock_exception(bedrock_exception_type(error_type), message)


class JSONTransform:
    """A whole JSON response, transformed at the end (model rewrite, count-tokens shape).

    Non-streaming answers are one JSON document, so rewriting one needs all of it; the
    original bytes go out unchanged if they are not the JSON expected.
    """

    __slots__ = ("_buf", "_limit", "_tap", "_transform", "content_type", "ping_interval")

    def __init__(
        self,
        transform: Callable[[Any], Any],
        *,
        tap: JSONUsageTap | None,
        limit: int = 64 << 20,
    ) -> None:
        self.content_type: str | None = "application/json"
        self.ping_interval: float | None = None
        self._transform = transform
        self._tap = tap
        self._buf = bytearray()
        self._limit = limit

    @property
    def usage(self) -> Usage:
        return self._tap.usage if self._tap is not None else Usage()

    def feed(self, chunk: bytes) -> bytes:
        if self._tap is not None:
            self._tap.feed(chunk)
        if len(self._buf) + len(chunk) > self._limit:
            held, self._buf = bytes(self._buf) + chunk, bytearray()
            self._limit = -1  # give up rewriting: too large to hold
            return held
        self._buf += chunk
        return b""

    def close(self) -> bytes:
        if self._tap is not None:
            self._tap.close()
        raw, self._buf = bytes(self._buf), bytearray()
        if not raw or self._limit < 0:
            return raw
        try:
            return dumps(self._transform(json.loads(raw)))
        except (ValueError, TypeError, KeyError, AttributeError):
            return raw

    def error(self, error_type: str, message: str) -> bytes:
        # A cut JSON body cannot be completed honestly; send what arrived.
        if self._tap is not None:
            self._tap.close()
        raw, self._buf = bytes(self._buf), bytearray()
        return raw

    def ping(self) -> bytes:
        return b""


def set_model(model: str) -> Callable[[Any], Any]:
    """A transform setting ``model`` on a Message object (anything else is left alone)."""

    def transform(value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") == "message":
            value["model"] = model
        return value

    return transform


def rename_key(old: str, new: str) -> Callable[[Any], Any]:
    """``{"inputTokens": N}`` ↔ ``{"input_tokens": N}`` between Bedrock and Anthropic."""

    def transform(value: Any) -> Any:
        if isinstance(value, dict) and old in value and new not in value:
            value = {(new if k == old else k): v for k, v in value.items()}
        return value

    return transform
