"""What goes upstream and what comes back, per (client format, provider format) pair.

Same format on both sides is the fast path: the client's body bytes go upstream as they
are (rewritten only when the route maps the model to another id), and the upstream's
bytes come back untouched while a tap reads usage on the side. When the route maps the
model, only the first event (or the JSON body) is rewritten so the response ``model`` is
the one the client asked for.

Across formats the body is converted (:mod:`._translate_request`), the response is
re-framed by an adapter (:mod:`._translate_stream`) and errors are put in the client's
envelope (:mod:`._translate_errors`).
"""

from __future__ import annotations

import json
from typing import Protocol

from multidict import CIMultiDict, MultiMapping

from ._translate_errors import convert_error
from ._translate_request import encode_request, neutral_request
from ._translate_rewrite import (
    EventStreamModelRewrite,
    JSONTransform,
    SSEModelRewrite,
    rename_key,
    set_model,
)
from ._translate_stream import EVENTSTREAM, EventStreamToSSE, SSEToEventStream
from .betas import BetaPolicy
from .context import RequestContext, parsed_body
from .providers.base import UpstreamCall
from .routes import Deployment
from .typedefs import ApiFormat, Operation
from .usage import JSONUsageTap, Usage, UsageTap
from .usage_bedrock import BedrockUsageTap
from .usage_bedrock_json import BedrockJSONUsageTap
from .usage_sse import SSEUsageTap
from .wire.eventstream import encode_bedrock_exception
from .wire.sse import encode_event

__all__ = (
    "PassThrough",
    "ResponseAdapter",
    "build_call",
    "response_adapter",
    "translate_error",
)


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


class _NoTap:
    """What a pass-through without a tap reads chunks with: nothing."""

    __slots__ = ()

    def feed(self, chunk: bytes) -> None:
        return None


_NO_TAP = _NoTap()


class PassThrough:
    """Same format both ways: every chunk goes out unchanged; the tap only reads."""

    __slots__ = ("_eventstream", "_sse", "_tap", "content_type", "ping_interval")

    def __init__(self, tap: UsageTap | None, *, sse: bool, eventstream: bool = False) -> None:
        self._tap = tap
        self._sse = sse
        self._eventstream = eventstream
        self.content_type: str | None = None
        self.ping_interval: float | None = None

    @property
    def usage(self) -> Usage:
        return self._tap.usage if self._tap is not None else Usage()

    def feed(self, chunk: bytes) -> bytes:
        if self._tap is not None:
            self._tap.feed(chunk)
        return chunk

    @property
    def tap(self) -> UsageTap | _NoTap:
        """What reads each chunk: the relay calls its ``feed`` once per chunk, after writing
        the chunk out (the tap itself, not a bound method: one object less per stream)."""
        return self._tap if self._tap is not None else _NO_TAP

    def close(self) -> bytes:
        if self._tap is not None:
            self._tap.close()
        return b""

    def error(self, error_type: str, message: str) -> bytes:
        """An in-band error (SSE ``error`` event or Bedrock exception frame), unless the
        stream was cut inside an event.

        Appending to half an event would corrupt it; a truncated stream is the honest
        signal then. Never a fabricated ``message_stop``.
        """
        if self._tap is not None:
            self._tap.close()
        tap = self._tap
        if self._eventstream:
            if isinstance(tap, BedrockUsageTap) and tap.pending:
                return b""
            return encode_bedrock_exception("internalServerException", message)
        if not self._sse or (isinstance(tap, SSEUsageTap) and tap.pending):
            return b""
        payload = {"type": "error", "error": {"type": error_type, "message": message}}
        return encode_event("error", json.dumps(payload, separators=(",", ":")))

    def ping(self) -> bytes:
        return b""


def build_call(
    ctx: RequestContext, deployment: Deployment, headers: CIMultiDict[str], query: str
) -> UpstreamCall:
    """The upstream call for ``deployment``, in its provider's format.

    Across formats the provider's ``beta_policy`` (a :class:`~llmgw.betas.BetaPolicy`
    attribute, when it has one) decides which betas and beta-gated fields travel; what it
    removed is recorded in ``ctx.extras["translate.dropped"]``.
    """
    assert ctx.operation is not None and ctx.requested_model is not None
    assert ctx.client_format is not None
    provider = deployment.provider.format
    model = deployment.model or ctx.requested_model
    body = ctx.raw_body or b""
    if provider is not ctx.client_format:
        neutral, betas = neutral_request(
            ctx.client_format, ctx.operation, parsed_body(ctx), headers
        )
        policy = getattr(deployment.provider, "beta_policy", None)
        if isinstance(policy, BetaPolicy):
            filtered = policy.apply(neutral, betas)
            neutral, betas = filtered.body, filtered.betas
            if filtered.dropped_betas or filtered.dropped_fields:
                ctx.extras["translate.dropped"] = {
                    "provider": deployment.provider.name,
                    "betas": list(filtered.dropped_betas),
                    "fields": list(filtered.dropped_fields),
                }
        body, headers = encode_request(
            provider=provider,
            operation=ctx.operation,
            stream=ctx.stream,
            model=model,
            neutral=neutral,
            betas=betas,
            headers=headers,
        )
        query = ""  # ?beta=true and friends mean nothing to another format
    elif model != ctx.requested_model and "model" in (parsed := parsed_body(ctx)):
        # Anthropic bodies, and Vertex count-tokens bodies, name the model.
        rewritten = dict(parsed)
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
    ctx: RequestContext,
    deployment: Deployment,
    content_type: str,
    *,
    headers: MultiMapping[str] | None = None,
    ping_interval: float | None = None,
) -> ResponseAdapter:
    """The adapter for a successful upstream response of ``content_type``.

    ``headers`` are the upstream's response headers (Bedrock reports token counts there);
    ``ping_interval`` paces the pings a translated stream gets while the upstream is silent.
    A pass-through tap fills ``ctx.usage`` itself rather than a Usage of its own.
    """
    client = ctx.client_format or ApiFormat.ANTHROPIC
    provider = deployment.provider.format
    requested = ctx.requested_model
    sse = content_type.startswith("text/event-stream")
    eventstream = content_type.startswith(EVENTSTREAM)
    counting = ctx.operation is Operation.COUNT_TOKENS
    translated = provider is not client
    mapped = requested is not None and (deployment.model or requested) != requested
    if counting:
        if translated and provider is ApiFormat.BEDROCK:
            return JSONTransform(rename_key("inputTokens", "input_tokens"), tap=None)
        if translated and client is ApiFormat.BEDROCK:
            return JSONTransform(rename_key("input_tokens", "inputTokens"), tap=None)
        return PassThrough(None, sse=False)  # free, and {"input_tokens": N} is not usage
    if eventstream:
        if client is ApiFormat.BEDROCK:
            if mapped and requested is not None:
                return EventStreamModelRewrite(model=requested)
            return PassThrough(BedrockUsageTap(ctx.usage), sse=False, eventstream=True)
        return EventStreamToSSE(model=requested, ping_interval=ping_interval)
    if sse:
        if client is ApiFormat.BEDROCK:
            return SSEToEventStream(model=requested)
        if (translated or mapped) and requested is not None:
            return SSEModelRewrite(model=requested, content_type=content_type)
        return PassThrough(SSEUsageTap(ctx.usage), sse=True)
    tap: JSONUsageTap = (
        BedrockJSONUsageTap(headers, usage=ctx.usage)
        if provider is ApiFormat.BEDROCK
        else JSONUsageTap(usage=ctx.usage)
    )
    if (translated or mapped) and requested is not None:
        return JSONTransform(set_model(requested), tap=tap)
    return PassThrough(tap, sse=False)


def translate_error(
    ctx: RequestContext,
    deployment: Deployment | None,
    status: int,
    headers: CIMultiDict[str],
    body: bytes,
) -> tuple[bytes, CIMultiDict[str]]:
    """An upstream error response in the client's envelope (unchanged for the same format)."""
    if deployment is None or ctx.client_format is None:
        return body, headers
    return convert_error(
        client=ctx.client_format,
        provider=deployment.provider.format,
        status=status,
        headers=headers,
        body=body,
    )
