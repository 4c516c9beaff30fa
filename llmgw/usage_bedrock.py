"""Usage from Bedrock responses: event-stream frames, InvokeModel JSON and its headers.

The stream tap decodes a *view* of the frames (base64 ``bytes`` → the inner Anthropic event)
and feeds the same accounting as :class:`~llmgw.usage.SSEUsageTap`; the client's bytes are
never touched. Bedrock's own ``amazon-bedrock-invocationMetrics`` (on ``message_stop``) and
``X-Amzn-Bedrock-*-Token-Count`` headers are what AWS bills, so they win when present.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from multidict import MultiMapping

from ._translate_errors import anthropic_error_type
from .log import relay_logger
from .usage import JSONUsageTap, SSEUsageTap, Usage
from .wire import EventStreamDecoder, EventStreamMessage, ProtocolError, decode_bedrock_chunk

__all__ = (
    "BedrockJSONUsageTap",
    "BedrockUsageTap",
    "apply_bedrock_headers",
    "apply_invocation_metrics",
    "event_type",
    "exception_info",
)

METRICS_KEY = "amazon-bedrock-invocationMetrics"
_TYPE = re.compile(rb'\{\s*"type"\s*:\s*"([a-z_]+)"')
_METRICS = (
    ("inputTokenCount", "input_tokens"),
    ("outputTokenCount", "output_tokens"),
    ("cacheReadInputTokenCount", "cache_read_input_tokens"),
    ("cacheWriteInputTokenCount", "cache_creation_input_tokens"),
)
_HEADERS = (
    ("x-amzn-bedrock-input-token-count", "input_tokens"),
    ("x-amzn-bedrock-output-token-count", "output_tokens"),
    ("x-amzn-bedrock-cache-read-input-token-count", "cache_read_input_tokens"),
    ("x-amzn-bedrock-cache-write-input-token-count", "cache_creation_input_tokens"),
)


def event_type(data: bytes) -> str:
    """The ``type`` of an Anthropic event JSON, read from its first bytes when it leads."""
    match = _TYPE.match(data, 0, 64)
    if match is not None:
        return match.group(1).decode()
    value = json.loads(data).get("type")
    return value if isinstance(value, str) else ""


def apply_invocation_metrics(usage: Usage, metrics: Mapping[str, Any]) -> None:
    """Bedrock's billed counts replace what the inner events said."""
    reported = {
        ours: metrics[theirs] for theirs, ours in _METRICS if isinstance(metrics.get(theirs), int)
    }
    if reported:
        usage.update(reported)
        usage.final = True
        usage.estimated = False


def apply_bedrock_headers(usage: Usage, headers: MultiMapping[str]) -> None:
    """``X-Amzn-Bedrock-*-Token-Count`` headers of an InvokeModel response, when present."""
    reported: dict[str, int] = {}
    for header, ours in _HEADERS:
        value = headers.get(header)
        if value is not None and value.strip().isdigit():
            reported[ours] = int(value)
    if reported:
        usage.update(reported)
        usage.final = True


class BedrockUsageTap:
    """Usage from an InvokeModelWithResponseStream body (a view; never alters the bytes)."""

    __slots__ = ("_decoder", "_events", "_failed", "error", "usage")

    def __init__(self) -> None:
        self._events = SSEUsageTap()
        self.usage = self._events.usage
        self.error: dict[str, Any] | None = None
        self._decoder = EventStreamDecoder()
        self._failed = False

    @property
    def pending(self) -> bool:
        """True when the bytes seen so far end inside a frame."""
        return self._decoder.pending

    def feed(self, chunk: bytes) -> None:
        if self._failed:
            return
        try:
            for message in self._decoder.feed(chunk):
                self.on_message(message)
        except (ProtocolError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self._failed = True
            self.usage.parse_error = f"{type(exc).__name__}: {exc}"
            relay_logger.warning("bedrock usage tap stopped parsing: %s", self.usage.parse_error)

    def on_message(self, message: EventStreamMessage) -> None:
        """Account one decoded frame (also used by the Bedrock → SSE translator)."""
        kind = message.message_type
        if kind == "event" and message.event_type == "chunk":
            inner = decode_bedrock_chunk(message)
            self.on_event(event_type(inner), inner)
        elif kind in ("exception", "error"):
            self.error = exception_info(message)
            self.usage.upstream_error = anthropic_error_type(self.error["type"])

    def on_event(self, name: str, data: bytes) -> None:
        if name == "message_stop":
            metrics = json.loads(data).get(METRICS_KEY)
            if isinstance(metrics, dict):
                apply_invocation_metrics(self.usage, metrics)
            return
        self._events.on_event(name, data)

    def close(self) -> None:
        self._events.close()


def exception_info(message: EventStreamMessage) -> dict[str, Any]:
    """``{"type": exceptionType, "message": text}`` of an exception or error frame."""
    if message.message_type == "error":
        code = message.headers.get(":error-code")
        text = message.headers.get(":error-message")
        return {"type": str(code or "error"), "message": str(text or "")}
    text = ""
    try:
        payload = json.loads(message.payload or b"{}")
        if isinstance(payload, dict):
            text = str(payload.get("message") or payload.get("Message") or "")
    except ValueError:
        text = message.payload.decode("utf-8", "replace")
    return {"type": message.exception_type or "internalServerException", "message": text}


class BedrockJSONUsageTap(JSONUsageTap):
    """InvokeModel JSON usage, overridden by the token-count headers when Bedrock sent them."""

    __slots__ = ("_headers",)

    def __init__(self, headers: MultiMapping[str] | None, *, limit: int = 64 << 20) -> None:
        super().__init__(limit=limit)
        self._headers = headers

    def close(self) -> None:
        super().close()
        if self._headers is not None:
            apply_bedrock_headers(self.usage, self._headers)
