"""Response adapters for translated (or model-rewritten) responses (PROTOCOLS.md §6.3, §6.4).

Each adapter turns upstream bytes into client bytes as they arrive, with no whole-response
buffering on streams, and reads usage from the events it already decodes. The response
``model`` is set to what the client asked for: Claude Code drops thinking blocks from the
next turn when it differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ._translate_errors import anthropic_error_type, bedrock_exception_type
from ._translate_request import dumps
from .usage import JSONUsageTap, SSEUsageTap, Usage
from .usage_bedrock import BedrockUsageTap, event_type, exception_info
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
    "EVENTSTREAM",
    "PING",
    "EventStreamModelRewrite",
    "EventStreamToSSE",
    "JSONTransform",
    "SSEModelRewrite",
    "SSEToEventStream",
    "rename_key",
    "set_model",
    "sse_error",
)

EVENTSTREAM = "application/vnd.amazon.eventstream"
SSE = "text/event-stream; charset=utf-8"
PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_METRICS = "amazon-bedrock-invocationMetrics"
# Largest prefix held back while looking for the first event / frame to rewrite.
_MAX_HEAD = 1 << 20


def sse_error(error_type: str, message: str) -> bytes:
    payload = {"type": "error", "error": {"type": error_type, "message": message}}
    return encode_event("error", dumps(payload))


def _with_model(data: bytes, model: str | None) -> bytes:
    """A ``message_start`` event JSON with ``message.model`` set (unchanged if already so)."""
    if model is None:
        return data
    event = json.loads(data)
    message = event.get("message")
    if not isinstance(message, dict) or message.get("model") == model:
        return data
    message["model"] = model
    return dumps(event)


class EventStreamToSSE:
    """Bedrock event stream → Anthropic SSE, with pings while Bedrock is silent."""

    __slots__ = ("_decoder", "_ended", "_model", "_tap", "content_type", "ping_interval")

    # Content deltas, ~all of a stream, are re-framed as they are: the type is read off their
    # first bytes, their JSON is never parsed, and a run of them takes one join. Other events
    # go through _event.
    _DELTA_HEAD = b'{"type":"content_block_delta",'
    _DELTA_EVENT = b"event: content_block_delta\ndata: "
    _DELTA_SEP = b"\n\n" + _DELTA_EVENT

    def __init__(self, *, model: str | None, ping_interval: float | None) -> None:
        self.content_type: str | None = SSE
        self.ping_interval = ping_interval
        self._model = model
        self._decoder = EventStreamDecoder()
        self._tap = BedrockUsageTap()
        self._ended = False

    @property
    def usage(self) -> Usage:
        return self._tap.usage

    def feed(self, chunk: bytes) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        run: list[bytes] = []  # consecutive content deltas
        try:
            for message in self._decoder.feed_chunks(chunk):
                if isinstance(message, bytes):  # a chunk's inner event, CRCs checked
                    if message.startswith(self._DELTA_HEAD):
                        run.append(message)
                        continue
                    if run:
                        self._deltas(run, out)
                        run = []
                    out.append(self._event(message))
                    continue
                if run:
                    self._deltas(run, out)
                    run = []
                kind = message.message_type
                if kind == "event" and message.event_type == "chunk":
                    out.append(self._event(decode_bedrock_chunk(message)))
                elif kind in ("exception", "error"):
                    info = exception_info(message)
                    self._tap.error = info
                    self._tap.usage.upstream_error = anthropic_error_type(info["type"])
                    out.append(sse_error(anthropic_error_type(info["type"]), info["message"]))
                    self._ended = True
                    break
            if run:
                self._deltas(run, out)
        except (ProtocolError, ValueError, KeyError, TypeError) as exc:
            self._tap.usage.parse_error = f"{type(exc).__name__}: {exc}"
            # The client gets an error event, not the rest of the stream (metering outcome).
            self._tap.usage.upstream_error = "api_error"
            out.append(sse_error("api_error", "malformed event stream from the upstream"))
            self._ended = True
        return b"".join(out)

    def _deltas(self, run: list[bytes], out: list[bytes]) -> None:
        """Account and re-frame consecutive content deltas (encode_event's layout)."""
        data = self._DELTA_SEP.join(run)
        # A line break inside an event (never in compact JSON) needs encode_event's data lines.
        if b"\r" in data or data.count(b"\n") != 3 * (len(run) - 1):
            for event in run:
                self._tap.on_event("content_block_delta", event)
                out.append(encode_event("content_block_delta", event))
            return
        self._tap.on_deltas(run)
        out += (self._DELTA_EVENT, data, b"\n\n")

    def _event(self, data: bytes) -> bytes:
        name = event_type(data)
        if name == "message_start":
            data = _with_model(data, self._model)
        elif name == "message_stop" and _METRICS.encode() in data:
            event = json.loads(data)
            self._tap.on_event(name, data)  # billing numbers first, then strip them
            event.pop(_METRICS, None)
            return encode_event(name, dumps(event))
        self._tap.on_event(name, data)
        return encode_event(name, data)

    def close(self) -> bytes:
        self._tap.close()
        return b""

    def error(self, error_type: str, message: str) -> bytes:
        self._tap.close()
        if self._ended:
            return b""
        self._ended = True
        return sse_error(error_type, message)

    def ping(self) -> bytes:
        return PING


class SSEToEventStream:
    """Anthropic SSE → Bedrock event stream, for Bedrock-format clients (pings dropped)."""

    __slots__ = ("_decoder", "_ended", "_model", "_tap", "content_type", "ping_interval")

    def __init__(self, *, model: str | None) -> None:
        self.content_type: str | None = EVENTSTREAM
        self.ping_interval: float | None = None  # Bedrock has no way to say "ping"
        self._model = model
        self._decoder = SSEDecoder()
        self._tap = SSEUsageTap()
        self._ended = False

    @property
    def usage(self) -> Usage:
        return self._tap.usage

    def feed(self, chunk: bytes) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        try:
            for event in self._decoder.feed(chunk):
                name, data = event.event, event.data
                if name == "ping" or not data:
                    continue
                self._tap.on_event(name, data)
                if name == "error":
                    error = self._tap.error or {}
                    kind = str(error.get("type", "api_error"))
                    out.append(
                        encode_bedrock_exception(
                            bedrock_exception_type(kind), str(error.get("message", ""))
                        )
                    )
                    self._ended = True
                    break
                if name == "message_start":
                    data = _with_model(data, self._model)
                out.append(encode_bedrock_chunk(data))
        except (ProtocolError, ValueError, KeyError, TypeError) as exc:
            self._tap.usage.parse_error = f"{type(exc).__name__}: {exc}"
            # The client gets an exception frame, not the rest of the stream (metering outcome).
            self._tap.usage.upstream_error = "api_error"
            out.append(encode_bedrock_exception("internalServerException", "malformed stream"))
            self._ended = True
        return b"".join(out)

    def close(self) -> bytes:
        self._tap.close()
        return b""

    def error(self, error_type: str, message: str) -> bytes:
        self._tap.close()
        if self._ended:
            return b""
        self._ended = True
        return encode_bedrock_exception(bedrock_exception_type(error_type), message)

    def ping(self) -> bytes:
        return b""


def _first_event_end(buf: bytearray) -> int:
    """Offset just past the blank line ending the first SSE event, or -1."""
    ends = [
        found + len(sep) for sep in (b"\n\n", b"\r\n\r\n", b"\r\r") if (found := buf.find(sep)) >= 0
    ]
    return min(ends) if ends else -1


class SSEModelRewrite:
    """Anthropic SSE passed through, except the first event's ``message.model``.

    Only the bytes up to the end of the first event are held and re-encoded; everything after
    is written as it arrives. The tap reads the upstream's original bytes.
    """

    __slots__ = ("_head", "_model", "_tap", "content_type", "ping_interval")

    def __init__(self, *, model: str, content_type: str) -> None:
        self.content_type: str | None = content_type
        self.ping_interval: float | None = None
        self._model = model
        self._tap = SSEUsageTap()
        self._head: bytearray | None = bytearray()

    @property
    def usage(self) -> Usage:
        return self._tap.usage

    def feed(self, chunk: bytes) -> bytes:
        self._tap.feed(chunk)
        head = self._head
        if head is None:
            return chunk
        head += chunk
        end = _first_event_end(head)
        if end < 0:
            if len(head) <= _MAX_HEAD:
                return b""
            self._head = None  # not an event stream we understand: stop holding bytes
            return bytes(head)
        first, rest = bytes(head[:end]), bytes(head[end:])
        self._head = None
        try:
            events = SSEDecoder().feed(first)
            if len(events) == 1 and events[0].event == "message_start":
                first = encode_event("message_start", _with_model(events[0].data, self._model))
        except (ProtocolError, ValueError, AttributeError):
            pass
        return first + rest

    def close(self) -> bytes:
        self._tap.close()
        head, self._head = self._head, None
        return bytes(head) if head else b""

    def error(self, error_type: str, message: str) -> bytes:
        held = self.close()
        if self._tap.pending:
            return held
        return held + sse_error(error_type, message)

    def ping(self) -> bytes:
        return b""


class EventStreamModelRewrite:
    """A Bedrock event stream passed through, except the first frame's ``message.model``."""

    __slots__ = ("_head", "_model", "_tap", "content_type", "ping_interval")

    def __init__(self, *, model: str) -> None:
        self.content_type: str | None = EVENTSTREAM
        self.ping_interval: float | None = None
        self._model = model
        self._tap = BedrockUsageTap()
        self._head: bytearray | None = bytearray()

    @property
    def usage(self) -> Usage:
        return self._tap.usage

    def feed(self, chunk: bytes) -> bytes:
        self._tap.feed(chunk)
        head = self._head
        if head is None:
            return chunk
        head += chunk
        if len(head) < 4:
            return b""
        size = int.from_bytes(head[:4], "big")
        if len(head) < size:
            if len(head) <= _MAX_HEAD:
                return b""
            self._head = None
            return bytes(head)
        first, rest = bytes(head[:size]), bytes(head[size:])
        self._head = None
        try:
            (message,) = EventStreamDecoder().feed(first)
            inner = decode_bedrock_chunk(message)
            if event_type(inner) == "message_start":
                first = encode_bedrock_chunk(_with_model(inner, self._model))
        except (ProtocolError, ValueError):
            pass
        return first + rest

    def close(self) -> bytes:
        self._tap.close()
        head, self._head = self._head, None
        return bytes(head) if head else b""

    def error(self, error_type: str, message: str) -> bytes:
        held = self.close()
        if self._tap.pending:
            return held
        return held + encode_bedrock_exception(bedrock_exception_type(error_type), message)

    def ping(self) -> bytes:
        return b""


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
