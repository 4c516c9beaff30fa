"""Optional capture of request and response bodies, redacted and capped.

The response side is a tap: :class:`CapturingAdapter` wraps the relay's adapter and copies
what the client is sent into a bounded buffer after the adapter produced it. It never holds,
delays or changes the client's bytes, and stops copying once the cap is reached.

A Bedrock-format stream (``application/vnd.amazon.eventstream``, recognised by its first
frame decoding, CRCs and all, since a pass-through adapter does not know the content type)
is stored as the events it carries, one per line: its chunks hold the Anthropic events
base64-encoded, where redaction could not see a secret.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ..context import RequestContext
from ..translate import ResponseAdapter
from ..typedefs import JSON
from ..usage import Usage
from ..wire import EventStreamDecoder, ProtocolError, decode_bedrock_chunk
from .redact import Redactor

__all__ = ("CAPTURE", "BodyCapture", "CapturePolicy", "CapturingAdapter", "captured_body")

#: ``ctx.extras`` slot holding the response's :class:`BodyCapture`.
CAPTURE = "llmgw.audit.capture"

# Bytes kept past the cap so a secret straddling the cut is still whole when redacted.
_MARGIN = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class CapturePolicy:
    """Which requests get their bodies captured: all, or by model or identity."""

    all: bool = False
    #: ``fnmatch`` patterns matched against the requested model and the route's model.
    models: tuple[str, ...] = ()
    #: Key ids, users or teams.
    identities: tuple[str, ...] = ()
    max_bytes: int = 65536

    def applies(self, ctx: RequestContext) -> bool:
        if self.all:
            return True
        ident = ctx.identity
        if ident is not None and self.identities:
            names = {ident.key_id, ident.user, ident.team}
            if any(n in names for n in self.identities):
                return True
        models = [m for m in (ctx.requested_model, ctx.route.model if ctx.route else None) if m]
        return any(fnmatch.fnmatchcase(m, p) for m in models for p in self.models)

    def wrap(self, ctx: RequestContext, adapter: ResponseAdapter) -> ResponseAdapter:
        """The relay's hook (``RequestContext.capture``): tap the response if the policy applies."""
        if not self.applies(ctx):
            return adapter
        capture = BodyCapture(self.max_bytes)
        ctx.extras[CAPTURE] = capture
        return CapturingAdapter(adapter, capture)


class BodyCapture:
    """A bounded copy of a byte stream; remembers the full length."""

    __slots__ = ("_buf", "_keep", "limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._keep = limit + _MARGIN
        self._buf = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._keep - len(self._buf)
        if room > 0:
            self._buf += chunk[:room]

    def result(self, redactor: Redactor) -> JSON:
        raw = bytes(self._buf)
        events = eventstream_text(raw)
        return captured_body(
            raw if events is None else events, redactor, limit=self.limit, total=self.total
        )


def eventstream_text(raw: bytes) -> bytes | None:
    """A Bedrock event stream as readable lines (each chunk's Anthropic event JSON, other
    messages as ``<type>:<name>: <payload>``), or ``None`` when ``raw`` does not start with
    a whole, valid frame. A frame cut by the capture cap is left out (the record says
    ``truncated``); bytes that stop decoding end the text with a marker."""
    decoder = EventStreamDecoder()
    lines: list[bytes] = []
    try:
        messages = decoder.feed(raw)
    except ProtocolError:
        return None
    if not messages:
        return None
    for msg in messages:
        if msg.message_type == "event" and msg.event_type == "chunk":
            try:
                lines.append(decode_bedrock_chunk(msg))
            except ProtocolError:
                lines.append(b"[unreadable chunk]")
        else:
            name = msg.exception_type or msg.event_type or ""
            lines.append(f"{msg.message_type}:{name}: ".encode() + msg.payload)
    try:
        decoder.feed(b"")
    except ProtocolError:
        lines.append(b"[unreadable frame]")
    return b"\n".join(lines)


def captured_body(raw: bytes, redactor: Redactor, *, limit: int, total: int | None = None) -> JSON:
    """The stored shape: redacted text (redacted before the cut), size, truncation flag."""
    size = len(raw) if total is None else total
    text = redactor.text(raw[: limit + _MARGIN].decode("utf-8", "replace"))
    truncated = size > limit or len(text) > limit
    return {"text": text[:limit], "bytes": size, "truncated": truncated}


class CapturingAdapter:
    """Delegates to the wrapped adapter and copies its output into a capture."""

    __slots__ = ("_capture", "_inner", "content_type", "ping_interval")

    def __init__(self, inner: ResponseAdapter, capture: BodyCapture) -> None:
        self._inner = inner
        self._capture = capture
        # Fixed when the adapter is built, before the relay reads them.
        self.content_type = inner.content_type
        self.ping_interval = inner.ping_interval

    @property
    def usage(self) -> Usage:
        return self._inner.usage

    def _tap(self, out: bytes) -> bytes:
        if out:
            self._capture.feed(out)
        return out

    def feed(self, chunk: bytes) -> bytes:
        return self._tap(self._inner.feed(chunk))

    def close(self) -> bytes:
        return self._tap(self._inner.close())

    def error(self, error_type: str, message: str) -> bytes:
        return self._tap(self._inner.error(error_type, message))

    def ping(self) -> bytes:
        return self._tap(self._inner.ping())
