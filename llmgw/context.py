"""The one mutable object a request carries through every middleware and the relay.

It is created lazily by :func:`get_context` on first use and mutated in place, so a value
set by an inner piece (the relay's usage, the router's choice) is seen by every outer
middleware on the way out. Nothing here ever calls ``request.clone()``.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import StreamReader, web

from . import _trim
from ._json import loads
from .errors import InvalidRequestError, RequestTooLargeError
from .keys import CONTEXT
from .typedefs import JSON, ApiFormat, Operation
from .usage import Outcome, Usage

if TYPE_CHECKING:
    from .routes import Deployment, Route
    from .routing.plan import AttemptPlan
    from .translate import ResponseAdapter

__all__ = (
    "Attempt",
    "Identity",
    "RequestContext",
    "Router",
    "get_body",
    "get_context",
    "parsed_body",
    "release_body",
    "routed",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who is calling, as resolved by authentication; ``key_id`` never holds a secret."""

    key_id: str
    user: str | None = None
    team: str | None = None
    project: str | None = None
    allowed_models: tuple[str, ...] | None = None
    expires_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class Attempt:
    """One try against one deployment (routing may make several before the first byte)."""

    deployment: str
    provider: str
    status: int | None = None
    error: str | None = None
    duration: float = 0.0


@dataclass(slots=True, kw_only=True)
class RequestContext:
    """Everything llmgw knows about one request; stored under :data:`~llmgw.keys.CONTEXT`."""

    request_id: str
    started_at: float
    started_mono: float
    client_format: ApiFormat | None = None
    operation: Operation | None = None
    stream: bool = False
    #: The parsed request body; released (``None``) once the relay has built the upstream
    #: call, as nothing else is built from it (:func:`parsed_body` parses ``raw_body``
    #: again when a failover does).
    body: JSON | None = None
    #: The request body as received. Released too once an upstream answered (no failover
    #: can need it then) unless ``capture`` is set: an open stream would otherwise hold the
    #: client's whole prompt (~100 KB for Claude Code, megabytes with images).
    raw_body: bytes | None = None
    #: Set by a middleware that reads the request and response bodies after the relay
    #: (audit body capture): it wraps the relay's response adapter, and ``raw_body`` is kept.
    capture: Callable[[RequestContext, ResponseAdapter], ResponseAdapter] | None = None
    requested_model: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    parent_agent_id: str | None = None
    identity: Identity | None = None
    #: Set by the routing middleware, which routes on first need (:func:`routed`) rather
    #: than keeping a coroutine of its own alive for as long as the stream lasts.
    router: Router | None = None
    route: Route | None = None
    #: Deployments to try in order; routing fills it, the relay walks it.
    candidates: list[Deployment] = field(default_factory=list)
    #: The relay's per-attempt hooks (backoff, in-flight slots, health feedback); routing
    #: sets it, the relay makes a plain one from the route when it is ``None``.
    routing: AttemptPlan | None = None
    deployment: Deployment | None = None
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    outcome: Outcome = Outcome.IN_FLIGHT
    status: int | None = None
    error: str | None = None
    ttfb: float | None = None
    bytes_out: int = 0
    finished_mono: float | None = None
    #: Cost of the closed usage record in integer micro-dollars, set by metering on its way
    #: out (``None``: metering did not run or the model has no known price).
    cost_micros: int | None = None
    _extras: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def extras(self) -> dict[str, Any]:
        """Free slots for middlewares that need to pass data to their own exit half;
        created on first use (most requests need none, and an open stream holds it)."""
        if self._extras is None:
            self._extras = {}
        return self._extras

    @property
    def upstream_model(self) -> str | None:
        """The model id the provider was asked for."""
        if self.deployment is None:
            return None
        return self.deployment.model or self.requested_model

    @property
    def provider(self) -> str | None:
        return self.deployment.provider.name if self.deployment is not None else None

    @property
    def duration(self) -> float:
        end = self.finished_mono if self.finished_mono is not None else time.monotonic()
        return end - self.started_mono


class _RequestIds:
    """``req_gw_`` + 12 random hex digits drawn once per process + a 12-digit counter.

    Unique across instances (the random part) and within one (the counter) without a
    ``urandom`` system call per request, which showed up in the relay's profile. A forked
    worker draws its own random part, so pre-forked processes never share ids.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = ""
        self._counter = itertools.count(1)
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self._prefix = "req_gw_" + os.urandom(6).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"


_next_request_id = _RequestIds()

#: Routes one request (see :func:`routed`).
Router = Callable[[web.Request, RequestContext], Awaitable[None]]


def get_context(request: web.Request) -> RequestContext:
    """The request's context, created on first use (any middleware may be outermost)."""
    try:  # not request.get(): the Mapping mixin's get() is a frame more, several per request
        return request[CONTEXT]
    except KeyError:
        pass
    headers = request.headers
    ctx = RequestContext(
        request_id=_next_request_id(),
        started_at=time.time(),
        started_mono=time.monotonic(),
        session_id=headers.get("x-claude-code-session-id"),
        agent_id=headers.get("x-claude-code-agent-id"),
        parent_agent_id=headers.get("x-claude-code-parent-agent-id"),
    )
    request[CONTEXT] = ctx
    return ctx


async def routed(request: web.Request) -> RequestContext:
    """The request's context with routing done: ``route``, ``candidates`` and ``routing``
    are set from here on when a routing middleware is installed and the request names a
    model it serves (an unserved one raises its 404 here). The relay routes this way; so
    does anything before it that needs the route (the limits middleware prices by it)."""
    ctx = get_context(request)
    router = ctx.router
    if router is not None:
        ctx.router = None  # once
        if not ctx.candidates:  # else chosen already, by a middleware inside routing
            await router(request, ctx)
    return ctx


def release_body(ctx: RequestContext) -> None:
    """Let go of the request body, bytes and parsed, once nothing can need it: after the
    upstream answered, or once the request is answered at all.

    An answered request is not gone: aiohttp keeps a keep-alive connection's last request,
    and with it this context, until the connection's next request arrives. A body left here
    would be held (~100 KB for Claude Code, megabytes with images) by every idle connection.
    Kept while ``capture`` is set: that middleware reads it on the way out, then releases it.
    """
    if ctx.capture is not None:
        return
    ctx.body = None
    if ctx.raw_body is not None:
        _trim.released(len(ctx.raw_body))
        ctx.raw_body = None


def parsed_body(ctx: RequestContext) -> JSON:
    """The parsed body of a request whose body :func:`get_body` has read; parsed again
    from ``raw_body`` after the relay released it."""
    if ctx.body is not None:
        return ctx.body
    if ctx.raw_body is None:
        return {}  # no body read (a GET, or a caller that never parsed one)
    body = loads(ctx.raw_body)
    assert isinstance(body, dict)
    ctx.body = body
    return body


async def _read_body(content: StreamReader, limit: int) -> bytes:
    """The whole body, read from the stream rather than through ``request.read()``, which
    would keep a copy on the request for as long as the handler runs (a whole stream)."""
    chunks = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if limit and size > limit:
            raise RequestTooLargeError(f"request body exceeds the gateway limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def get_body(request: web.Request) -> JSON:
    """Read and parse the JSON body once; every later caller gets the same dict.

    Malformed input never reaches an upstream: a body over the application's
    ``client_max_size`` is a 413, anything but a JSON object is a 400. The bytes are the
    context's (``ctx.raw_body``), not aiohttp's: ``request.read()`` after this returns
    nothing.
    """
    ctx = get_context(request)
    if ctx.body is not None or ctx.raw_body is not None:
        return parsed_body(ctx)
    limit = request.client_max_size
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLargeError(f"request body exceeds the gateway limit of {limit} bytes")
    if request.can_read_body:
        raw = await _read_body(request.content, limit)
    else:  # read already (by another middleware): aiohttp keeps that copy anyway
        raw = await request.read()
    if not raw:
        raise InvalidRequestError("request body is empty; expected a JSON object")
    try:
        body = loads(raw)
    except ValueError as exc:  # (UnicodeDecodeError and too deep a nesting included)
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    ctx.raw_body = raw
    ctx.body = body
    return body
