"""Response adapters for translated responses (PROTOCOLS.md §6.3, §6.4).

Each adapter turns upstream bytes into client bytes as they arrive, with no whole-response
buffering on streams, and reads usage from the events it already decodes. The response
``model`` is set to what the client asked for: Claude Code drops thinking blocks from the
next turn when it differs.
"""

from __future__ import annotations

import json

from ._translate_errors import anthropic_error_type, bedrock_exception_type
from ._translate_request import dumps
from .usage import Usage
from .usage_bedrock import BedrockUsageTap, event_type, exception_info
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
    "EVENTSTREAM",
    "PING",
    "EventStreamToSSE",
    "SSEToEventStream",
    "sse_error",
    "with_model",
)

EVENTSTREAM = "application/vnd.amazon.eventstream"
SSE = "text/event-stream; charset=utf-8"
PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_METRICS = "amazon-bedrock-invocationMetrics"


def sse_error(error_type: str, message: str) -> bytes:
    payload = {"type": "error", "error": {"type": error_type, "message": message}}
    return encode_event("error", dumps(payload))


def with_model(data: bytes, model: str | None) -> bytes:
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
            data = with_model(data, self._model)
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
                    data = with_model(data, self._model)
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
