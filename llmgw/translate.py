"""What goes upstream and what comes back, per (client format, provider format) pair.

Same format on both sides is the fast path: the client's body bytes go upstream as they
are (rewritten only when the route maps the model to another id), and the upstream's
bytes come back untouched while a tap reads usage on the side.
"""

from __future__ import annotations

import json
from typing import Protocol

from multidict import CIMultiDict

from .context import RequestContext
from .errors import NotSupportedError
from .providers.base import UpstreamCall
from .routes import Deployment
from .typedefs import Operation
from .usage import JSONUsageTap, SSEUsageTap, Usage, UsageTap
from .wire.sse import encode_event

__all__ = ("PassThrough", "ResponseAdapter", "build_call", "response_adapter")


class ResponseAdapter(Protocol):
    """Turns upstream response bytes into client bytes and reads usage on the way."""

    #: Content type to send instead of the upstream's, or ``None`` to keep it.
    content_type: str | None
    #: Seconds of upstream silence after which :meth:`ping` is written; ``None``: never.
    ping_interval: float | None

    @property
    def usage(self) -> Usage: ...

    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...

    def error(self, error_type: str, message: str) -> bytes: ...

    def ping(self) -> bytes: ...


class PassThrough:
    """Same format both ways: every chunk goes out unchanged; the tap only reads."""

    __slots__ = ("_sse", "_tap", "content_type", "ping_interval")

    def __init__(self, tap: UsageTap | None, *, sse: bool) -> None:
        self._tap = tap
        self._sse = sse
        self.content_type: str | None = None
        self.ping_interval: float | None = None

    @property
    def usage(self) -> Usage:
        return self._tap.usage if self._tap is not None else Usage()

    def feed(self, chunk: bytes) -> bytes:
        if self._tap is not None:
            self._tap.feed(chunk)
        return chunk

    def close(self) -> bytes:
        if self._tap is not None:
            self._tap.close()
        return b""

    def error(self, error_type: str, message: str) -> bytes:
        """An in-band SSE ``error`` event, unless the stream was cut inside an event.

        Appending to half an event would corrupt it; a truncated stream is the honest
        signal then. Never a fabricated ``message_stop``.
        """
        if self._tap is not None:
            self._tap.close()
        if not self._sse or (isinstance(self._tap, SSEUsageTap) and self._tap.pending):
            return b""
        payload = {"type": "error", "error": {"type": error_type, "message": message}}
        return encode_event("error", json.dumps(payload, separators=(",", ":")))

    def ping(self) -> bytes:
        return b""


def build_call(
    ctx: RequestContext, deployment: Deployment, headers: CIMultiDict[str], query: str
) -> UpstreamCall:
    """The upstream call for ``deployment``, in its provider's format."""
    assert ctx.operation is not None and ctx.requested_model is not None
    provider = deployment.provider
    if provider.format is not ctx.client_format:
        raise NotSupportedError(
            f"translation from the {ctx.client_format} format to a {provider.format} "
            "provider is not available"
        )
    model = deployment.model or ctx.requested_model
    body = ctx.raw_body or b""
    if model != ctx.requested_model and ctx.body is not None:
        rewritten = dict(ctx.body)
        rewritten["model"] = model
        body = json.dumps(rewritten, separators=(",", ":"), ensure_ascii=False).encode()
    return UpstreamCall(
        operation=ctx.operation,
        stream=ctx.stream,
        model=model,
        body=body,
        headers=headers,
        query=query,
    )


def response_adapter(
    ctx: RequestContext, deployment: Deployment, content_type: str
) -> ResponseAdapter:
    """The adapter for a successful upstream response of ``content_type``."""
    sse = content_type.startswith("text/event-stream")
    tap: UsageTap | None
    if ctx.operation is Operation.COUNT_TOKENS:
        tap = None  # free, and its {"input_tokens": N} is not usage
    elif sse:
        tap = SSEUsageTap()
    else:
        tap = JSONUsageTap()
    return PassThrough(tap, sse=sse)
